"""Checkpoint -> model bundle: ONNX variants, parity against PyTorch, manifest, BentoML store.

Variants (names as in manifest.json):
- ``fp32``: the Optimum export, dynamic batch and sequence axes; the reference for the others.
- ``int8``: dynamic int8 quantization (per-channel) of the *unfused* fp32 graph.
- ``optimized``: the ORT transformer-optimized fp32 graph (fused attention, layer norms).
- ``fp16``: the same fusions in fp16, for the CUDA execution provider.
- ``explain``: fp32 with the attention probabilities of every layer as a second output, for
  explanations (`export/explain_export.py`); never served for predictions.

Each variant is run through the serving engine (so tokenizer drift is caught too) and compared
with PyTorch on sample texts; with evaluation data, its accuracy is compared with PyTorch's.
A variant that misses its bound fails the export: nothing is saved to the store. A check that
could not run is recorded as unchecked, never as passed.
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

import numpy as np
from pydantic import BaseModel, Field

from service.bundle import FORMAT_VERSION, MANIFEST, TOKENIZER, Bundle
from service.engine import CPU, Engine, available_cores
from textcls.errors import BoundError, UserError
from train.data import check_known_labels, load_labelled
from train.report import EVAL_BATCH_SIZE

log = logging.getLogger(__name__)

ALL_VARIANTS = ("fp32", "int8", "optimized", "fp16", "explain")
CPU_CANDIDATES = ("int8", "optimized", "fp32")


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
    variants: list[str] = Field(default_factory=lambda: list(ALL_VARIANTS))
    samples: int = Field(64, ge=4, description="sample texts for the parity check")
    max_accuracy_drop: float = Field(0.5, ge=0, description="points of accuracy a variant may lose")
    save: bool = Field(True, description="save the bundle into the BentoML model store")


def export(config: ExportConfig, progress=None) -> dict:
    """Build, check and (when every check passes) store a bundle; returns the manifest."""
    step = progress or (lambda msg: log.info(msg))
    ckpt = config.checkpoint
    hf_config = _read_checkpoint(ckpt)
    labels = [hf_config["id2label"][str(i)] for i in range(len(hf_config["id2label"]))]
    train_info = _read_json(ckpt / "textcls_train.json") or {}
    max_length = config.max_length or train_info.get("config", {}).get("max_length") or 128
    unknown = sorted(set(config.variants) - set(ALL_VARIANTS))
    if unknown:
        raise UserError(f"unknown variant(s) {unknown}; choose from {list(ALL_VARIANTS)}.")
    variants = ["fp32"] + [v for v in ALL_VARIANTS if v in config.variants and v != "fp32"]

    eval_data = None
    if config.eval_data:
        eval_data = load_labelled(config.eval_data, text_column=config.text_column,
                                  label_column=config.label_column, split="test")
        check_known_labels(eval_data, labels)
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
        if v == "explain":
            built[v] = _build_explain(ckpt, out / files["fp32"], out / files[v], samples, max_length)
            timings["explain_seconds"] = round(time.perf_counter() - t1, 1)
        else:
            _build_variant(v, out / files["fp32"], out / files[v])
    timings["variants_seconds"] = round(time.perf_counter() - t0, 1)

    manifest = {
        "format_version": FORMAT_VERSION,
        "task": config.task,
        "labels": labels,
        "max_length": int(max_length),
        "pad_token_id": _pad_token_id(out, hf_config),
        "model_type": hf_config.get("model_type"),
        "source": {"checkpoint": str(ckpt.resolve()), "sha256": _hash_dir(ckpt),
                   "base_model": train_info.get("base_model")},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "variants": {v: {"file": files[v], "device": "gpu" if v == "fp16" else "cpu", **built.get(v, {})}
                     for v in variants},
        "cpu_variant": "fp32",
        "gpu_variant": "fp16" if "fp16" in variants else None,
        "versions": _versions(),
    }
    _write_manifest(out, manifest)

    step(f"checking {len(variants)} variants against PyTorch on {len(samples)} sample texts")
    t0 = time.perf_counter()
    ref_logits, ref_accuracy = _pytorch_reference(ckpt, samples, eval_data, max_length)
    manifest["pytorch"] = {"accuracy": ref_accuracy}
    if eval_data is not None:
        manifest["eval"] = {"source": eval_data.source, "n": len(eval_data)}
    failures = []
    bundle = Bundle.load(out)
    for v in variants:
        entry = manifest["variants"][v]
        entry.update(_check_variant(bundle, v, samples, ref_logits, eval_data, ref_accuracy,
                                    config.max_accuracy_drop))
        if entry["passed"] is False:
            failures.append(f"{v}: {entry['failure']}")
    timings["checks_seconds"] = round(time.perf_counter() - t0, 1)
    manifest["cpu_variant"] = _fastest_cpu_variant(manifest)
    manifest["timings"] = timings
    _write_manifest(out, manifest)

    if failures:
        raise BoundError(
            "export refused, the bundle stays in " + str(out) + " for inspection and nothing was "
            "saved to the store:\n  " + "\n  ".join(failures),
            manifest,
        )
    if config.save:
        step(f"saving bundle {config.task!r} into the BentoML model store")
        manifest["store_tag"] = save_to_store(out, manifest)
        _write_manifest(out, manifest)
    return manifest


def save_to_store(bundle_dir: Path, manifest: dict) -> str:
    import bentoml

    metadata = {
        "labels": manifest["labels"],
        "cpu_variant": manifest["cpu_variant"],
        "gpu_variant": manifest["gpu_variant"],
        "source_sha256": manifest["source"]["sha256"],
        "max_length": manifest["max_length"],
    }
    with bentoml.models.create(manifest["task"], labels={"task": manifest["task"]},
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


def _write_manifest(out: Path, manifest: dict) -> None:
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


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
    return {"attention_parity": figures}


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


def _pytorch_reference(ckpt: Path, samples, eval_data, max_length: int):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(available_cores())
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()

    def logits(texts):
        rows = []
        with torch.inference_mode():
            for i in range(0, len(texts), 32):
                enc = tokenizer(texts[i : i + 32], padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt")
                rows.append(model(**enc).logits.float().numpy())
        return np.concatenate(rows)

    accuracy = None
    if eval_data is not None:
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        predicted = [labels[i] for i in logits(eval_data.texts).argmax(axis=1)]
        accuracy = float(np.mean([p == t for p, t in zip(predicted, eval_data.labels)]))
    return logits(samples), accuracy


def _check_variant(bundle, variant, samples, ref_logits, eval_data, ref_accuracy, max_drop) -> dict:
    bound = BOUNDS[variant]
    entry = {"bound": asdict(bound)}
    try:
        engine = Engine(bundle, variant=variant, device="cpu")
        logits = engine.logits(samples)
    except Exception as exc:  # e.g. an fp16 graph whose fused kernels exist only on CUDA
        entry.update(checked=False, passed=None, provider=None,
                     reason=f"cannot run on this machine ({type(exc).__name__}: {str(exc)[:200]}); "
                            "it is checked at service start-up on a GPU")
        return entry
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
    if eval_data is not None:
        texts = eval_data.texts
        predicted = [p.label for i in range(0, len(texts), EVAL_BATCH_SIZE)
                     for p in engine.predict(texts[i : i + EVAL_BATCH_SIZE])]
        accuracy = float(np.mean([p == t for p, t in zip(predicted, eval_data.labels)]))
        entry["accuracy"] = accuracy
        if not within_accuracy_drop(ref_accuracy, accuracy, max_drop):
            problems.append(f"accuracy {accuracy:.4f} is more than {max_drop} points below "
                            f"PyTorch's {ref_accuracy:.4f}")
    if variant in CPU_CANDIDATES:
        entry["throughput_seq_per_s"] = _throughput(engine, samples)
    if variant == "fp16":
        entry["note"] = ("checked on the CPU execution provider; CUDAExecutionProvider is "
                         "unchecked until the service starts on a GPU")
    entry["passed"] = not problems
    if problems:
        entry["failure"] = "; ".join(problems)
    return entry


def within_accuracy_drop(reference: float, accuracy: float, max_drop_points: float) -> bool:
    """Whether accuracy is at most max_drop_points below reference. Rounded, because accuracies are
    counts over n: 0.915 - 0.910 is 0.5000000000000004 points in floats, and "at most 0.5" must
    let exactly 0.5 through."""
    return round((reference - accuracy) * 100, 9) <= max_drop_points


def _throughput(engine: Engine, samples: list[str]) -> float:
    engine.run(samples)  # warm
    t0 = time.perf_counter()
    engine.run(samples)
    return round(len(samples) / (time.perf_counter() - t0), 1)


def _fastest_cpu_variant(manifest: dict) -> str:
    """The CPU variant the service runs: the fastest one that passed its checks."""
    passed = [v for v in CPU_CANDIDATES
              if manifest["variants"].get(v, {}).get("passed") and "throughput_seq_per_s" in manifest["variants"][v]]
    if not passed:
        return "fp32"
    return max(passed, key=lambda v: manifest["variants"][v]["throughput_seq_per_s"])
