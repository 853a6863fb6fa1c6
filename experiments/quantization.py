"""Experiment: which int8 quantization loses least against PyTorch, ONNX Runtime's options side by side.

For an exported bundle (`textcls export <checkpoint> --no-save --output DIR --eval-data DEV`), each
candidate is built from the bundle's fp32 graph, dropped into a copy of the bundle as its int8
variant, and run through the serving engine (the bundle's long-text rule, its token budget) on the
dev file: accuracy, its difference from PyTorch's (the manifest's reference, same texts), label
agreement and max |Δlogit| against fp32, and throughput, all in one run so the ratios compare.

Candidates (onnxruntime.quantization):
- ``dynamic`` : quantize_dynamic, per-channel int8 weights, every op type ORT quantizes (the
  export's variant until issue 14; this includes the word-embedding Gather);
- ``dynamic-per-tensor``: one scale per weight matrix;
- ``dynamic-matmul``: only MatMul (embeddings stay fp32);
- ``dynamic-matmul-no-head``: and the pooler/classifier stay fp32;
- ``dynamic-matmul-skip-K``: the K MatMuls whose quantization alone moves the logits most (measured
  one node at a time on sample texts) stay fp32;
- ``static-qdq``: quantize_static, QDQ, per-channel weights, activations calibrated (MinMax) on
  training texts.

    python -m experiments.quantization DIR --eval-data DEV --calibration-data TRAIN --out docs/reports/quantization-topic.json

The figures it gave, and why the served int8 variant stayed the per-channel dynamic one, are in
docs/real-data.md ("int8: ONNX Runtime's options side by side").
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.bundle import Bundle, Manifest, Variant, hash_files
from engine.engine import Engine
from engine.options import EngineOptions, open_engine
from train.data import load_labelled

HEAD_NAMES = ("pooler", "classifier")
# every candidate on the CPU with the engine's defaults otherwise, its plain softmax: the study
# compares graphs, not temperatures
CPU = EngineOptions(device="cpu")


def matmul_nodes(model_path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")]


def build(name: str, fp32: Path, target: Path, *, skip: list[str] | None = None,
          calibration: list[list[int]] | None = None, pad_id: int = 0) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = matmul_nodes(fp32)
    if name == "dynamic":
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True)
    elif name == "dynamic-per-tensor":
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=False)
    elif name == "dynamic-matmul":
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
    elif name == "dynamic-matmul-no-head":
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=[n for n in nodes if any(h in n for h in HEAD_NAMES)])
    elif name.startswith("dynamic-matmul-skip"):
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=list(skip or []))
    elif name == "static-qdq":
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.rows = iter(calibration or [])

            def get_next(self):
                row = next(self.rows, None)
                if row is None:
                    return None
                ids = np.asarray([row], dtype=np.int64)
                feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
                if "token_type_ids" in inputs:
                    feed["token_type_ids"] = np.zeros_like(ids)
                return feed

        import onnxruntime as ort
        inputs = [i.name for i in ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()]
        quantize_static(str(fp32), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, op_types_to_quantize=["MatMul"])
    else:
        raise ValueError(f"unknown candidate {name!r}")


def sensitivity(bundle_dir: Path, fp32_logits: np.ndarray, texts: list[str], work: Path) -> list[tuple[str, float]]:
    """Each MatMul quantized alone: mean squared change of the sample logits, largest first."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = bundle_dir / "model.onnx"
    nodes = [n for n in matmul_nodes(fp32) if not n.endswith("Gemm")]
    scores = []
    for node in nodes:
        target = work / "one.onnx"
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=[n for n in nodes if n != node])
        logits = candidate_engine(bundle_dir, target, work / "one-bundle").logits(texts)
        scores.append((node, float(np.mean((logits - fp32_logits) ** 2))))
    return sorted(scores, key=lambda s: -s[1])


