"""Checkpoint -> model bundle: ONNX variants, parity against PyTorch, manifest, BentoML store.

Variants (names as in manifest.json):
- ``fp32``: the Optimum export, dynamic batch and sequence axes; the reference for the others.
- ``int8``: dynamic int8 quantization (per-channel) of the *unfused* fp32 graph.
- ``optimized``: the ORT transformer-optimized fp32 graph (fused attention, layer norms).
- ``fp16``: the same fusions in fp16, for the CUDA execution provider.
- ``explain``: fp32 with the attention probabilities of every layer as a second output, for
  explanations (`export/explain_export.py`); never served for predictions.

Each variant is run through the serving engine (so tokenizer drift is caught too) and compared
with PyTorch on sample texts; with evaluation data, its accuracy is compared with PyTorch's, text
by text (`compare_accuracy`). Every variant gets a verdict in the manifest: ``passed``,
``failed`` (with its figures and the reason) or ``unchecked`` (the check could not run here; never
recorded as passed). A failed variant is never served, but it does not sink the bundle: the
bundle is stored serving the CPU variant that `export/variant_choice.py` picks among those that
passed (int8, then optimized, then fp32, unless another is measured clearly faster), and the
export is refused only when no servable (CPU) variant passed, or under ``strict``.

The manifest is an ``engine.bundle.Manifest``, written with ``Manifest.write`` twice: before the
checks (they open the bundle through the engine) and with their figures after them.

With evaluation data, the softmax temperature of the served CPU variant is then fitted on it
(`export/calibration.py`, Guo et al. 2017) and recorded in the manifest's ``calibration``, which
the engine applies; ``calibration.png`` in the bundle shows the reliability before and after.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from core.errors import BoundError, UserError
from core.system import available_cores
from engine.bundle import FAILED, FORMAT_VERSION, PASSED, TOKENIZER, UNCHECKED, Bundle, Calibration, EvalInfo, \
    Manifest, PytorchFigures, Source, Variant, hash_files, override_long_texts
from engine.engine import CPU, Engine, reading_temperatures
from engine.long_texts import RULES, LongTextRule
from export.calibration import MIN_POOLED
from export.variant_choice import PREFERENCE, ROUNDS, choose_cpu_variant, time_interleaved
from train.data import check_known_labels, load_labelled
from train.report import EVAL_BATCH_SIZE

log = logging.getLogger(__name__)

ALL_VARIANTS = ("fp32", "int8", "optimized", "fp16", "explain")
# The variants the service may run on CPU, in the order preferred; a bundle needs one of them to
# pass to be stored.
CPU_CANDIDATES = PREFERENCE


@dataclass(frozen=True)
class Bound:
    max_abs_logit_diff: float  # against PyTorch on the sample texts
    min_label_agreement: float


# fp32 must match PyTorch to float noise. Fusions reorder float sums: a little more. fp16 keeps
# ~3 significant digits. int8 moves logits by tenths; what matters there is the label, and the
# accuracy bound below.
BOUNDS = {
    "fp32": Bound(1e-3, 1.0),
    "optimized": Bound(1e-2, 1.0),
    "fp16": Bound(0.1, 0.98),
    "int8": Bound(2.0, 0.95),
    "explain": Bound(1e-3, 1.0),  # the fp32 model with extra outputs: float noise only
}


class ExportConfig(BaseModel):
    checkpoint: Path = Field(description="fine-tuned HF checkpoint directory")
    task: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", description="name of the bundle in the store")
    output: Path | None = Field(None, description="bundle directory; default bundles/<task>")
    eval_data: str | None = Field(None, description="file to measure each variant's accuracy on")
    text_column: str = "text"
    label_column: str = "label"
    max_length: int | None = Field(None, ge=8, description="default: the length the model was trained with")
    long_texts: Literal[RULES] | None = Field(
        None, description="what the served model reads of a text over max_length tokens; default: "
        "the rule the checkpoint was trained with (engine/long_texts.py)")
    max_windows: int | None = Field(None, ge=1, description="chunk: windows per text at most; "
                                    "default: the training run's")
    variants: list[str] = Field(default_factory=lambda: list(ALL_VARIANTS))
    samples: int = Field(64, ge=4, description="sample texts for the parity check")
    max_accuracy_drop: float = Field(0.5, ge=0, description="points of accuracy a variant may lose "
                                     "against PyTorch before the paired test below is consulted")
    significance: float = Field(0.05, gt=0, lt=1, description="a variant that loses more than "
                                "max_accuracy_drop fails only when the exact one-sided McNemar test "
                                "on the texts where it and PyTorch disagree gives p below this")
    strict: bool = Field(False, description="refuse the whole bundle (store nothing) when any "
                         "variant fails, instead of storing it without the failed variants")
    calibrate: bool = Field(True, description="with eval_data: fit the softmax temperature of the "
                            "served CPU variant on it (export/calibration.py); the engine applies it")
    calibration_data: list[str] = Field(default_factory=list, description="labelled files to fit "
                                        "the temperatures on, together; default: eval_data")
    save: bool = Field(True, description="save the bundle into the BentoML model store")


def export(config: ExportConfig, progress=None) -> dict:
    """Build, check and store a bundle; returns the manifest as written (``Manifest.to_dict()``,
    the JSON object of manifest.json).

    Raises BoundError (with that object) when no servable variant passed, or when any variant
    failed under ``config.strict``; the bundle directory is then kept for inspection and nothing
    is stored."""
    step = progress or (lambda msg: log.info(msg))
    ckpt = config.checkpoint
    hf_config = _read_checkpoint(ckpt)
    labels = [hf_config["id2label"][str(i)] for i in range(len(hf_config["id2label"]))]
    train_info = _read_json(ckpt / "textcls_train.json") or {}
    max_length = config.max_length or train_info.get("config", {}).get("max_length") or 128
    rule = export_long_texts(ckpt, config)
    unknown = sorted(set(config.variants) - set(ALL_VARIANTS))
    if unknown:
        raise UserError(f"unknown variant(s) {unknown}; choose from {list(ALL_VARIANTS)}.")
    variants = ["fp32"] + [v for v in ALL_VARIANTS if v in config.variants and v != "fp32"]

    eval_data = None
    if config.eval_data:
        eval_data = load_labelled(config.eval_data, text_column=config.text_column,
                                  label_column=config.label_column, split="test")
        check_known_labels(eval_data, labels)
    calibration_sets = []
    if config.calibrate:
        for path in config.calibration_data:
            data = load_labelled(path, text_column=config.text_column, label_column=config.label_column,
                                 split="test")
            check_known_labels(data, labels)
            calibration_sets.append(data)
        if not calibration_sets and eval_data is not None:
            calibration_sets = [eval_data]
        if calibration_sets and sum(len(d) for d in calibration_sets) < 2:
            raise UserError(f"{', '.join(d.source for d in calibration_sets)}: fitting the calibration "
                            "temperature needs at least 2 labelled texts (or pass --no-calibrate).")
    samples = _sample_texts(config.task, eval_data, config.samples, max_length)

    out = Path(config.output or Path("bundles") / config.task)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    step(f"exporting {ckpt} to ONNX with Optimum")
    timings = {}
    t0 = time.perf_counter()
    _optimum_export(ckpt, out)
    timings["onnx_export_seconds"] = round(time.perf_counter() - t0, 1)
    files = {"fp32": "model.onnx", "int8": "model_int8.onnx",
             "optimized": "model_optimized.onnx", "fp16": "model_fp16.onnx",
             "explain": "model_explain.onnx"}
    built = {}
    t0 = time.perf_counter()
    for v in variants[1:]:
        step(f"building the {v} variant")
        t1 = time.perf_counter()
        try:
            if v == "explain":
                built[v] = _build_explain(ckpt, out / files["fp32"], out / files[v], samples, max_length)
                timings["explain_seconds"] = round(time.perf_counter() - t1, 1)
            else:
                _build_variant(v, out / files["fp32"], out / files[v])
        except Exception as exc:  # one variant that cannot be built must not sink the others
            log.warning("the %s variant could not be built", v, exc_info=True)
            (out / files[v]).unlink(missing_ok=True)
            built[v] = {"build_failure": f"could not be built ({type(exc).__name__}: {str(exc)[:300]})"}
    timings["variants_seconds"] = round(time.perf_counter() - t0, 1)

    manifest = Manifest(
        format_version=FORMAT_VERSION,
        task=config.task,
        labels=labels,
        max_length=int(max_length),
        pad_token_id=_pad_token_id(out, hf_config),
        long_texts=rule,
        model_type=hf_config.get("model_type"),
        source=Source(checkpoint=str(ckpt.resolve()), sha256=_hash_dir(ckpt),
                      base_model=train_info.get("base_model")),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        variants={v: Variant(file=files[v], device="gpu" if v == "fp16" else "cpu", **built.get(v, {}))
                  for v in variants},
        # chosen after the checks below, from the variants that passed them
        cpu_variant=None,
        gpu_variant=None,
        versions=_versions(),
        # what the checks below ran on: the engine refuses a file that differs (engine/bundle.py)
        files=hash_files(out),
    )
    manifest.write(out)

    step(f"checking {len(variants)} variants against PyTorch on {len(samples)} sample texts"
         + (f" and {len(eval_data)} labelled texts" if eval_data is not None else ""))
    t0 = time.perf_counter()
    reference = _pytorch_reference(ckpt, samples, eval_data, max_length, rule)
    manifest.pytorch = PytorchFigures(accuracy=reference.accuracy)
    if eval_data is not None:
        manifest.eval = EvalInfo(source=eval_data.source, n=len(eval_data))
    bundle = Bundle.load(out)
    for v in variants:
        figures = _check_variant(bundle, v, samples, reference, eval_data, config)
        manifest.variants[v] = Variant.model_validate({**manifest.variants[v].to_dict(), **figures})
    passed = [v for v in CPU_CANDIDATES if v in variants and manifest.variants[v].verdict == PASSED]
    if passed:
        step(f"timing {', '.join(passed)} in {ROUNDS} interleaved rounds to choose the CPU variant")
    choice = _choose_cpu_variant(bundle, passed, samples)
    for v, median in choice.median_seq_per_s.items():
        manifest.variants[v].throughput_seq_per_s = median
    timings["checks_seconds"] = round(time.perf_counter() - t0, 1)
    manifest.cpu_choice = choice
    manifest.cpu_variant = choice.variant
    fp16 = manifest.variants.get("fp16")
    manifest.gpu_variant = "fp16" if fp16 is not None and fp16.verdict != FAILED else None
    if manifest.cpu_variant is not None:  # else refused below: nothing to calibrate
        t0 = time.perf_counter()
        manifest.calibration = Calibration.model_validate(
            _calibration(bundle, manifest.cpu_variant, calibration_sets, config, out, step))
        timings["calibration_seconds"] = round(time.perf_counter() - t0, 1)
    manifest.timings = timings
    manifest.write(out)

    failures = failed_variants(manifest)
    kept = f"the bundle stays in {out} for inspection and nothing was saved to the store"
    if manifest.cpu_variant is None:
        raise BoundError(f"export refused: no servable variant ({', '.join(CPU_CANDIDATES)}) passed; "
                         f"{kept}:\n  " + "\n  ".join(failures), manifest.to_dict())
    if failures and config.strict:
        raise BoundError(f"export refused (--strict): {kept}:\n  " + "\n  ".join(failures),
                         manifest.to_dict())
    if config.save:
        step(f"saving bundle {config.task!r} into the BentoML model store")
        manifest.store_tag = save_to_store(out, manifest)
        manifest.write(out)
    return manifest.to_dict()


def save_to_store(bundle_dir: Path, manifest: Manifest) -> str:
    import bentoml

    metadata = {
        "labels": manifest.labels,
        "cpu_variant": manifest.cpu_variant,
        "gpu_variant": manifest.gpu_variant,
        "verdicts": {name: v.verdict for name, v in manifest.variants.items()},
        "source_sha256": manifest.source.sha256 if manifest.source is not None else None,
        "max_length": manifest.max_length,
    }
    metadata = {k: v for k, v in metadata.items() if v is not None}  # BentoML stores no None
    with bentoml.models.create(manifest.task, labels={"task": manifest.task},
                               metadata=metadata) as model:
        for item in bundle_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, Path(model.path) / item.name)
    return str(model.tag)


# --- checkpoint and files ------------------------------------------------------------------

def _read_checkpoint(ckpt: Path) -> dict:
    if not ckpt.is_dir():
        raise UserError(f"checkpoint {ckpt} does not exist or is not a directory.")
    config = _read_json(ckpt / "config.json")
    if config is None:
        raise UserError(f"{ckpt} has no config.json: it is not a Hugging Face checkpoint.")
    if not config.get("id2label"):
        raise UserError(f"{ckpt}/config.json has no id2label; train it with `textcls train`.")
    if not any((ckpt / f).exists() for f in ("tokenizer.json", "vocab.txt", "vocab.json")):
        raise UserError(f"{ckpt} has no tokenizer files; save the tokenizer with the model.")
    return config


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _hash_dir(path: Path) -> str:
    """sha256 over the checkpoint's model files (names and bytes), reports excluded."""
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(("report/", "trainer-work/")):
            continue
        digest.update(rel.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def _pad_token_id(out: Path, hf_config: dict) -> int:
    """From the tokenizer the engine will use, so padding matches what the model was trained with."""
    from tokenizers import Tokenizer

    tok_config = _read_json(out / "tokenizer_config.json") or {}
    pad = tok_config.get("pad_token")
    if isinstance(pad, dict):
        pad = pad.get("content")
    if pad is not None:
        pad_id = Tokenizer.from_file(str(out / TOKENIZER)).token_to_id(pad)
        if pad_id is not None:
            return int(pad_id)
    if hf_config.get("pad_token_id") is not None:
        return int(hf_config["pad_token_id"])
    raise UserError("the tokenizer has no padding token; set one before exporting.")


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


# --- building -------------------------------------------------------------------------------

def _optimum_export(ckpt: Path, out: Path) -> None:
    from optimum.exporters.onnx import main_export

    # Optimum's own validation compares on random inputs; ours (below) runs on real texts.
    main_export(str(ckpt), output=str(out), task="text-classification", do_validation=False)
    if not (out / TOKENIZER).is_file():
        raise UserError(f"{ckpt} has no fast tokenizer (tokenizer.json could not be written).")


def _build_explain(ckpt: Path, fp32: Path, target: Path, samples: list[str], max_length: int) -> dict:
    import onnx

    from export.explain_export import build_explain_variant

    inputs = [i.name for i in onnx.load(str(fp32), load_external_data=False).graph.input]
    figures = build_explain_variant(ckpt, target, input_names=inputs, texts=samples, max_length=max_length)
    failure = figures.pop("failure", None)
    return {"attention_parity": figures, **({"build_failure": failure} if failure else {})}


def _build_variant(variant: str, fp32: Path, target: Path) -> None:
    if variant == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # The unfused graph: quantizing the fused one fails (architecture.md).
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True)
        return
    from onnxruntime.transformers.optimizer import optimize_model

    # model_type "bert" covers the BERT family, RoBERTa included; heads and size are read from the
    # graph. For fp16 on a machine without a GPU the optimizer logs an ERROR that it cannot run
    # ORT's own GPU pass; the Python fusions still apply, so that message is muted, not lost work.
    optimizer_log = logging.getLogger("onnxruntime.transformers.optimizer")
    level = optimizer_log.level
    optimizer_log.setLevel(logging.CRITICAL)
    try:
        optimized = optimize_model(str(fp32), model_type="bert", num_heads=0, hidden_size=0,
                                   use_gpu=variant == "fp16")
    finally:
        optimizer_log.setLevel(level)
    if variant == "fp16":
        optimized.convert_float_to_float16(keep_io_types=True)
    optimized.save_model_to_file(str(target))


