"""`bentoml serve` of a checkout for the benchmarks: start on a free loopback port, wait for
/readyz, stop the whole process group at the end."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]
AGNEWS_DEV = ROOT.parent / "shared" / "data" / "topic" / "agnews_dev.csv"


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path


class ServerError(RuntimeError):
    pass


@contextlib.contextmanager
def bentoml_serve(root: Path = ROOT, env: dict[str, str] | None = None,
                  timeout: float = 300) -> Iterator[Server]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    bentoml = Path(sys.executable).with_name("bentoml")
    log = Path(tempfile.mkdtemp(prefix="textcls-bench-")) / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(bentoml), "serve", "service.service:TextClassifier", "--host", "127.0.0.1",
             "--port", str(port)], cwd=root, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "BENTOML_DO_NOT_TRACK": "True", **(env or {})})
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"bentoml serve did not get ready:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield Server(url, proc, log)
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (arbiter and workers), SIGKILL after 60 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def csv_texts(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(f)]
