"""What a container image packs of each model (service/pack.py, run by k8s/Dockerfile.template),
and the image build's own checks that need no container tool: k8s/container-tool.sh naming what
to install, k8s/build-images.sh refusing an empty store, the template's pins."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.bundle import EXPLAIN, MANIFEST, TOKENIZER, Bundle, BundleError
from engine.engine import Engine
from engine.explain import Explainer
from service.pack import main as pack_main
from service.pack import pack

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bento_models(tiny_bundles, tmp_path) -> Path:
    """A Bento's models/ directory as BentoML lays it out: NAME/VERSION/ with every file."""
    models = tmp_path / "models"
    for task, bundle in tiny_bundles.items():
        shutil.copytree(bundle, models / task / "v1")
    return models


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_an_image_keeps_only_the_variants_its_device_serves(bento_models, device):
    before = {task: Bundle.load(bento_models / task / "v1") for task in ("sentiment", "topic")}
    done = pack(bento_models, device)
    assert len(done) == 2
    for task, bundle in before.items():
        left = {p.name for p in bundle.path.iterdir()}
        chosen = bundle.gpu_variant if device == "cuda" else bundle.cpu_variant
        assert bundle.variants[chosen]["file"] in left and bundle.variants[EXPLAIN]["file"] in left
        assert {MANIFEST, TOKENIZER} <= left
        gone = {v["file"] for name, v in bundle.variants.items() if name not in (chosen, EXPLAIN)}
        assert gone and not gone & left, (gone, left)
        if device == "cpu":  # the served engine and the explainer open what is left, hashes checked
            assert Engine(bundle, device="cpu").variant == chosen
            Explainer(bundle, device="cpu")


def test_a_left_out_variant_is_named_when_asked_for(bento_models):
    pack(bento_models, "cpu")
    bundle = Bundle.load(bento_models / "topic" / "v1")
    with pytest.raises(BundleError, match="missing its file model_fp16.onnx.*packs only the variants"):
        Engine(bundle, variant="fp16", device="cpu")


def test_the_cli_prints_what_it_kept_and_refuses_a_directory_without_bundles(bento_models, tmp_path, capsys):
    assert pack_main([str(bento_models), "--device", "auto"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"topic/v1: serves \w+, explain on cpu; left out .*model_fp16\.onnx", out), out
    (tmp_path / "empty").mkdir()
    assert pack_main([str(tmp_path / "empty")]) == 1
    assert "no model bundle under" in capsys.readouterr().err


def test_served_variants_refuse_an_unknown_device_and_skip_a_failed_explain(tiny_bundles, tmp_path):
    copy = shutil.copytree(tiny_bundles["topic"], tmp_path / "topic")
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["variants"][EXPLAIN]["verdict"] = "failed"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    bundle = Bundle.load(copy)
    assert bundle.served_variants("cpu") == [bundle.cpu_variant]  # a failed explain is never opened
    assert bundle.variants[EXPLAIN]["file"] in bundle.unserved_files("cpu")
    with pytest.raises(BundleError, match="device must be cpu or cuda"):
        bundle.served_variants("tpu")


def test_the_container_tool_check_names_what_to_install(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    for name in ("bash", "mktemp", "cat"):
        (empty / name).symlink_to(shutil.which(name))
    script = f". {ROOT / 'k8s' / 'container-tool.sh'}; container_tool"
    result = subprocess.run([str(empty / "bash"), "-c", script], env={"PATH": str(empty)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    for what in ("no container tool", "Docker with buildx", "apt-get install podman", "buildah"):
        assert what in result.stderr, result.stderr
    forced = subprocess.run([str(empty / "bash"), "-c", script],
                            env={"PATH": str(empty), "CONTAINER_TOOL": "nerdctl"},
                            capture_output=True, text=True, timeout=60)
    assert forced.returncode == 2 and "use docker, podman or buildah" in forced.stderr


def test_build_images_refuses_a_store_without_the_models(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "store"), "BENTOML_DO_NOT_TRACK": "True",
           "BIN": str(Path(sys.executable).parent)}
    result = subprocess.run([str(ROOT / "k8s" / "build-images.sh"), "--only", "cpu"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "no 'sentiment' model in the BentoML store" in result.stderr
    assert "textcls build-defaults" in result.stderr


def test_the_template_installs_the_pinned_uv_and_packs_in_the_build_stage():
    template = (ROOT / "k8s" / "Dockerfile.template").read_text()
    constraints = (ROOT / "constraints.txt").read_text()
    (uv,) = re.findall(r"^ARG UV_VERSION=(\S+)$", template, re.MULTILINE)
    assert f"\nuv=={uv}\n" in constraints, "k8s/Dockerfile.template's UV_VERSION is not constraints.txt's uv"
    build, image = template.split("\nFROM base-container\n")
    assert "python -m service.pack" in build and "uv pip install" in build
    # the image copies the build stage's results and installs nothing itself
    assert "COPY --from=build /app /app" in image and "RUN" not in image.split("{% block SETUP_BENTO_COMPONENTS %}")[1]
