"""The CPU image, run as Kubernetes runs it (`make image-test`; `make image` builds the image).

Everything the container gets is read from the *rendered* manifests (`kubectl kustomize
k8s/overlays/cpu`, `k8s/jobs/batch-score` and its `merge/`), never from a copy written here, so
these tests break when the manifests and the image drift apart: the args (the image's entrypoint
stays), the ConfigMap and `env` (resourceFieldRef resolved), the user, the read-only root, the
dropped capabilities, no privilege escalation, an in-memory or disk emptyDir as a tmpfs at each
of its mounts (sizeLimit as its size) and the CPU limit. No `--init`: Kubernetes runs the
entrypoint as PID 1.

Then: the probes, both endpoints against `bentoml serve` of the same models from the store, the
metrics the rules and dashboard read, nothing written outside the mounts, SIGTERM under 32 clients
(`podman stop -t` the grace period the pod has after its preStop pause), the Indexed Job's shards
and the merge against `textcls score` in process, a broken bundle, and the figures (time to ready,
size, memory) written to build/image-report.json for docs/deploy.md.

Marked `image` and left out of `make test` (pyproject.toml), because they need the image: a
missing image or container tool fails them with what to run, never skips them.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from k8s_manifests import ROOT
from processes import free_port, serve_command, serve_env, serving
from test_k8s import (
    JOB,
    OVERLAYS,
    container_environment,
    containers,
    metrics_problems,
    pod_spec,
    promtool,
    score_and_merge,
    server,
)

from bench.load import DROPPED, OK, REFUSED, TIMEOUT, bodies_for, summary
from bench.shutdown import sigterm_under_load

pytestmark = pytest.mark.image

TEXTCLS = Path(sys.executable).with_name("textcls")
IMAGE_TAG_FILE = ROOT / "build" / "image-cpu.tag"
REPORT = ROOT / "build" / "image-report.json"
BENTO = "/home/bentoml/bento"  # $BENTO_PATH in BentoML's images
SIZE_BUDGET_MB = 800  # issue 21: the CPU image with both models
TEXTS = {
    "sentiment": ["A warm, funny and moving film.", "Dull and far too long.",
                  "The acting was wooden and the plot made no sense at all.", "I loved every minute."],
    "topic": ["Oil prices jump as OPEC cuts output", "The home side won the final in extra time.",
              "New chip doubles battery life of phones", "Leaders meet to discuss the ceasefire."],
}
figures: dict = {}


def container_tool() -> str:
    """podman or docker, whichever runs containers here (CONTAINER_TOOL forces one)."""
    for name in [os.environ["CONTAINER_TOOL"]] if os.environ.get("CONTAINER_TOOL") else ["podman", "docker"]:
        if shutil.which(name) and (name != "docker" or run_ok(["docker", "info"])):
            return name
    pytest.fail("no container tool runs containers here: install podman (Debian: apt-get install "
                "podman runc) or Docker; .ci/run installs podman")


def run_ok(command: list[str]) -> bool:
    return subprocess.run(command, capture_output=True, timeout=60).returncode == 0


def tool_run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{TOOL} {' '.join(args)}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


TOOL = os.environ.get("CONTAINER_TOOL") or ("podman" if shutil.which("podman") else "docker")


@pytest.fixture(scope="session")
def image() -> str:
    tag = os.environ.get("TEXTCLS_IMAGE") or (IMAGE_TAG_FILE.read_text().strip() if IMAGE_TAG_FILE.is_file() else "")
    if not tag:
        pytest.fail(f"no image to test: run `make image` first (it writes {IMAGE_TAG_FILE}), or set TEXTCLS_IMAGE")
    global TOOL
    TOOL = container_tool()
    if not run_ok([TOOL, "image", "inspect", tag]):
        pytest.fail(f"{TOOL} has no image {tag}: run `make image` again")
    return tag


def store_env() -> dict[str, str]:
    """The environment of this machine's `textcls`/`bentoml serve` over the store `make image`
    packed the models from (conftest.py points BENTOML_HOME of the tests at an empty store)."""
    home = os.environ.get("TEXTCLS_IMAGE_STORE") or str(Path.home() / "bentoml")
    return {"BENTOML_HOME": home}


@functools.cache
def packed_models(image: str) -> dict[str, str]:
    """task -> the store tag of the model packed into the image (asked once per image)."""
    out = tool_run("run", "--rm", "--entrypoint", "sh", image, "-c", f"cd {BENTO}/models && ls -d */*/").stdout
    return {path.split("/")[0]: path.strip("/").replace("/", ":") for path in out.split()}


def run_flags(target: str, obj: dict, container: dict, *, data: Path | None = None) -> list[str]:
    """`podman run` flags for a container of a rendered pod template, as the kubelet runs it."""
    spec, security = pod_spec(obj), container.get("securityContext", {})
    pod_security = spec.get("securityContext", {})
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    group = security.get("runAsGroup", pod_security.get("runAsGroup"))
    flags = ["--user", f"{user}:{group}"]
    if pod_security.get("fsGroup") is not None:
        flags += ["--group-add", str(pod_security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        flags += ["--read-only"] + (["--read-only-tmpfs=false"] if TOOL == "podman" else [])
    for cap in security.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", cap]
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit", "64Mi").replace("Mi", "m").replace("Gi", "g")
            flags += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
        else:
            assert "persistentVolumeClaim" in volume and data is not None, f"no stand-in for {mount}"
            flags += ["-v", f"{data}:{mount['mountPath']}"]
    for name, value in container_environment(target, container, {}).items():
        flags += ["-e", f"{name}={value}"]
    limits = container.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        flags += ["--cpus", str(limits["cpu"])]
    if "workingDir" in container:
        flags += ["--workdir", container["workingDir"]]
    return flags


def command_flags(container: dict) -> tuple[list[str], list[str]]:
    """Kubernetes' command replaces the image's entrypoint, its args the image's CMD."""
    command = container.get("command")
    entrypoint = ["--entrypoint", command[0]] if command else []
    return entrypoint, [*(command[1:] if command else []), *container.get("args", [])]


