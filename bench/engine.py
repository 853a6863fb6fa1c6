"""The engine alone, in process: sequences/s by batching rule, its FLOP rate, and the machine's peak.

    python -m bench.engine                     # default topic model (int8), AG News + IMDB
    python -m bench.engine --budgets 512,2048 --seconds 5 --json docs/reports/engine.json

For each load (AG News dev texts: one short text each; IMDB dev reviews: mixed lengths, most cut
to the model's 128 tokens) it runs the same texts through the same ONNX Runtime session:
- `batch 1`: one text per call (what an unbatched server does);
- `fixed 8`: batches of 64 texts, length-sorted, 8 texts per call (the engine before issue 13);
- `tokens B`: batches of 64 texts, length-sorted, cut under a budget of B padded tokens per call
  (engine.engine.token_batches, what the engine does now).
A batch of 64 is what the service's batcher forms at 128 clients (`max_batch_size`).

FLOPs per token are counted from the model's config (multiply-adds x 2 of the encoder's matrix
products: 4 H^2 + 2 H I per layer for the projections and the feed-forward, 2 S H per layer for
attention at sequence length S; embeddings, softmax, layer norms and GELU left out). The achieved
rate counts the tokens the model was fed, padding included (the hardware's rate), and the tokens
of the texts (the useful rate). The peak is measured, not looked up: the same ONNX Runtime build,
the same threads, one large matrix product of the variant's precision (MatMulInteger u8 x s8 for
int8, MatMul for fp32), N x N x N with N = --peak-n, best of 5.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.serving import AGNEWS_DEV, ROOT, csv_texts
from core.system import available_cores
from engine.engine import Engine, token_batches
from engine.options import EngineOptions, open_engine

IMDB_DEV = ROOT.parent / "shared" / "data" / "sentiment" / "imdb_dev.csv"
BATCH = 64


def load_texts(path: Path, limit: int) -> list[str] | None:
    if not path.is_file():
        return None
    return [t for t in csv_texts(path) if t.strip()][:limit]


def flops_per_token(config: dict, seq: int) -> float:
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return 2.0 * layers * (4 * h * h + 2 * h * i + 2 * seq * h)


def prepare(engine: Engine, texts: list[str], rule: str) -> tuple[list, list, np.ndarray]:
    """The ONNX Runtime calls the rule makes of these texts (the model inputs the engine's
    long-text rule makes of them): index lists and their feeds."""
    rows = engine.read(engine.tokenizer.encode_batch(texts))[0]
    lengths = np.array([len(r) for r in rows])
    size = 1 if rule == "batch 1" else BATCH
    calls: list[np.ndarray] = []
    for start in range(0, len(rows), size):
        idx = np.arange(start, min(start + size, len(rows)))
        order = idx[np.argsort(lengths[idx], kind="stable")]
        if rule == "batch 1":
            calls.append(order)
        elif rule == "fixed 8":
            calls += [order[k:k + 8] for k in range(0, len(order), 8)]
        else:
            calls += [order[s] for s in token_batches(lengths[order], int(rule.split()[1]))]
    feeds = [engine.feed([rows[i] for i in call], int(lengths[call].max())) for call in calls]
    return calls, feeds, lengths


def run_rules(engine: Engine, texts: list[str], rules: list[str], seconds: float,
              config: dict, rounds: int) -> list[dict]:
    """Every rule once per round, rounds interleaved so drift on a shared machine hits all rules
    alike; the median round of each rule is reported."""
    prepared = {rule: prepare(engine, texts, rule) for rule in rules}
    rates: dict[str, list[float]] = {rule: [] for rule in rules}
    for _ in range(rounds):
        for rule, (calls, feeds, lengths) in prepared.items():
            engine.session.run(None, feeds[0])
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds / rounds:
                for feed in feeds:
                    engine.session.run(None, feed)
                done += len(texts)
            rates[rule].append(done / (time.perf_counter() - started))
    rows = []
    for rule, (calls, feeds, lengths) in prepared.items():
        seq_per_s = float(np.median(rates[rule]))
        passes_per_s = seq_per_s / len(texts)
        fed = sum(f["input_ids"].size for f in feeds)
        real = int(lengths.sum())
        hw = sum(f["input_ids"].size * flops_per_token(config, f["input_ids"].shape[1]) for f in feeds)
        useful = sum(int(lengths[c].sum()) * flops_per_token(config, f["input_ids"].shape[1])
                     for c, f in zip(calls, feeds))
        rows.append({
            "rule": rule,
            "calls_per_pass": len(calls),
            "seq_per_s": round(seq_per_s, 1),
            "ms_per_seq": round(1000 / seq_per_s, 3),
            "padding_share": round(1 - real / fed, 3),
            "gflops_fed": round(hw * passes_per_s / 1e9, 1),
            "gflops_useful": round(useful * passes_per_s / 1e9, 1),
        })
    return rows


def peak_gflops(precision: str, n: int, threads: int) -> float:
    """The best rate of one N^3 matrix product in ONNX Runtime at the variant's precision."""
    import onnx
    from onnx import TensorProto, helper

    if precision == "int8":
        a_type, op = TensorProto.UINT8, "MatMulInteger"
        a = np.random.randint(0, 255, (n, n), dtype=np.uint8)
        b = np.random.randint(-127, 127, (n, n), dtype=np.int8)
        out_type = TensorProto.INT32
    else:
        a_type = out_type = TensorProto.FLOAT
        op = "MatMul"
        a = np.random.rand(n, n).astype(np.float32)
        b = np.random.rand(n, n).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["C"])], "peak",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("C", out_type, [n, n])],
        initializer=[onnx.numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    session.run(None, {"A": a})
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        session.run(None, {"A": a})
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="topic", help="store tag or bundle directory")
    parser.add_argument("--variant", default=None, help="default: the bundle's CPU variant")
    parser.add_argument("--budgets", default="256,512,1024,2048,4096,8192",
                        help="token budgets per ONNX Runtime call to try")
    parser.add_argument("--texts", type=int, default=512, help="texts per load")
    parser.add_argument("--seconds", type=float, default=6.0, help="time per rule, all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per rule")
    parser.add_argument("--peak-n", type=int, default=2048)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    engine = open_engine(args.model, EngineOptions(device="cpu"), variant=args.variant)
    bundle = engine.bundle
    config = json.loads((bundle.path / "config.json").read_text())
    loads = {"AG News (one short text each)": load_texts(AGNEWS_DEV, args.texts),
             "IMDB (mixed lengths)": load_texts(IMDB_DEV, args.texts)}
    if not any(loads.values()):
        sys.exit(f"no texts: {AGNEWS_DEV} and {IMDB_DEV} are absent (../shared/data)")
    rules = ["batch 1", "fixed 8"] + [f"tokens {b}" for b in args.budgets.split(",")]
    precision = "int8" if "int8" in engine.variant else "fp32"
    report = {
        "model": str(bundle.path), "variant": engine.variant, "threads": engine.threads,
        "cpu": platform.processor() or platform.machine(), "cores": available_cores(),
        "onnxruntime": ort.__version__,
        "flops_per_token_at_64": flops_per_token(config, 64),
        "peak_gflops": {p: round(peak_gflops(p, args.peak_n, engine.threads), 1)
                        for p in ("int8", "fp32")},
        "precision": precision, "loads": {},
    }
    for name, texts in loads.items():
        if not texts:
            print(f"skipping {name}: its file is absent")
            continue
        lengths = [len(r) for r in engine.read(engine.tokenizer.encode_batch(texts))[0]]
        rows = run_rules(engine, texts, rules, args.seconds, config, args.rounds)
        report["loads"][name] = {"texts": len(texts), "mean_tokens": round(float(np.mean(lengths)), 1),
                                 "rows": rows}
    peak = report["peak_gflops"][precision]
    print(f"{engine.variant} on {report['threads']} threads; FLOPs/token at 64 tokens "
          f"{report['flops_per_token_at_64'] / 1e6:.1f} M; measured peak {peak} GFLOP/s "
          f"({precision}), fp32 {report['peak_gflops']['fp32']}")
    for name, load in report["loads"].items():
        print(f"\n{name}: {load['texts']} texts, {load['mean_tokens']} tokens on average")
        print("| rule | calls | seq/s | padding | GFLOP/s fed | useful | % of peak |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in load["rows"]:
            print(f"| {r['rule']} | {r['calls_per_pass']} | {r['seq_per_s']} | "
                  f"{r['padding_share']:.0%} | {r['gflops_fed']} | {r['gflops_useful']} | "
                  f"{r['gflops_fed'] / peak:.0%} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
