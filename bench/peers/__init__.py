"""Peer servers for the side-by-side HTTP benchmark: other ways a user would serve the same
text-classification model (the default topic model, AG News), each in its own process and its
own virtual environment, next to this project's own service (`textcls`).

The harness (bench/compare.py) drives them through `PEERS`:

    python = peer.ensure_env(envs)                  # venv under envs/<name>, built once
    cmd = peer.command(python, port, model, workdir)
    Popen(cmd, env={**os.environ, **peer.env(model)}, start_new_session=True)
    GET peer.ready_path -> 200;  POST peer.infer_path with peer.body(texts); peer.labels(response)

Settings every server shares, so that they use the machine alike:
- one server process bound to 127.0.0.1, inference on 2 threads (the machine's 2 cores):
  OMP_NUM_THREADS / MKL_NUM_THREADS = 2 for PyTorch and ONNX Runtime's defaults, and explicit
  intra-op thread counts where a server creates its own session (see each server's code);
- texts truncated to the bundle's max_length (128 tokens, manifest.json) where the framework lets
  the server say so (not in MLServer's Hugging Face runtime: see MLServerPeer);
- adaptive/dynamic batching of up to 64 texts where the framework has it (textcls's default
  TEXTCLS_MAX_BATCH_SIZE is 64 too).
`bench/peers/check.py` starts each one and checks its answers (`python -m bench.peers.check`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the checkout: bench/peers/ -> bench/ -> ROOT
TORCH = "torch==2.13.0"  # the CPU wheel in /opt/wheels; any other version pulls CUDA packages
AGNEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
MAX_BATCH_SIZE = 64  # texts per model call, as textcls's default TEXTCLS_MAX_BATCH_SIZE
THREADS = 2  # the machine's cores; every server's inference uses this many threads

# Environment for every peer: thread pools of PyTorch (OpenMP/MKL) and of ONNX Runtime's default
# session options sized to THREADS, no telemetry, unbuffered logs (so a failure's log tail is
# complete), and no hub look-ups (the model is local; there is no network).
COMMON_ENV = {
    "OMP_NUM_THREADS": str(THREADS),
    "MKL_NUM_THREADS": str(THREADS),
    "PYTHONUNBUFFERED": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "BENTOML_DO_NOT_TRACK": "True",
}


@dataclass(frozen=True)
class ModelFiles:
    checkpoint: Path  # PyTorch checkpoint dir
    bundle: Path  # ONNX bundle dir (model_int8.onnx, model.onnx, tokenizer.json, config.json, manifest.json)
    onnx_file: str = "model_int8.onnx"

    @classmethod
    def default(cls) -> "ModelFiles":
        """The default topic model: checkpoints/topic and the `topic` bundle in the BentoML store
        (found with the project's venv, which has bentoml)."""
        out = subprocess.run(
            [str(project_python()), "-c",
             "import bentoml; print(bentoml.models.get('topic').path)"],
            check=True, capture_output=True, text=True, env={**os.environ, **COMMON_ENV})
        return cls(checkpoint=ROOT / "checkpoints" / "topic", bundle=Path(out.stdout.strip()))

    @property
    def max_length(self) -> int:
        return int(json.loads((self.bundle / "manifest.json").read_text())["max_length"])


def project_python() -> Path:
    return ROOT / ".venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _installed_versions(python: Path, packages: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for p in {list(packages)!r}:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@dataclass(frozen=True)
class Peer:
    name: str
    title: str
    ready_path: str
    infer_path: str
    # packages whose versions `versions` reports
    packages: tuple[str, ...] = ()
    # interpreter the venv is made from (None: the one running this code, i.e. its base Python)
    base_python: str | None = None
    # also constrain the install with the project's constraints.txt (same versions as textcls
    # for every shared package)
    project_constraints: bool = False

    # ---- environment -------------------------------------------------------------------------
    @property
    def requirements(self) -> Path | None:
        path = HERE / self.name / "requirements.txt"
        return path if path.exists() else None

    def _constraints_text(self) -> str:
        text = TORCH + "\n"
        if self.project_constraints:
            text += (ROOT / "constraints.txt").read_text()
        return text

    def _env_hash(self, base: str) -> str:
        h = hashlib.sha256()
        for part in (base, self.requirements.read_text(), self._constraints_text()):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()

    def ensure_env(self, envs: Path, log: Callable[[str], object] = print) -> Path:
        """Create or refresh the venv envs/<name> and return its python. Idempotent: a marker
        file holds a hash of the base interpreter, requirements and constraints; when it matches,
        nothing is installed."""
        req = self.requirements
        assert req is not None, f"{self.name} has no requirements.txt"
        base = self.base_python or getattr(sys, "_base_executable", sys.executable)
        venv = Path(envs).resolve() / self.name
        python = venv / "bin" / "python"
        marker = venv / ".peer-env-hash"
        want = self._env_hash(base)
        if python.exists() and marker.exists() and marker.read_text().strip() == want:
            return python
        started = time.monotonic()
        log(f"[{self.name}] building venv {venv} from {base} ...")
        if venv.exists():
            shutil.rmtree(venv)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        constraints = venv / "constraints.txt"
        constraints.write_text(self._constraints_text())
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        if any(line.split("#")[0].strip().startswith("torch==")
               for line in req.read_text().splitlines()):
            # torch first and alone: the CPU wheel from /opt/wheels; later installs are
            # constrained to it so nothing replaces it with a CUDA build
            subprocess.run(pip + [TORCH], check=True)
        subprocess.run(pip + ["-r", str(req), "-c", str(constraints)], check=True)
        marker.write_text(want + "\n")
        log(f"[{self.name}] venv ready in {time.monotonic() - started:.0f} s")
        return python

    def versions(self, python: Path) -> dict[str, str]:
        return _installed_versions(python, self.packages)

    # ---- serving -----------------------------------------------------------------------------
    def command(self, python: Path, port: int, model: ModelFiles, workdir: Path) -> list[str]:
        raise NotImplementedError

    def env(self, model: ModelFiles) -> dict[str, str]:
        return dict(COMMON_ENV)

    def body(self, texts: list[str]) -> bytes:
        return json.dumps({"texts": texts}).encode()

    def labels(self, response: bytes) -> list[str]:
        return [item["label"] for item in json.loads(response)]

    @property
    def model_file(self) -> str:
        """What it serves, in words, for tables."""
        return ""


@dataclass(frozen=True)
class PyTorchPeer(Peer):
    """A server of the transformers pipeline on the PyTorch checkpoint (its server code reads
    the PEER_* variables)."""

    def env(self, model):
        return {**COMMON_ENV, "PEER_CHECKPOINT": str(model.checkpoint),
                "PEER_MAX_LENGTH": str(model.max_length), "PEER_THREADS": str(THREADS)}

    @property
    def model_file(self):
        return "PyTorch fp32 (model.safetensors)"


@dataclass(frozen=True)
class NaivePeer(PyTorchPeer):
    """FastAPI + uvicorn + transformers pipeline on PyTorch, one forward per request, plain `def`
    handler (FastAPI runs it in its thread pool): what a user writes first."""

    def command(self, python, port, model, workdir):
        # uvicorn's defaults otherwise: one process, access log on, no --workers
        return [str(python), "-m", "uvicorn", "server:app", "--app-dir", str(HERE / self.name),
                "--host", "127.0.0.1", "--port", str(port)]


@dataclass(frozen=True)
class BentoMLPipelinePeer(PyTorchPeer):
    """BentoML service with the transformers pipeline on PyTorch and BentoML's adaptive batcher."""

    def command(self, python, port, model, workdir):
        return [str(python), "-m", "bentoml", "serve", "service:PipelineClassifier",
                "--working-dir", str(HERE / self.name), "--host", "127.0.0.1", "--port", str(port)]


# MLServer's server settings (settings.json); its defaults otherwise: parallel_workers 1 (the
# model runs in one worker process, fed by the adaptive batcher in the main process), no debug.
# Non-default: bind 127.0.0.1; ports are set per run (HTTP = the benchmark's port; gRPC and
# metrics on free ports, since their defaults 8081/8082 may be taken).
MLSERVER_SETTINGS = {"host": "127.0.0.1"}


def mlserver_model_settings(files: Path) -> dict:
    """model-settings.json for the Hugging Face runtime on Optimum/ONNX Runtime."""
    return {
        "name": "topic",
        "implementation": "mlserver_huggingface.HuggingFaceRuntime",
        # Adaptive batching (off by default): up to 64 texts per model call, as textcls; wait at
        # most 20 ms (max_batch_time, seconds) for a batch to fill: small next to a batch's
        # compute time (hundreds of ms on 2 cores), so it adds little latency at low load, and
        # lets bursts of requests merge. The same window as pytriton's dynamic batcher.
        "max_batch_size": MAX_BATCH_SIZE,
        "max_batch_time": 0.02,
        "parameters": {
            "uri": str(files),
            "extra": {
                "task": "text-classification",
                # Optimum's ORTModelForSequenceClassification instead of PyTorch
                "optimum_model": True,
                "pretrained_model": str(files),
                "device": "cpu",
                # No thread settings: the runtime applies inter/intra_op_threads only to PyTorch
                # and TensorFlow pipelines, and ONNX Runtime's default session options use the
                # physical cores, 2 here (lscpu: 2 cores, 1 thread per core) = THREADS.
            },
        },
    }


@dataclass(frozen=True)
class MLServerPeer(Peer):
    """MLServer + mlserver-huggingface on Optimum (ORTModelForSequenceClassification) with
    MLServer's adaptive batching. The runtime loads `model.onnx` from a model folder, so the
    command generates one in workdir: model.onnx -> the bundle's ONNX file (int8 by default),
    plus config and tokenizer files (symlinks).

    Two properties of the runtime, kept as a user gets them (its settings cannot change them):
    - texts are not truncated to max_length (the pipeline truncates only when a call asks;
      AG News texts are far below the model's 512 positions);
    - the pipeline's batch_size is 1 for this model: the runtime sets batch_size=max_batch_size
      only when `tokenizer.pad_token_id` is truthy, and BERT's [PAD] is id 0, so it logs "Model
      has neither pad_token or eos_token, setting batch size to 1". The adaptive batcher still
      merges requests into one predict call, whose texts then run one forward each (unpadded)."""

    def command(self, python, port, model, workdir):
        root = Path(workdir).resolve() / "mlserver"
        if root.exists():
            shutil.rmtree(root)
        files = root / "topic" / "hf-model"
        files.mkdir(parents=True)
        (files / "model.onnx").symlink_to(model.bundle / model.onnx_file)
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                     "special_tokens_map.json"):
            if (model.bundle / name).exists():
                (files / name).symlink_to(model.bundle / name)
        (root / "topic" / "model-settings.json").write_text(json.dumps(
            mlserver_model_settings(files), indent=2))
        (root / "settings.json").write_text(json.dumps(dict(
            MLSERVER_SETTINGS, http_port=port, grpc_port=free_port(), metrics_port=free_port()),
            indent=2))
        return [str(python.parent / "mlserver"), "start", str(root)]

    def body(self, texts):
        # V2 inference protocol. The HF runtime calls pipeline(*args, **kwargs) with one kwarg
        # per input, except "args" (positional arguments: N texts would be N arguments) and
        # "array_inputs", whose N items become one list argument: pipeline([t1, ..., tN]). The
        # adaptive batcher concatenates these inputs across requests and splits the output.
        return json.dumps({"inputs": [{"name": "array_inputs", "shape": [len(texts)],
                                       "datatype": "BYTES", "data": texts}]}).encode()

    def labels(self, response):
        out = json.loads(response)["outputs"][0]
        # one JSON string per text: {"label": ..., "score": ...}
        return [json.loads(item)["label"] if isinstance(item, str) else item["label"]
                for item in out["data"]]

    @property
    def model_file(self):
        return "ONNX (bundle file, int8 by default) via Optimum"