def candidate_engine(bundle_dir: Path, model: Path, work: Path) -> Engine:
    """The bundle with `model` as its int8 variant, hashes renewed, as the engine serves it."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(bundle_dir, work, ignore=shutil.ignore_patterns("model_*.onnx", "*.png"))
    shutil.copy(model, work / "model_int8.onnx")
    manifest = Manifest.read(work)
    manifest.variants["int8"] = Variant(file="model_int8.onnx", device="cpu")
    manifest.files = hash_files(work)
    manifest.write(work)
    return open_engine(Bundle.load(work), CPU, variant="int8", allow_failed=True, calibrated=False)


def measure(engine: Engine, texts: list[str], truth: list[str],
            fp32_logits: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """The engine's figures on the dev texts, against fp32's logits (None: it is fp32), and its
    logits."""
    t0 = time.perf_counter()
    logits = np.concatenate([engine.logits(texts[i:i + 64]) for i in range(0, len(texts), 64)])
    seconds = time.perf_counter() - t0
    reference = logits if fp32_logits is None else fp32_logits
    predicted = [engine.labels[i] for i in logits.argmax(axis=1)]
    return {
        "accuracy": float(np.mean([p == t for p, t in zip(predicted, truth)])),
        "agreement_with_fp32": float(np.mean(logits.argmax(axis=1) == reference.argmax(axis=1))),
        "max_abs_logit_diff_vs_fp32": float(np.abs(logits - reference).max()),
        "texts_per_s": round(len(texts) / seconds, 1),
    }, logits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="an exported bundle directory (textcls export --output)")
    parser.add_argument("--eval-data", required=True, help="labelled dev file")
    parser.add_argument("--calibration-data", help="training file: texts for static calibration")
    parser.add_argument("--candidates", default="dynamic,dynamic-per-tensor,dynamic-matmul,"
                        "dynamic-matmul-no-head,dynamic-matmul-skip-4,static-qdq")
    parser.add_argument("--samples", type=int, default=64, help="texts for the sensitivity ranking")
    parser.add_argument("--out", type=Path, help="JSON report")
    args = parser.parse_args(argv)

    bundle = Bundle.load(args.bundle)
    dev = load_labelled(args.eval_data)
    fp32_engine = open_engine(bundle, CPU, variant="fp32", allow_failed=True, calibrated=False)
    fp32_row, fp32_logits = measure(fp32_engine, dev.texts, dev.labels)
    pytorch = bundle.manifest.pytorch.accuracy if bundle.manifest.pytorch else None
    report = {"bundle": str(args.bundle), "eval": args.eval_data, "n": len(dev),
              "pytorch_accuracy": pytorch, "fp32": fp32_row, "candidates": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        skip: list[str] = []
        names = [c.strip() for c in args.candidates.split(",") if c.strip()]
        for name in names:
            if name.startswith("dynamic-matmul-skip"):
                k = int(name.rsplit("-", 1)[1])
                if not skip:
                    ranked = sensitivity(args.bundle, fp32_logits[: args.samples],
                                         dev.texts[: args.samples], work)
                    report["sensitivity"] = ranked[:10]
                    skip = [n for n, _ in ranked]
                build(name, args.bundle / "model.onnx", work / f"{name}.onnx", skip=skip[:k])
            elif name == "static-qdq":
                if not args.calibration_data:
                    print("static-qdq: no --calibration-data, skipped")
                    continue
                texts = load_labelled(args.calibration_data).texts[:256]
                rows = fp32_engine.read(fp32_engine.tokenizer.encode_batch(texts))[0]
                build(name, args.bundle / "model.onnx", work / f"{name}.onnx", calibration=rows)
            else:
                build(name, args.bundle / "model.onnx", work / f"{name}.onnx")
            engine = candidate_engine(args.bundle, work / f"{name}.onnx", work / f"bundle-{name}")
            row, _ = measure(engine, dev.texts, dev.labels, fp32_logits)
            if pytorch is not None:
                row["drop_points_vs_pytorch"] = round(100 * (pytorch - row["accuracy"]), 2)
            row["size_mb"] = round((work / f"{name}.onnx").stat().st_size / 1e6, 1)
            report["candidates"][name] = row
            print(f"{name:28s} acc {row['accuracy']:.4f} drop {row.get('drop_points_vs_pytorch')} "
                  f"agree {row['agreement_with_fp32']:.4f} max|dl| {row['max_abs_logit_diff_vs_fp32']:.3f} "
                  f"{row['texts_per_s']} texts/s {row['size_mb']} MB", flush=True)
    print(f"fp32 acc {report['fp32']['accuracy']:.4f} {report['fp32']['texts_per_s']} texts/s; "
          f"PyTorch {pytorch}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
