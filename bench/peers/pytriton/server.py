"""Triton Inference Server through PyTriton: the model is a Python callable that Triton's dynamic
batcher feeds; the callable tokenizes with `tokenizers` (the bundle's tokenizer.json), pads per
batch, runs an ONNX Runtime session of the bundle's ONNX file (model_int8.onnx by default),
softmaxes, and returns a label and a score per text.

Run with the venv made from Debian's /usr/bin/python3 (bench/peers/__init__.py:PyTritonPeer):
    python server.py --http-port 8000 --grpc-port 8001 --metrics-port 8002 --bundle DIR
Request: POST /v2/models/topic/infer
    {"inputs": [{"name": "text", "shape": [N, 1], "datatype": "BYTES", "data": [...]}]}
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from tokenizers import Tokenizer

log = logging.getLogger("pytriton-peer")


def make_infer(bundle: Path, onnx_file: str, max_length: int, threads: int):
    labels = json.loads((bundle / "manifest.json").read_text())["labels"]
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    # pad each batch to its longest text (not to max_length), truncate to the bundle's max_length
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    options = ort.SessionOptions()
    # Non-default: 2 intra-op threads (the machine's cores), 1 inter-op thread, all graph
    # optimizations: the same session options as textcls's engine.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(bundle / onnx_file), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    input_names = {i.name for i in session.get_inputs()}
    label_bytes = np.array([label.encode() for label in labels], dtype=object)

    @batch  # Triton's batch arrives as arrays stacked on the first axis: text is (N, 1) bytes
    def infer(text: np.ndarray):
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in text[:, 0]]
        encodings = tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (logits,) = session.run(None, {k: v for k, v in feeds.items() if k in input_names})
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return {"label": label_bytes[best].reshape(-1, 1),
                "score": probs[np.arange(len(best)), best].astype(np.float32).reshape(-1, 1)}

    return infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--onnx-file", default="model_int8.onnx")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=64)
    # 20 ms: the same batching window as MLServer's max_batch_time (bench/peers/__init__.py)
    parser.add_argument("--max-queue-delay-us", type=int, default=20_000)
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    if args.workspace is not None and args.workspace.exists():
        shutil.rmtree(args.workspace)  # PyTriton wants a fresh workspace (sockets, model store)
    infer = make_infer(args.bundle, args.onnx_file, args.max_length, args.threads)
    config = TritonConfig(
        # Non-default: bind loopback only; HTTP on the benchmark's port, gRPC and metrics on
        # free ports (their defaults 8001/8002 may be taken).
        http_address="127.0.0.1", http_port=args.http_port,
        grpc_address="127.0.0.1", grpc_port=args.grpc_port,
        metrics_address="127.0.0.1", metrics_port=args.metrics_port,
        # Non-default: no GPU metrics (no GPU here; saves the DCGM/NVML start-up errors).
        allow_gpu_metrics=False,
    )
    with Triton(config=config, workspace=args.workspace) as triton:
        triton.bind(
            model_name="topic",
            infer_func=infer,
            inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="label", dtype=bytes, shape=(1,)),
                     Tensor(name="score", dtype=np.float32, shape=(1,))],
            # Non-default: batches of up to 64 texts (PyTriton's default max_batch_size is 4), as
            # textcls; the dynamic batcher waits up to 20 ms (default 0) for a batch to fill.
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)),
            strict=True,  # check the callable's outputs against the declared tensors
        )
        log.info("serving %s on 127.0.0.1:%d", args.bundle / args.onnx_file, args.http_port)
        triton.serve()


if __name__ == "__main__":
    main()