@dataclass(frozen=True)
class PyTritonPeer(Peer):
    """Triton Inference Server via PyTriton, dynamic batcher, ONNX Runtime session in Python."""

    def command(self, python, port, model, workdir):
        return [str(python), str(HERE / self.name / "server.py"), "--http-port", str(port),
                "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
                "--bundle", str(model.bundle), "--onnx-file", model.onnx_file,
                "--max-length", str(model.max_length), "--threads", str(THREADS),
                "--max-batch-size", str(MAX_BATCH_SIZE),
                "--workspace", str(Path(workdir).resolve() / "pytriton")]

    def body(self, texts):
        return json.dumps({"inputs": [{"name": "text", "shape": [len(texts), 1],
                                       "datatype": "BYTES", "data": texts}]}).encode()

    def labels(self, response):
        outputs = {o["name"]: o for o in json.loads(response)["outputs"]}
        return list(outputs["label"]["data"])

    @property
    def model_file(self):
        return "ONNX (bundle file, int8 by default) via ONNX Runtime"


@dataclass(frozen=True)
class TextclsPeer(Peer):
    """This project's own service, from the project's venv."""

    def ensure_env(self, envs, log=print):
        return project_python()

    def command(self, python, port, model, workdir):
        return [str(python), "-m", "bentoml", "serve", "service.service:TextClassifier",
                "--working-dir", str(ROOT), "--host", "127.0.0.1", "--port", str(port)]

    def env(self, model):
        # the bundle directory is served as it is; TEXTCLS_THREADS = the cores (its default here,
        # explicit so every peer states the same)
        return {**COMMON_ENV, "TEXTCLS_TOPIC_MODEL": str(model.bundle),
                "TEXTCLS_THREADS": str(THREADS)}

    @property
    def model_file(self):
        return "ONNX int8 (the bundle's CPU variant)"


