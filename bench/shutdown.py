"""SIGTERM under load: how many requests a `bentoml serve` answers, refuses and drops when it is
told to stop mid-load, as a Kubernetes rolling update tells every pod.

    python bench/shutdown.py --clients 32              # the served default models
    python bench/shutdown.py --root /tmp/old-checkout  # the same, serving another checkout

It starts `bentoml serve` (the models of the current BentoML store), drives --clients closed-loop
clients (bench/load.py, one AG News text per request by default), sends SIGTERM to the `bentoml
serve` process alone after --settle seconds, and reports every request's outcome: answered 200,
answered 503, refused before sending (connection refused), or sent and never answered (dropped);
then how long the server took to exit. tests/service/test_shutdown_overload.py runs the same
scenario on the tiny test models and asserts on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import httpx

from bench.load import bodies_for, closed_loop, summary
from bench.serving import AGNEWS_DEV, ROOT, ServerError, bentoml_serve, csv_texts


async def sigterm_under_load(url: str, proc: subprocess.Popen | None, bodies: list[bytes], *,
                             clients: int = 32, settle: float = 3.0, wait: float = 60.0,
                             terminate: Callable[[], None] | None = None,
                             running: Callable[[], bool] | None = None) -> dict:
    """Load ``url``/topic with ``clients`` clients, SIGTERM ``proc`` after ``settle`` seconds,
    probe /readyz on a kept-alive connection and a new connection, wait for ``proc`` to exit.
    ``terminate`` and ``running`` stop and watch another kind of server instead (a container:
    ``podman stop``, tests/test_image.py)."""
    # to `bentoml serve` alone, as the kubelet signals the container's PID 1
    terminate = terminate or (lambda: os.kill(proc.pid, signal.SIGTERM))
    running = running or (lambda: proc.poll() is None)
    stop = asyncio.Event()
    load = asyncio.create_task(closed_loop(f"{url}/topic", bodies, clients=clients, stop=stop))
    probes: dict = {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as probe:
        # a kept-alive connection, used more often than uvicorn's 5 s keep-alive timeout
        settled = time.monotonic() + settle
        while time.monotonic() < settled:
            assert (await probe.get("/readyz")).status_code == 200
            await asyncio.sleep(min(1.0, max(0.0, settled - time.monotonic())))
        signalled_at = time.monotonic()
        terminate()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                status = (await probe.get("/readyz")).status_code
            except httpx.HTTPError as exc:
                status = f"{type(exc).__name__}"
            if status != 200:
                probes["readyz_after_signal"] = status
                break
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    try:
        async with httpx.AsyncClient(timeout=10) as fresh:
            response = await fresh.post(f"{url}/topic", json={"texts": ["after the signal"]})
            probes["new_connection"] = response.status_code
    except httpx.ConnectError:
        probes["new_connection"] = "refused"
    except httpx.HTTPError as exc:
        probes["new_connection"] = type(exc).__name__
    while running() and time.monotonic() - signalled_at < wait:
        await asyncio.sleep(0.05)
    exit_seconds = time.monotonic() - signalled_at
    stop.set()
    try:
        results = await asyncio.wait_for(load, timeout=30)
    except asyncio.TimeoutError:
        results = []
    return {"results": results, "signalled_at": signalled_at, "probes": probes,
            "exit_seconds": exit_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of load before SIGTERM")
    parser.add_argument("--texts", type=Path, default=AGNEWS_DEV,
                        help="CSV with a `text` column (default: ../shared/data AG News dev)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve")
    args = parser.parse_args()
    if not args.texts.is_file():
        print(f"no {args.texts}: pass --texts <csv with a text column>", file=sys.stderr)
        return 2
    bodies = bodies_for(csv_texts(args.texts), args.texts_per_request)
    try:
        with bentoml_serve(args.root) as server:
            report = asyncio.run(sigterm_under_load(server.url, server.proc, bodies,
                                                    clients=args.clients, settle=args.settle))
            proc, log = server.proc, server.log
    except ServerError as exc:
        print(exc, file=sys.stderr)
        return 1
    results, at = report["results"], report["signalled_at"]
    print(json.dumps({
        "root": str(args.root), "clients": args.clients,
        "before_sigterm": summary([r for r in results if r.done_at < at]),
        "after_sigterm": summary([r for r in results if r.done_at >= at]),
        "probes": report["probes"], "exit_seconds": round(report["exit_seconds"], 2),
        "exit_code": proc.returncode,
        "drain_log": [line.split("] ", 1)[-1] for line in log.read_text().splitlines()
                      if "drain" in line][:2],
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
