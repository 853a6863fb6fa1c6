"""Real servers for the tests: `bentoml serve` of the project, Prometheus, a served Bento.

`serving(...)` starts a command in its own process group, waits until a URL answers 200 (failing
the test with the server's log when it exits or times out), yields, and stops the whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENTOML = Path(sys.executable).with_name("bentoml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(port: int) -> list[str]:
    """`bentoml serve` of the project's service on a loopback port."""
    return [str(BENTOML), "serve", "service.service:TextClassifier", "--host", "127.0.0.1", "--port", str(port)]


def serve_env(**overrides: str) -> dict[str, str]:
    """The test process's environment for a server (its BENTOML_HOME holds the tiny bundles)."""
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "TEXTCLS_THREADS": "1", **overrides}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # BentoML makes its own
    return env


def wait_ok(url: str, proc: subprocess.Popen, log: Path, *, timeout: float = 120, what: str = "the server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what}: {url} not 200 after {timeout:.0f}s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM to the process group, SIGKILL to what outlives the grace period."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def serving(command: list[str], ready_url: str, log: Path, *, cwd: Path | None = ROOT,
            env: dict[str, str] | None = None, timeout: float = 120,
            what: str = "the server") -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_ok(ready_url, proc, log, timeout=timeout, what=what)
        yield proc
    finally:
        stop(proc)