PEERS: dict[str, Peer] = {p.name: p for p in (
    NaivePeer(
        name="naive", title="FastAPI + transformers pipeline (PyTorch), one forward per request",
        ready_path="/healthz", infer_path="/topic",
        packages=("torch", "transformers", "tokenizers", "fastapi", "uvicorn", "starlette"),
        project_constraints=True),
    BentoMLPipelinePeer(
        name="bentoml_pipeline",
        title="BentoML + transformers pipeline (PyTorch), adaptive batching",
        ready_path="/readyz", infer_path="/topic",
        packages=("bentoml", "torch", "transformers", "tokenizers"),
        project_constraints=True),
    MLServerPeer(
        name="mlserver",
        title="MLServer + HF runtime (Optimum / ONNX Runtime), adaptive batching",
        ready_path="/v2/models/topic/ready", infer_path="/v2/models/topic/infer",
        packages=("mlserver", "mlserver-huggingface", "optimum", "transformers", "tokenizers",
                  "onnxruntime", "torch", "tensorflow", "numpy")),
    PyTritonPeer(
        name="pytriton",
        title="Triton via PyTriton (ONNX Runtime in Python), dynamic batcher",
        ready_path="/v2/models/topic/ready", infer_path="/v2/models/topic/infer",
        packages=("nvidia-pytriton", "onnxruntime", "tokenizers", "numpy"),
        # Debian's Python 3.11.2: under pyenv's 3.11.7 the Triton Python backend stub fails with
        # "'_thread.RLock' object has no attribute '_recursion_count'"
        base_python="/usr/bin/python3"),
    TextclsPeer(
        name="textcls", title="textcls (BentoML + ONNX Runtime int8, adaptive batching)",
        ready_path="/readyz", infer_path="/topic",
        packages=("bentoml", "onnxruntime", "tokenizers", "numpy")),
)}
