"""Security (issue 12), what can be checked without a cluster (tests/test_k8s.py checks the pods'
non-root user, read-only root filesystem and dropped capabilities):

1. The Bento's dependencies are locked: requirements/serving.lock (and its GPU twin) pins every
   package with at least one sha256, pins what requirements/serving.txt asks for, agrees with
   constraints.txt (what CI tests is what ships), and BentoML's own build copies it into the
   Bento with every hash.
2. CI's audit (.ci/audit.py): its lock and ignore-file parsing, its offline matching, and which
   findings fail it, with the network calls replaced.
3. Error bodies carry no stack trace, path or secret: a model call that raises an exception
   naming a path and a secret answers 500 with exactly the service's error shape; an unknown
   route (404) and a wrong method (405) leak nothing either.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from pip_requirements_parser import RequirementsFile

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
SERVING = REQUIREMENTS / "serving.txt"
LOCK = REQUIREMENTS / "serving.lock"
GPU_LOCK = REQUIREMENTS / "serving-gpu.lock"
LOCKS = {"cpu": LOCK, "gpu": GPU_LOCK}
CONSTRAINTS = ROOT / "constraints.txt"
AUDIT = ROOT / ".ci" / "audit.py"

sys.path.insert(0, str(Path(__file__).resolve().parent / "service"))  # service_fixtures
from service_fixtures import (  # noqa: E402,F401  (anyio_backend is a fixture)
    TEST_BENTOML_CONFIG, FakeEngine, fake_settings, serving, anyio_backend,
)

pytestmark = pytest.mark.reliability


# --- 1. the lock -------------------------------------------------------------------------------

def pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a file of `name==version` lines."""
    out = {}
    for req in RequirementsFile.from_file(str(path)).requirements:
        assert req.is_pinned, f"{path.name}: {req.line} is not an == pin"
        out[canonicalize_name(req.name)] = req.get_pinned_version
    return out


def direct_pins(lock: str) -> dict[str, str]:
    wanted = pins(SERVING)
    if lock == "gpu":  # the GPU image: onnxruntime-gpu at the CPU build's version
        wanted["onnxruntime-gpu"] = wanted.pop("onnxruntime")
    return wanted


@pytest.mark.parametrize("lock", LOCKS)
def test_every_direct_pin_is_in_the_lock_at_the_same_version(lock):
    locked = pins(LOCKS[lock])
    wanted = direct_pins(lock)
    assert {name: locked.get(name) for name in wanted} == wanted


@pytest.mark.parametrize("lock", LOCKS)
def test_every_lock_entry_is_an_exact_pin_with_a_sha256(lock):
    parsed = RequirementsFile.from_file(str(LOCKS[lock]))
    assert not parsed.invalid_lines and not parsed.options  # no index URLs or other options
    assert len(parsed.requirements) > 50  # bentoml's whole tree, not only the direct pins
    for req in parsed.requirements:
        assert req.is_pinned and not req.link and not req.is_editable, req.line
        assert req.hash_options, f"{req.name} has no --hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in req.hash_options), req.name


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_agrees_with_constraints(lock):
    """What CI installs (constraints.txt) is what the image installs, wherever both name a package."""
    tested, locked = pins(CONSTRAINTS), pins(LOCKS[lock])
    differ = {n: (v, tested[n]) for n, v in locked.items() if n in tested and tested[n] != v}
    assert not differ, f"lock vs constraints.txt: {differ}; run `make lock`"
    # the GPU runtime is the only package CI never installs
    assert set(locked) - set(tested) <= {"onnxruntime-gpu"}


def test_the_gpu_lock_is_the_cpu_lock_with_onnxruntime_gpu():
    cpu, gpu = pins(LOCK), pins(GPU_LOCK)
    assert gpu.pop("onnxruntime-gpu") == cpu.pop("onnxruntime")
    assert gpu == cpu


def test_the_lock_pins_the_bentoml_that_builds_the_bento():
    """`bentoml build` appends `bentoml==<its own version>` to the lock it copies; the two must
    agree or the image's install has two pins for one package."""
    import bentoml

    assert pins(LOCK)["bentoml"] == bentoml.__version__


def test_bentofile_installs_the_lock_and_does_not_lock_again():
    import yaml

    python = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["python"]
    assert python["requirements_txt"] == "requirements/serving.lock"
    assert python["lock_packages"] is False  # already locked; locking again needs PyPI
    assert "packages" not in python  # BentoML would ignore them beside requirements_txt


def test_the_bentos_requirements_keep_every_hash(tmp_path):
    """BentoML's own build step (PythonOptions.write_to_bento, offline) copies the lock into the
    Bento's env/python/requirements.txt, which the image installs with `uv pip install -r`: every
    locked package keeps its hashes, and the only unhashed line is bentoml's, at the locked version."""
    from service.internals import write_bento_requirements

    written = RequirementsFile.from_file(str(write_bento_requirements(tmp_path, ROOT)))
    assert not (tmp_path / "env" / "python" / "requirements.lock.txt").exists()

    locked = {(canonicalize_name(r.name), r.get_pinned_version, tuple(r.hash_options))
              for r in RequirementsFile.from_file(str(LOCK)).requirements}
    hashed = {(canonicalize_name(r.name), r.get_pinned_version, tuple(r.hash_options))
              for r in written.requirements if r.hash_options}
    unhashed = [r for r in written.requirements if not r.hash_options]
    assert hashed == locked
    assert [(r.name, r.get_pinned_version) for r in unhashed] == [("bentoml", pins(LOCK)["bentoml"])]