# --- checking -------------------------------------------------------------------------------

GENERIC_SAMPLES = [
    "The film was a delight from start to finish.",
    "I want my two hours back.",
    "Stocks fell sharply after the central bank raised interest rates.",
    "The home side won the final in extra time.",
    "A new chip promises faster phones and longer battery life.",
    "Leaders met in Geneva to discuss the ceasefire.",
    "ok",
    "Not bad at all, though the ending drags.",
]


def _sample_texts(task: str, eval_data, n: int, max_length: int) -> list[str]:
    """Texts from the evaluation file, else the task's demo dev set; plus one over-long text
    so truncation is compared too."""
    if eval_data is not None:
        pool = eval_data.texts
    else:
        from train.demo_data import demo_path

        path = demo_path(task, "dev") if task in ("sentiment", "topic") else None
        pool = load_labelled(path).texts if path and path.is_file() else list(GENERIC_SAMPLES)
    rng = np.random.default_rng(0)
    picked = [pool[i] for i in rng.permutation(len(pool))[: n - 1]]
    return picked + [" ".join(GENERIC_SAMPLES) * (max_length // 20 + 1)]


@dataclass
class Reference:
    """What PyTorch computes on the checkpoint: logits on the sample texts and, with evaluation
    data, the label of every text and the accuracy."""

    sample_logits: np.ndarray
    predicted: list[str] | None = None
    accuracy: float | None = None


def _pytorch_reference(ckpt: Path, samples, eval_data, max_length: int, rule: LongTextRule) -> Reference:
    import torch

    from train.finetune import torch_scorer

    torch.set_num_threads(available_cores())
    scorer, labels = torch_scorer(ckpt, max_length, rule, logits=True)

    def logits(texts):
        return np.concatenate([scorer(texts[i : i + 32]) for i in range(0, len(texts), 32)])

    reference = Reference(sample_logits=logits(samples))
    if eval_data is not None:
        reference.predicted = [labels[i] for i in logits(eval_data.texts).argmax(axis=1)]
        reference.accuracy = float(np.mean([p == t for p, t in zip(reference.predicted, eval_data.labels)]))
    return reference


def export_long_texts(ckpt: Path, config: ExportConfig) -> LongTextRule:
    """The long-text rule the bundle records: the training run's, or the one the export names."""
    from train.finetune import trained_long_texts

    return override_long_texts(trained_long_texts(ckpt), config.long_texts, config.max_windows)


def _check_variant(bundle, variant: str, samples: list[str], reference: Reference, eval_data,
                   config: ExportConfig) -> dict:
    bound = BOUNDS[variant]
    entry = {"bound": asdict(bound)}
    build_failure = bundle.manifest.variants[variant].build_failure
    if build_failure and not (bundle.path / bundle.manifest.variants[variant].file).is_file():
        entry.update(checked=False, verdict=FAILED, provider=None, failure=build_failure)
        return entry
    try:
        engine = Engine(bundle, variant=variant, device="cpu", allow_failed=True)
        logits = engine.logits(samples)
    except Exception as exc:  # e.g. an fp16 graph whose fused kernels exist only on CUDA
        entry.update(checked=False, verdict=UNCHECKED, provider=None,
                     reason=f"cannot run on this machine ({type(exc).__name__}: {str(exc)[:200]}); "
                            "it is checked at service start-up on a GPU")
        return entry
    ref_logits = reference.sample_logits
    diff = float(np.abs(logits - ref_logits).max())
    agreement = float(np.mean(logits.argmax(axis=1) == ref_logits.argmax(axis=1)))
    entry.update(
        checked=True,
        provider=CPU,
        parity={"samples": len(samples), "max_abs_logit_diff": diff, "label_agreement": agreement},
    )
    problems = []
    if diff > bound.max_abs_logit_diff:
        problems.append(f"max |Δlogit| {diff:.4g} > {bound.max_abs_logit_diff}")
    if agreement < bound.min_label_agreement:
        problems.append(f"label agreement {agreement:.3f} < {bound.min_label_agreement}")
    if build_failure:  # built, but its own check at build time failed (explain's attentions)
        problems.append(build_failure)
    if eval_data is not None:
        texts = eval_data.texts
        predicted = [p.label for i in range(0, len(texts), EVAL_BATCH_SIZE)
                     for p in engine.predict(texts[i : i + EVAL_BATCH_SIZE])]
        comparison = compare_accuracy(eval_data.labels, reference.predicted, predicted)
        entry["accuracy"] = comparison.accuracy
        entry["accuracy_check"] = comparison.summary(config.max_accuracy_drop, config.significance)
        if comparison.worse(config.max_accuracy_drop, config.significance):
            problems.append(
                f"accuracy {comparison.accuracy:.4f} is {comparison.drop_points:.2f} points below "
                f"PyTorch's {comparison.reference_accuracy:.4f} (bound {config.max_accuracy_drop}), and "
                f"the paired test says it is worse: {comparison.reference_only_right} texts only "
                f"PyTorch got right, {comparison.variant_only_right} only {variant}, exact McNemar "
                f"p = {comparison.p_value:.3g} < {config.significance}")
    if variant == "fp16":
        entry["note"] = ("checked on the CPU execution provider; CUDAExecutionProvider is "
                         "unchecked until the service starts on a GPU")
    entry["verdict"] = FAILED if problems else PASSED
    if problems:
        entry["failure"] = "; ".join(problems)
    return entry


CALIBRATION_PLOT = "calibration.png"


def _calibration(bundle: Bundle, variant: str, datasets: list, config: ExportConfig, out: Path, step) -> dict:
    """The manifest's calibration entry: the temperatures fitted on the calibration files (the
    evaluation file by default) for the served CPU variant, one for texts read in one window and
    one for texts read through several (export/calibration.py), with ECE and NLL before and after
    on those texts, overall and per file, the ECE a perfectly calibrated model would show there
    (``ece_floor``), and the reliability diagram in the bundle directory. Without calibration
    data (or with calibrate off): T = 1.

    calibration.png is written after the manifest's file hashes: it is a report, never read by the
    engine, so nothing verifies it."""
    from export.calibration import BINS, calibrate_by_reading, ece_floor, expected_calibration_error, nll, \
        reliability_diagram, softmax

    if not datasets or not config.calibrate:
        reason = "--no-calibrate" if not config.calibrate else "no --eval-data or --calibration-data: not calibrated"
        return {"temperature": 1.0, "window_temperature": 1.0, "fitted_on": None, "reason": reason}
    n = sum(len(d) for d in datasets)
    sources = [d.source for d in datasets]
    step(f"fitting the score temperatures of {variant} on {n} labelled texts of {', '.join(sources)} "
         f"(reliability diagram: {out / CALIBRATION_PLOT})")
    # uncalibrated, and in the accuracy check's batches (int8 logits shift with batch neighbours)
    engine = Engine(bundle, variant=variant, device="cpu", calibrated=False)
    index = {label: i for i, label in enumerate(bundle.labels)}
    logits, windows, label_ids, owner = [], [], [], []
    for k, data in enumerate(datasets):
        for i in range(0, len(data), EVAL_BATCH_SIZE):
            result = engine.run(data.texts[i : i + EVAL_BATCH_SIZE])
            logits.append(result.logits)
            windows += result.windows
        label_ids += [index[label] for label in data.labels]
        owner += [k] * len(data)
    logits, windows = np.concatenate(logits), np.asarray(windows)
    label_ids, owner = np.asarray(label_ids), np.asarray(owner)
    try:
        fit = calibrate_by_reading(logits, label_ids, windows, BINS, min_pooled=MIN_POOLED)
    except ValueError as exc:
        raise UserError(f"cannot calibrate the {variant} variant's scores on {', '.join(sources)}: "
                        f"{exc}. Pass --no-calibrate to export without it.") from exc
    entry: dict = {"variant": variant, "fitted_on": sources, "n": n, "n_windows": int((windows > 1).sum()),
                   "bins": BINS, "plot": CALIBRATION_PLOT}
    # a degenerate fit (T = 0.05 makes every score 1.0) is recorded, never applied
    pooled_at_bound = fit.pooled is not None and fit.pooled.at_bound
    one = 1.0 if fit.one.at_bound else fit.one.temperature
    pooled = one if fit.pooled is None or pooled_at_bound else fit.pooled.temperature
    if fit.one.at_bound:
        entry["fitted_temperature"] = fit.one.temperature
    if pooled_at_bound:
        entry["fitted_window_temperature"] = fit.pooled.temperature
    if fit.one.at_bound or pooled_at_bound:
        entry["note"] = ("a fitted temperature is at the bound of the search: the likelihood keeps "
                         "improving beyond it (e.g. every text of the file is right), so the fit says "
                         "little and is not applied (T = 1); calibrate on a larger or harder file")
    if fit.pooled is None and entry["n_windows"]:
        entry["window_note"] = (f"{entry['n_windows']} of {n} texts read through several windows: too few "
                                f"of one reading to fit it apart (each needs {MIN_POOLED} and 2), so one "
                                "temperature serves both")
    temperatures = reading_temperatures(windows, one, pooled)  # as the engine will
    before, after = softmax(logits), softmax(logits, temperatures)

    def figures(rows) -> dict:
        return {"ece_before": expected_calibration_error(before[rows], label_ids[rows], BINS),
                "ece_after": expected_calibration_error(after[rows], label_ids[rows], BINS),
                "ece_floor": ece_floor(after[rows], BINS)["mean"]}

    entry.update(temperature=one, window_temperature=pooled, **figures(slice(None)),
                 nll_before=nll(logits, label_ids), nll_after=nll(logits / temperatures[:, None], label_ids))
    if len(datasets) > 1:
        entry["files"] = {d.source: {"n": len(d), "n_windows": int((windows[owner == k] > 1).sum()),
                                     **figures(owner == k)} for k, d in enumerate(datasets)}
    name = f"T = {one:.3g}" + (f", {pooled:.3g} for texts read in windows" if pooled != one else "")
    reliability_diagram(before, after, label_ids, out / CALIBRATION_PLOT,
                        f"{bundle.task} ({variant}) on {', '.join(Path(s).name for s in sources)}",
                        bins=BINS, names=("uncalibrated (T = 1)", f"calibrated ({name})"))
    return entry


@dataclass(frozen=True)
class AccuracyComparison:
    """A variant's accuracy against PyTorch's on the same texts, with the paired test.

    Only the texts on which the two disagree about correctness carry evidence:
    ``reference_only_right`` (b) that PyTorch got right and the variant wrong,
    ``variant_only_right`` (c) the other way round. Were the variant no worse, each such text
    would be as likely to fall either way, so b ~ Binomial(b + c, 1/2); ``p_value`` is the exact
    one-sided McNemar test, P(X >= b). Losing 1 text of 160 (b = 1, c = 0) gives p = 0.5: no
    evidence at all; losing 5 of 5 gives p = 0.031.
    """

    n: int
    reference_accuracy: float
    accuracy: float
    reference_only_right: int
    variant_only_right: int
    p_value: float

    @property
    def drop_points(self) -> float:
        return round((self.reference_accuracy - self.accuracy) * 100, 9)

    def worse(self, max_drop_points: float, significance: float) -> bool:
        """Failed: more than max_drop_points lost *and* the loss is significant."""
        return (not within_accuracy_drop(self.reference_accuracy, self.accuracy, max_drop_points)
                and self.p_value < significance)

    def summary(self, max_drop_points: float, significance: float) -> dict:
        return {"n": self.n, "pytorch_accuracy": self.reference_accuracy,
                "drop_points": self.drop_points, "max_drop_points": max_drop_points,
                "pytorch_only_right": self.reference_only_right,
                "variant_only_right": self.variant_only_right,
                "mcnemar_p": self.p_value, "significance": significance,
                "worse": self.worse(max_drop_points, significance)}


def compare_accuracy(truth: list[str], reference: list[str], predicted: list[str]) -> AccuracyComparison:
    """Paired comparison of two predictors' labels for the same texts (see AccuracyComparison)."""
    from scipy.stats import binomtest

    if not (len(truth) == len(reference) == len(predicted)) or not truth:
        raise ValueError(f"need one label per text from each: {len(truth)} true, "
                         f"{len(reference)} reference, {len(predicted)} predicted")
    ref_right = [r == t for r, t in zip(reference, truth)]
    var_right = [p == t for p, t in zip(predicted, truth)]
    b = sum(r and not v for r, v in zip(ref_right, var_right))
    c = sum(v and not r for r, v in zip(ref_right, var_right))
    p = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
    n = len(truth)
    return AccuracyComparison(n=n, reference_accuracy=sum(ref_right) / n, accuracy=sum(var_right) / n,
                              reference_only_right=b, variant_only_right=c, p_value=float(p))


def within_accuracy_drop(reference: float, accuracy: float, max_drop_points: float) -> bool:
    """Whether accuracy is at most max_drop_points below reference. Rounded, because accuracies are
    counts over n: 0.915 - 0.910 is 0.5000000000000004 points in floats, and "at most 0.5" must
    let exactly 0.5 through."""
    return round((reference - accuracy) * 100, 9) <= max_drop_points


def _choose_cpu_variant(bundle: Bundle, passed: list[str], samples: list[str]):
    """The served CPU variant among ``passed`` (export/variant_choice.py), each timed on the sample
    texts through the serving engine, as the service will run it."""
    engines = {v: Engine(bundle, variant=v, device="cpu") for v in passed}
    for engine in engines.values():
        engine.run(samples)  # warm: the first call pays for ORT's allocations

    def time_once(variant: str) -> float:
        t0 = time.perf_counter()
        engines[variant].run(samples)
        return len(samples) / (time.perf_counter() - t0)

    # a lone candidate is timed too: its figure is the bundle's throughput in the printout
    return choose_cpu_variant(passed, time_interleaved(passed, time_once))


def failed_variants(manifest: Manifest | dict) -> list[str]:
    """'name: reason' for every variant whose verdict is failed; ``manifest`` typed or its JSON
    object (what BoundError carries and the CLI prints)."""
    variants = manifest.to_dict()["variants"] if isinstance(manifest, Manifest) else manifest["variants"]
    return [f"{name}: {v.get('failure', 'failed')}" for name, v in variants.items()
            if v.get("verdict") == FAILED]
