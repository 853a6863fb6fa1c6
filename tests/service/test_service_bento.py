"""The serving path and the batch scoring path stay free of torch, and `bentoml build` packs a
Bento offline with both models, only the serving and scoring code and only their dependencies;
`textcls score --task` inside the Bento scores with the model packed into it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from engine.bundle import Bundle

ROOT = Path(__file__).resolve().parents[2]
BENTOML = Path(sys.executable).with_name("bentoml")
TRAINING_ONLY = ("torch", "transformers", "optimum", "datasets", "accelerate")

SERVING_PATH = """
import sys
import service.service as s
from engine.options import EngineOptions, open_engine
s.TextClassifier.to_asgi()  # what a bentoml worker builds
engine = open_engine(sys.argv[1], EngineOptions(device="cpu"))
engine.warmup()
assert len(engine.predict(["a great film", "dull"])) == 2
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {names})
assert not loaded, f"the serving path imported {{loaded}}"
print("ok")
"""


def test_serving_path_never_imports_torch(tiny_bundles):
    code = SERVING_PATH.format(names=set(TRAINING_ONLY))
    result = subprocess.run([sys.executable, "-c", code, str(tiny_bundles["sentiment"])],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


# what the Kubernetes Job runs (python -m textcls.cli score ...), checked for what it loaded
SCORE_PATH = """
import sys
from textcls.cli import main
sys.argv = ["textcls", "score", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, f"textcls score exited with {{exc.code}}"
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {names})
assert not loaded, f"the score path imported {{loaded}}"
print("ok")
"""


def test_score_path_never_imports_torch_or_the_training_stages(tiny_bundles, tmp_path):
    data = tmp_path / "in.csv"
    data.write_text("text\na great film\ndull\n")
    code = SCORE_PATH.format(names={*TRAINING_ONLY, "train", "export"})
    result = subprocess.run([sys.executable, "-c", code, str(data), "-o", str(tmp_path / "out.jsonl"),
                             "--model", str(tiny_bundles["sentiment"])],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_bentoml_build_packs_both_models_and_only_the_serving_code(tiny_bundles, tmp_path):
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True"}
    result = subprocess.run([str(BENTOML), "build", "-o", "tag", "."], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tag = re.search(r"__tag__:(\S+)", result.stdout).group(1)
    name, version = tag.split(":")
    bento = Path(os.environ["BENTOML_HOME"]) / "bentos" / name / version

    info = yaml.safe_load((bento / "bento.yaml").read_text())
    (service,) = info["services"]  # models the service declares are listed under it
    declared = {m["tag"] for m in service["models"]}
    assert {t.split(":")[0] for t in declared} == {"sentiment", "topic"}
    # the store keeps models beside the Bento; `bentoml export` (and containerize) packs them in
    archive = tmp_path / "textcls.bento"
    exported = subprocess.run([str(BENTOML), "export", tag, str(archive)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr[-3000:]
    with tarfile.open(archive) as tar:
        members = set(tar.getnames())
    for model_tag in declared:
        task, model_version = model_tag.split(":")
        packed = f"./models/{task}/{model_version}/manifest.json"
        assert packed in members, f"{model_tag} is not in the exported Bento"

    sources = sorted(str(p.relative_to(bento / "src")) for p in (bento / "src").rglob("*")
                     if p.is_file())
    assert "service/service.py" in sources and "engine/engine.py" in sources
    assert "core/tasks.py" in sources and "engine/engine.py" in sources  # the engine, and what the service shares with the stages
    assert "batch/score.py" in sources and "textcls/cli.py" in sources  # the scoring Job's command
    assert all(p.startswith(("service/", "engine/", "core/", "batch/", "textcls/")) or p == "bentofile.yaml"
               for p in sources), sources

    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    required = {re.split(r"[=<>~\[ ]", line)[0].strip().lower()
                for line in requirements.splitlines() if line.strip() and not line.startswith("#")}
    assert {"bentoml", "onnxruntime", "tokenizers", "pydantic-settings"} <= required
    assert {"typer", "pyarrow", "tqdm", "httpx"} <= required  # `textcls score`
    assert not required & set(TRAINING_ONLY), required

    # The Job's command in the Bento's directory layout: the packed models are in the Bento's own
    # store ($BENTO_PATH/models), and BENTOML_HOME's store is empty, as in the container.
    unpacked = tmp_path / "bento"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    data = tmp_path / "in.csv"
    data.write_text("text\nOil prices jump as OPEC cuts output\nThe match ended 2-1\n")
    job_env = {**env, "BENTO_PATH": str(unpacked), "BENTOML_HOME": str(tmp_path / "empty-home"),
               "JOB_COMPLETION_INDEX": "0", "TEXTCLS_NUM_SHARDS": "1"}
    scored = subprocess.run([sys.executable, "-m", "textcls.cli", "score", str(data), "-o",
                             str(tmp_path / "out.csv"), "--task", "topic"],
                            cwd=unpacked / "src", env=job_env, capture_output=True, text=True, timeout=120)
    assert scored.returncode == 0, scored.stderr[-3000:]
    topic_version = next(t for t in declared if t.startswith("topic:")).split(":")[1]
    packed = Bundle.load(unpacked / "models" / "topic" / topic_version)
    summary = json.loads(scored.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 2 and summary["model"]["version"] == packed.version, summary