@pytest.fixture(scope="module")
def pod(image, tmp_path_factory):
    """The CPU overlay's serving container, started as the kubelet starts it."""
    deployment, _, container = server(OVERLAYS["cpu"])
    port = free_port()
    name = f"textcls-test-{uuid.uuid4().hex[:8]}"
    entrypoint, args = command_flags(container)
    (container_port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    started = time.monotonic()
    tool_run("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:{container_port}",
             *run_flags(OVERLAYS["cpu"], deployment, container), *entrypoint, image, *args)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_ready(url, name, timeout=180)
        figures["start_to_ready_seconds"] = round(ready - started, 1)
        yield {"url": url, "name": name, "deployment": deployment, "container": container}
    finally:
        log = tool_run("logs", name, check=False)
        (tmp_path_factory.getbasetemp() / f"{name}.log").write_text(log.stdout + log.stderr)
        tool_run("rm", "-f", name, check=False)


def wait_ready(url: str, name: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        state = tool_run("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
        if state == "false":
            pytest.fail(f"the container exited before /readyz:\n{logs(name)[-4000:]}")
        time.sleep(0.25)
    pytest.fail(f"/readyz not 200 after {timeout:.0f} s:\n{logs(name)[-4000:]}")


def logs(name: str) -> str:
    result = tool_run("logs", name, check=False)
    return result.stdout + result.stderr


def test_the_image_holds_both_models_no_torch_and_no_build_tools(image):
    models = packed_models(image)
    assert set(models) == {"sentiment", "topic"}, models
    probe = tool_run("run", "--rm", "--entrypoint", "sh", image, "-c",
                     "python -c 'import importlib.util as u; print(u.find_spec(\"torch\"))';"
                     " python -c 'import onnxruntime, tokenizers, pyarrow.parquet, pyarrow.csv, bentoml;"
                     " print(onnxruntime.get_available_providers())';"
                     " for t in gcc cc git uv pip; do command -v $t || echo no-$t; done;"
                     f" ls {BENTO}/models/*/*/").stdout
    assert probe.splitlines()[0] == "None", probe  # no torch
    assert "'CPUExecutionProvider'" in probe and "CUDA" not in probe, probe  # onnxruntime, CPU
    for tool in ("gcc", "cc", "git", "uv"):
        assert f"no-{tool}" in probe, f"{tool} is in the image:\n{probe}"
    # only the variants the CPU image serves: int8 (the bundles' CPU variant) and explain
    onnx = sorted({line for line in probe.split() if line.endswith(".onnx")})
    assert onnx == ["model_explain.onnx", "model_int8.onnx"], onnx
    size = int(tool_run("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    figures["image_size_mb"] = round(size / 1e6)
    assert size <= SIZE_BUDGET_MB * 1e6, f"the image is {size / 1e6:.0f} MB, over {SIZE_BUDGET_MB} MB"


def test_probes_answer_and_predictions_equal_bentoml_serve_from_the_store(image, pod, tmp_path):
    for path in ("/livez", "/readyz"):
        assert httpx.get(pod["url"] + path, timeout=10).status_code == 200, path
    in_image = {task: post(pod["url"], task, texts) for task, texts in TEXTS.items()}

    # the same models from the store, served here with the pod's settings (threads, batch budget)
    models = packed_models(image)
    env = serve_env(**{**container_environment(OVERLAYS["cpu"], pod["container"], {}), **store_env(),
                       "TEXTCLS_SENTIMENT_MODEL": models["sentiment"], "TEXTCLS_TOPIC_MODEL": models["topic"]})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving(serve_command(port), f"{url}/readyz", tmp_path / "serve.log", env=env,
                 what="bentoml serve from the store"):
        local = {task: post(url, task, texts) for task, texts in TEXTS.items()}
    for task in TEXTS:
        for got, want in zip(in_image[task], local[task], strict=True):
            assert got["label"] == want["label"], (task, got, want)
            for label, score in want["scores"].items():
                assert abs(got["scores"][label] - score) <= 1e-6, (task, label, got, want)


def post(url: str, task: str, texts: list[str]) -> list[dict]:
    response = httpx.post(f"{url}/{task}", json={"texts": texts}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_metrics_pass_promtool_and_carry_what_the_rules_and_dashboard_read(pod):
    url = pod["url"]
    for i in range(16):
        post(url, ("sentiment", "topic")[i % 2], [f"text {i} " + "word " * (i % 5)])
    for task in ("sentiment", "topic"):
        assert httpx.post(f"{url}/{task}", json={"texts": [""]}, timeout=30).status_code == 422
    exposition = httpx.get(f"{url}/metrics", timeout=30).text
    result = subprocess.run([promtool(), "check", "metrics"], input=exposition,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
    assert not metrics_problems(exposition)


def test_sigterm_under_32_clients_drains_within_the_grace_period_and_exits_0(pod):
    """Last of the server's tests: it stops the container. Also measures its memory under load."""
    name, spec = pod["name"], pod_spec(pod["deployment"])
    pause = int(pod["container"]["lifecycle"]["preStop"]["exec"]["command"][1])
    budget = spec["terminationGracePeriodSeconds"] - pause  # what is left for SIGTERM -> exit
    texts = TEXTS["topic"] * 8
    stopper: list[subprocess.Popen] = []
    rss: list[int] = []

    def terminate() -> None:
        rss.append(container_rss(name))
        stopper.append(subprocess.Popen([TOOL, "stop", "-t", str(budget), name],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    report = asyncio.run(sigterm_under_load(pod["url"], None, bodies_for(texts, per_request=4),
                                            clients=32, settle=4.0, wait=budget + 10,
                                            terminate=terminate, running=lambda: stopper[0].poll() is None))
    results, signalled_at, probes = report["results"], report["signalled_at"], report["probes"]
    exit_code = int(tool_run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())
    text = logs(name)
    figures["rss_under_32_clients_mib"] = round(rss[0] / 2**20)
    figures["drain"] = {"summary_after_sigterm": summary([r for r in results if r.done_at >= signalled_at]),
                        "exit_seconds": round(report["exit_seconds"], 2), "exit_code": exit_code,
                        "probes": probes}
    print(json.dumps(figures["drain"]))

    assert not [r for r in results if r.outcome in (DROPPED, TIMEOUT)], [r.detail for r in results][:20]
    for r in results:
        assert r.outcome in (OK, REFUSED) or (r.status == 503 and r.error_type == "shutting_down"), r
    assert [r for r in results if r.done_at >= signalled_at and r.outcome == OK], "nothing was answered after SIGTERM"
    assert "drain: done" in text and "still in flight after" not in text, text[-3000:]
    assert probes["readyz_after_signal"] == 503, probes
    assert report["exit_seconds"] < budget, report["exit_seconds"]
    assert exit_code == 0, text[-3000:]


def container_rss(name: str) -> int:
    """Resident memory of every process of a running container (its PID 1 and descendants)."""
    pid = int(tool_run("inspect", "--format", "{{.State.Pid}}", name).stdout.strip())
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def test_nothing_is_written_outside_the_mounts_and_the_log_is_clean(pod):
    """Runs after the others that use the server: what they did wrote nothing to the image."""
    mounts = [m["mountPath"] for m in pod["container"]["volumeMounts"]]
    # what the container engine itself makes: the mount points (and the directories above them)
    # and the files it bind-mounts into /etc and /run, as the kubelet does
    engine = {"/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run", "/run/.containerenv",
              "/run/secrets"}
    engine |= {str(p) for m in mounts for p in [Path(m), *Path(m).parents]}
    changed = [line.split(maxsplit=1) for line in tool_run("diff", pod["name"]).stdout.splitlines()]
    outside = [f"{kind} {path}" for kind, path in changed if path not in engine]
    assert not outside, f"written outside the mounted directories: {outside}"
    text = logs(pod["name"])
    for sign in ("Read-only file system", "Permission denied", "Traceback", "ERROR"):
        assert sign not in text, f"{sign!r} in the container's log:\n{text[-4000:]}"


def test_the_batch_job_shards_and_merge_in_the_image_equal_textcls_score_in_process(image, tmp_path):
    score, merge = score_and_merge()
    (scorer,) = containers(score)
    (merger,) = containers(merge)
    source, output = scorer["command"][4], scorer["command"][scorer["command"].index("-o") + 1]
    assert source.startswith("/data/") and output.startswith("/data/")
    data = tmp_path / "volume"
    rows = 2600  # every shard gets at least one chunk (1,000 rows) to score
    texts = [TEXTS["topic"][i % 4] + f" (report {i})" for i in range(rows)]
    (data / Path(source).parent.relative_to("/data")).mkdir(parents=True)
    (data / Path(output).parent.relative_to("/data")).mkdir(parents=True, exist_ok=True)
    with (data / Path(source).relative_to("/data")).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows(enumerate(texts))
    data.chmod(0o777)
    for path in data.rglob("*"):
        path.chmod(0o777)

    started = time.monotonic()
    for index in range(score["spec"]["completions"]):
        run_job(image, score, scorer, data, index)
    run_job(image, merge, merger, data, None)
    figures["batch_job_seconds"] = round(time.monotonic() - started, 1)

    # in process, on this machine, the same model from the store
    in_process = tmp_path / "in-process.csv"
    topic = packed_models(image)[scorer["command"][scorer["command"].index("--task") + 1]]
    result = subprocess.run([str(TEXTCLS), "score", str(data / Path(source).relative_to("/data")),
                             "-o", str(in_process), "--model", topic],
                            env={**os.environ, **store_env(), "TEXTCLS_THREADS": "2"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    merged = read_rows(data / Path(output).relative_to("/data"))
    expected = read_rows(in_process)
    assert [r["id"] for r in merged] == [str(i) for i in range(rows)]
    assert [r["id"] for r in expected] == [r["id"] for r in merged]
    assert [r["label"] for r in merged] == [r["label"] for r in expected]
    # dynamic int8 quantizes each batch with its own scale, and the shards batch texts with other
    # neighbours than one whole-file run: scores agree closely, not bit for bit
    worst = max(abs(float(a["score"]) - float(b["score"])) for a, b in zip(merged, expected))
    figures["batch_max_score_difference"] = worst
    assert worst < 1e-2, worst


def run_job(image: str, job: dict, container: dict, data: Path, index: int | None) -> None:
    flags = run_flags(JOB, job, container, data=data)
    if index is not None:  # what an Indexed Job's pod gets from Kubernetes
        flags += ["-e", f"JOB_COMPLETION_INDEX={index}"]
    entrypoint, args = command_flags(container)
    result = tool_run("run", "--rm", *flags, *entrypoint, image, *args, check=False, timeout=600)
    assert result.returncode == 0, (container["name"], index, result.stdout[-3000:], result.stderr[-3000:])


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_broken_bundle_stops_the_container_with_one_message(image, tmp_path):
    """A model file changed after the export: the container exits non-zero, once, with the
    engine's one-line message, rather than restarting its worker forever."""
    deployment, _, container = server(OVERLAYS["cpu"])
    topic = packed_models(image)["topic"].replace(":", "/")
    broken = tmp_path / "model_int8.onnx"
    broken.write_bytes(b"not the model the export checked")
    broken.chmod(0o644)
    entrypoint, args = command_flags(container)
    name = f"textcls-broken-{uuid.uuid4().hex[:8]}"
    tool_run("run", "-d", "--name", name, *run_flags(OVERLAYS["cpu"], deployment, container),
             "-v", f"{broken}:{BENTO}/models/{topic}/model_int8.onnx:ro", *entrypoint, image, *args)
    try:
        exit_code = int(tool_run("wait", name, timeout=120).stdout.strip().splitlines()[-1])
        text = logs(name)
    finally:
        tool_run("rm", "-f", name, check=False)
    assert exit_code != 0, text[-3000:]
    assert text.count("does not match its manifest") >= 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture(scope="module", autouse=True)
def write_report():
    yield
    if figures:
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"\nimage figures ({REPORT}):\n{json.dumps(figures, indent=1)}")


def image_base(image: str) -> str:
    """The base image the Bento's Dockerfile starts from (BASE_IMAGE, or BentoML's default)."""
    version = image.rsplit(":", 1)[1]
    dockerfile = Path(store_env()["BENTOML_HOME"], "bentos", "textcls", version, "env", "docker", "Dockerfile")
    assert dockerfile.is_file(), f"no Bento {version} in {store_env()['BENTOML_HOME']}"
    (base,) = re.findall(r"^FROM (\S+) AS base-container$", dockerfile.read_text(), re.MULTILINE)
    return base


@pytest.mark.parametrize("remove, message", [
    ("rm -f /usr/bin/python3.11 /usr/local/bin/python3.11", "has no python3.11"),
    ("rm -rf /usr/bin/pip* /usr/local/bin/pip* /usr/lib/python3/dist-packages/pip"
     " /usr/local/lib/python3.11/site-packages/pip /usr/bin/uv /usr/local/bin/uv", "has neither uv nor pip"),
])
def test_a_base_without_python_311_or_uv_is_refused_with_what_to_use(image, tmp_path, remove, message):
    base = image_base(image)
    broken = f"localhost/textcls-broken-base:{uuid.uuid4().hex[:8]}"
    (tmp_path / "Containerfile").write_text(f"FROM {base}\nUSER root\nRUN {remove}\n")
    tool_run("build", "-q", "-t", broken, str(tmp_path), timeout=300)
    try:
        env = {**os.environ, **store_env(), "BASE_IMAGE": broken, "CONTAINER_TOOL": TOOL,
               "BIN": str(Path(sys.executable).parent)}
        result = subprocess.run([str(ROOT / "k8s" / "build-images.sh"), "--only", "cpu"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=300)
    finally:
        tool_run("rmi", "-f", broken, check=False)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert message in result.stderr and "k8s/base-image.sh" in result.stderr, result.stderr
