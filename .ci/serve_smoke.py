#!/usr/bin/env python3
"""The README's first command, for real: `make serve` in a fresh BentoML home must install, build
both demo models, serve, turn /readyz to 200 and answer /sentiment and /topic. Then `make serve`
again in the same home must serve without rebuilding. Exits non-zero, with the server's log,
when any step fails.

Standard library only, so it runs before anything is installed. Usage: python3 .ci/serve_smoke.py
(SMOKE_PORT picks the port, default a free one; SMOKE_READY_TIMEOUT the seconds to wait for
/readyz on the first start, default 1500; SMOKE_HOME an empty directory to use as the fresh
BentoML home and keep).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = float(os.environ.get("SMOKE_READY_TIMEOUT", 1500))
REQUESTS = {
    "sentiment": (["A warm, funny and moving film.", "Dull and far too long."], {"negative", "positive"}),
    "topic": (["Oil prices jump as OPEC cuts output", "The home side won the final in extra time."],
              {"World", "Sports", "Business", "Sci/Tech"}),
}


class SmokeFailure(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start(env: dict, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        # its own process group: `make` starts bentoml, which starts its workers; all must stop
        return subprocess.Popen(["make", "serve"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def stop(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGTERM to the whole group (make, bentoml, its workers), then wait until every process of
    it is gone, so the port is free for the next start; SIGKILL what outlives the grace period."""
    if group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_alive(proc.pid) and time.monotonic() < deadline:
        proc.poll()  # reap make itself, or its zombie keeps the group alive
        time.sleep(0.5)
    if group_alive(proc.pid):
        print(f"smoke: the server outlived {grace:.0f}s after SIGTERM; killing it", flush=True)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def listening(port: int) -> bool:
    """Whether a server answers on the port. (A bind test would also fail on the closed
    connections of the last server, still in TIME_WAIT, which the next server ignores.)"""
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise SmokeFailure(f"`make serve` exited with status {proc.returncode} before /readyz said ready")
        try:
            if http("GET", f"{url}/readyz", timeout=5)[0] == 200:
                return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass  # not listening yet
        time.sleep(1)
    raise SmokeFailure(f"/readyz did not turn 200 within {timeout:.0f}s")


def check_endpoints(url: str) -> None:
    for task, (texts, labels) in REQUESTS.items():
        try:
            status, body = http("POST", f"{url}/{task}", {"texts": texts})
        except OSError as exc:  # refused, reset, timed out
            raise SmokeFailure(f"POST /{task}: {type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise SmokeFailure(f"POST /{task} answered {status}: {body[:500]!r}")
        answer = json.loads(body)
        if len(answer) != len(texts) or any(p.get("label") not in labels for p in answer):
            raise SmokeFailure(f"POST /{task}: {answer!r} is not one prediction per text with a {task} label")
        scores = [sum(p["scores"].values()) for p in answer]
        if any(abs(s - 1) > 1e-3 for s in scores):
            raise SmokeFailure(f"POST /{task}: class probabilities sum to {scores}, not 1")
        print(f"smoke: POST /{task} -> " + "; ".join(f"{p['label']} {p['score']:.2f}" for p in answer), flush=True)


def run(label: str, env: dict, log: Path, timeout: float) -> float:
    url = f"http://127.0.0.1:{env['BENTOML_PORT']}"
    if listening(int(env["BENTOML_PORT"])):  # else /readyz could be another server's answer
        raise SmokeFailure(f"a server already listens on port {env['BENTOML_PORT']} before `make serve` starts")
    t0 = time.monotonic()
    proc = start(env, log)
    try:
        ready = wait_ready(url, proc, timeout)
        print(f"smoke: {label}: `make serve` -> /readyz 200 in {ready:.0f}s", flush=True)
        check_endpoints(url)
    finally:
        stop(proc)
    print(f"smoke: {label}: stopped; {time.monotonic() - t0:.0f}s in all", flush=True)
    return ready


def main() -> int:
    # SMOKE_HOME: an empty directory to use as the fresh home and keep, with the two demo models
    # it ends up holding (.ci/run builds the image from them); by default a temporary one, deleted
    keep = os.environ.get("SMOKE_HOME")
    home = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="textcls-smoke-home-"))
    if keep and (not home.is_dir() or any(home.iterdir())):
        print(f"smoke: SMOKE_HOME={keep} must be an empty directory", flush=True)
        return 2
    port = int(os.environ.get("SMOKE_PORT") or free_port())
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_PORT": str(port),
           "BENTOML_DO_NOT_TRACK": "True", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    logs = Path(tempfile.mkdtemp(prefix="textcls-smoke-logs-"))
    print(f"smoke: fresh BentoML home {home}, port {port}, logs in {logs}", flush=True)
    log = logs / "first.log"
    try:
        run("fresh store", env, log, READY_TIMEOUT)
        first = log.read_text()
        summary = [line for line in first.splitlines() if line.startswith(("sentiment:", "topic:"))]
        print("\n".join(f"smoke: {line}" for line in summary), flush=True)
        if not all(f"{task}: {task}:" in first for task in REQUESTS):
            raise SmokeFailure("the first start did not report building both demo models")
        log = logs / "again.log"
        run("models present", env, log, 300)
        again = log.read_text()
        if "training on the demo set" in again or again.count("already stored, not rebuilt") != len(REQUESTS):
            raise SmokeFailure("with both models in the store, `make serve` rebuilt one")
    except SmokeFailure as exc:
        tail = log.read_text()[-6000:] if log.is_file() else "(no log: the server was not started)"
        print(f"smoke: FAILED: {exc}\n--- last lines of {log} ---\n{tail}", flush=True)
        return 1
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)  # the two demo bundles: a few hundred MB
    print("smoke: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