def test_the_makefile_regenerates_both_locks():
    make = subprocess.run(["make", "-n", "lock"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert make.returncode == 0, make.stderr
    commands = make.stdout
    assert "uv pip compile requirements/serving.txt" in commands
    assert "--generate-hashes" in commands and "-c constraints.txt" in commands
    assert "--python-version 3.11" in commands  # the Bento's (bentofile.yaml docker.python_version)
    assert "-o requirements/serving.lock" in commands and "-o requirements/serving-gpu.lock" in commands


# --- 2. the audit ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def audit():
    spec = importlib.util.spec_from_file_location("ci_audit", AUDIT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_ci_runs_the_audit_after_install_and_fails_on_it():
    run = (ROOT / ".ci" / "run").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")]).returncode == 0
    step = ".venv/bin/python .ci/audit.py || status=1"
    assert step in run
    assert run.index("make install") < run.index(step) < run.index("exit $status")


def test_the_audit_reads_the_locks_as_pip_does(audit):
    for lock in LOCKS.values():
        assert audit.read_lock(lock) == pins(lock)


def test_the_audit_refuses_an_unhashed_or_unpinned_lock(audit, tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text("numpy==2.4.6\n")
    with pytest.raises(audit.AuditError, match="no --hash"):
        audit.read_lock(lock)
    lock.write_text("numpy>=2 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(audit.AuditError, match="not an `==` pin"):
        audit.read_lock(lock)


def test_the_ignore_file_gives_a_reason_for_every_entry(audit, tmp_path):
    audit.read_ignore(audit.IGNORE)  # the project's own file parses
    bad = tmp_path / "ignore.txt"
    for text, problem in [("GHSA-aaaa-bbbb-cccc\n", "no reason"),
                          ("GHSA-aaaa-bbbb-cccc  #   \n", "no reason"),
                          ("not an id  # why\n", "not an advisory ID"),
                          ("CVE-2024-1  # a\nCVE-2024-1  # b\n", "twice")]:
        bad.write_text(text)
        with pytest.raises(audit.AuditError, match=problem):
            audit.read_ignore(bad)
    bad.write_text("# a comment\n\nPYSEC-2024-1  # only in the X feature, never called\n")
    assert audit.read_ignore(bad) == {"PYSEC-2024-1": "only in the X feature, never called"}


def test_pypis_project_json_covers_only_packages_at_their_latest_release(audit):
    projects = {
        "ecdsa": {"info": {"version": "0.19.2"}, "vulnerabilities": [
            {"id": "GHSA-wj6h-64fc-37mp", "aliases": ["CVE-2024-23342"], "fixed_in": [],
             "summary": "timing attack"},
            {"id": "PYSEC-1", "aliases": [], "withdrawn": "2025-01-01T00:00:00"}]},
        "numpy": {"info": {"version": "2.5.5"}, "vulnerabilities": []},
    }
    findings, covered, uncovered = audit.pypi_latest(
        {"ecdsa": "0.19.2", "numpy": "2.4.6"},
        fetch=lambda url: projects[url.split("/")[-2]])
    assert [(f.package, f.id) for f in findings] == [("ecdsa", "GHSA-wj6h-64fc-37mp")]
    assert covered == {"ecdsa"} and set(uncovered) == {"numpy"}


def fake_network(audit, monkeypatch, *, service, findings):
    """Replace every call that leaves the machine: the probe, pip-audit, PyPI."""
    monkeypatch.setattr(audit, "reachable_service",
                        lambda pins: (service, [] if service else ["PyPI: HTTP 404", "OSV: unreachable"]))
    monkeypatch.setattr(audit, "pip_audit", lambda locks, svc, strict: (
        (findings, {"a2wsgi"}, {}) if service else ([], set(), {"a2wsgi": "not found: x"})))
    monkeypatch.setattr(audit, "pypi_latest", lambda pins: ([], set(), dict.fromkeys(pins, "old")))


def test_a_finding_fails_the_audit_unless_ignored_with_a_reason(audit, monkeypatch, tmp_path, capsys):
    finding = audit.Finding("a2wsgi", "1.10.10", "PYSEC-2099-1", "pip-audit/pypi", ("CVE-2099-1",), ())
    fake_network(audit, monkeypatch, service="pypi", findings=[finding])
    ignore = tmp_path / "ignore.txt"
    ignore.write_text("")
    assert audit.main([str(LOCK), "--ignore", str(ignore)]) == 1
    assert "PYSEC-2099-1" in capsys.readouterr().out
    ignore.write_text("CVE-2099-1  # the alias matches too; test\n")
    assert audit.main([str(LOCK), "--ignore", str(ignore)]) == 0
    ignore.write_text("CVE-2099-1\n")
    assert audit.main([str(LOCK), "--ignore", str(ignore)]) == 2  # no reason


def test_an_unreachable_service_is_said_and_not_a_failure(audit, monkeypatch, tmp_path, capsys):
    fake_network(audit, monkeypatch, service=None, findings=[])
    assert audit.main([str(LOCK), "--ignore", str(tmp_path / "none.txt")]) == 0
    out = capsys.readouterr().out
    assert "CANNOT REACH A VULNERABILITY SERVICE" in out
    assert "fallback: PyPI's per-project JSON" in out and "NOT AUDITED against current data" in out


# --- 3. error bodies ---------------------------------------------------------------------------

SECRET = "sk-live-7f3a9c0d2e1b4a5f"  # what a stray exception message might carry
SECRET_PATH = "/home/bentoml/bento/models/sentiment/secret-credentials.json"
ABSOLUTE_PATH = re.compile(r"(?<![\w.:])/(?:[\w.-]+/)+[\w.-]*")  # /a/b or /a/b/c.json


class LeakyEngine(FakeEngine):
    """A model call that fails with everything an exception should never show a client."""

    error: type[BaseException] = RuntimeError

    def run(self, texts):
        self.calls.append(list(texts))
        try:
            raise FileNotFoundError(2, f"No such file; token={SECRET}", SECRET_PATH)
        except FileNotFoundError as cause:
            raise self.error(f"failed reading {SECRET_PATH} with api_key={SECRET}") from cause


class LeakyEngines:
    def __init__(self, error: type[BaseException]) -> None:
        self.error = error
        self.by_task: dict[str, LeakyEngine] = {}

    def __call__(self, task, ref, settings):
        engine = LeakyEngine(task)
        engine.error = self.error
        self.by_task[task] = engine
        return engine


def assert_no_leak(response) -> None:
    text = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    for needle in ("Traceback", 'File "', SECRET, "secret", str(ROOT), "site-packages", "api_key",
                   "FileNotFoundError", "RuntimeError"):
        assert needle not in text, f"{response.status_code} leaks {needle!r}: {text[:500]}"
    assert not ABSOLUTE_PATH.search(response.text), response.text[:500]


def test_the_leak_check_catches_what_an_unshaped_500_would_show():
    import httpx

    for body in (f'Traceback (most recent call last):\n  File "{ROOT}/engine/engine.py", line 1',
                 f"RuntimeError: failed reading {SECRET_PATH}", "failed reading /srv/app/x.onnx",
                 f'{{"error": "api_key={SECRET}"}}'):
        with pytest.raises(AssertionError):
            assert_no_leak(httpx.Response(500, text=body))
    assert_no_leak(httpx.Response(500, json={"error": "internal error; see the log", "type": "internal"}))


def leaky_service(tmp_path, error):
    from service.service import service_for

    engines = LeakyEngines(error)
    svc = service_for(fake_settings(tmp_path), engine_factory=engines,
                        bentoml_config=TEST_BENTOML_CONFIG)
    return svc, engines


@pytest.mark.anyio
@pytest.mark.parametrize("error", [RuntimeError, OSError, ValueError, KeyError, MemoryError])
@pytest.mark.parametrize("route", ["/sentiment", "/topic"])
async def test_a_failing_model_call_answers_500_in_our_shape_with_nothing_of_the_exception(
        tmp_path, error, route):
    from service.errors import ErrorType, ServiceError

    svc, engines = leaky_service(tmp_path, error)
    async with serving(svc) as client:
        response = await client.post(route, json={"texts": ["a fine day"]})
    task = route.strip("/")
    assert engines.by_task[task].calls == [["a fine day"]]  # the model was called and raised
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == ServiceError(ErrorType.INTERNAL).body()  # exactly, nothing more
    assert_no_leak(response)


UNKNOWN = [("GET", "/no-such-route"), ("POST", "/no-such-route"), ("GET", "/../../etc/passwd"),
           ("GET", "/sentiment/" + SECRET_PATH.lstrip("/"))]
WRONG_METHOD = [("GET", "/sentiment"), ("PUT", "/topic"), ("DELETE", "/explain"),
                ("PATCH", "/sentiment")]


@pytest.mark.anyio
async def test_unknown_routes_and_wrong_methods_answer_in_our_shape_and_leak_nothing(tmp_path):
    svc, _ = leaky_service(tmp_path, RuntimeError)
    async with serving(svc) as client:
        for method, path in UNKNOWN + WRONG_METHOD:
            response = await client.request(method, path)
            unknown = (method, path) in UNKNOWN
            assert response.status_code == (404 if unknown else 405), (method, path, response.text[:200])
            assert_no_leak(response)
            assert response.headers["content-type"].startswith("application/json"), (method, path)
            body = response.json()
            assert set(body) == {"error", "type"}, (method, path, body)
            expected = "not_found" if unknown else "method_not_allowed"
            assert body["type"] == expected and body["error"], (method, path, body)
