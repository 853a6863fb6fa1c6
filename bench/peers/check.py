"""Prove each peer server works: build its venv, start it on a free loopback port, wait for ready,
send 1 text and 16 texts from the AG News dev file, check the labels are AG News labels and agree
with textcls's labels for the same texts, and stop it (its whole process group).

    .venv/bin/python -m bench.peers.check [names...]     # from the checkout; default: all peers

This is a smoke check, not a benchmark: a handful of requests, one server at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from bench.peers import AGNEWS_LABELS, PEERS, ROOT, ModelFiles, Peer, free_port

AGNEWS_DEV = ROOT.parent / "shared" / "data" / "topic" / "agnews_dev.csv"
MIN_AGREEMENT = 0.85  # int8 vs fp32 vs PyTorch may differ on a text or two of 16


class CheckError(RuntimeError):
    pass


def dev_texts(n: int) -> list[str]:
    with AGNEWS_DEV.open(newline="") as f:
        return [row["text"] for _, row in zip(range(n), csv.DictReader(f))]


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the server's process group (it was started in a session of its own), then SIGKILL
    whatever is left after the grace period."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group (workers, tritonserver)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


@contextlib.contextmanager
def serve(peer: Peer, python: Path, model: ModelFiles, workdir: Path,
          timeout: float = 300) -> Iterator[str]:
    """Start `peer` on a free port; yield its base URL once ready_path answers 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"{peer.name}.log"
    cmd = peer.command(python, port, model, workdir)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **peer.env(model)})
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                raise CheckError(f"{peer.name} exited with {proc.returncode} before ready; "
                                 f"command: {' '.join(cmd)}\n--- log tail ---\n{_tail(log)}")
            if time.monotonic() - started > timeout:
                raise CheckError(f"{peer.name} not ready after {timeout:.0f} s; command: "
                                 f"{' '.join(cmd)}\n--- log tail ---\n{_tail(log)}")
            try:
                with urllib.request.urlopen(url + peer.ready_path, timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        print(f"  ready in {time.monotonic() - started:.1f} s on {url}  (log: {log})")
        yield url
    finally:
        stop(proc)


def post(peer: Peer, url: str, texts: list[str], log: Path) -> list[str]:
    request = urllib.request.Request(url + peer.infer_path, data=peer.body(texts),
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            body = r.read()
    except urllib.error.HTTPError as err:
        raise CheckError(f"{peer.name}: HTTP {err.code}: {err.read()[:2000]!r}\n"
                         f"--- log tail ---\n{_tail(log)}") from err
    labels = peer.labels(body)
    print(f"  {len(texts):2d} texts -> {len(labels)} labels in "
          f"{(time.perf_counter() - started) * 1000:.0f} ms")
    if len(labels) != len(texts):
        raise CheckError(f"{peer.name}: {len(labels)} labels for {len(texts)} texts: {body[:500]!r}")
    bad = [label for label in labels if label not in AGNEWS_LABELS]
    if bad:
        raise CheckError(f"{peer.name}: not AG News labels: {bad}; response {body[:500]!r}")
    return labels


def check(peer: Peer, model: ModelFiles, envs: Path, workdir: Path, texts: list[str],
          reference: list[str] | None, timeout: float) -> list[str]:
    print(f"== {peer.name}: {peer.title}")
    started = time.monotonic()
    python = peer.ensure_env(envs, log=lambda m: print("  " + m))
    print(f"  env: {python} ({time.monotonic() - started:.0f} s)")
    print(f"  versions: {peer.versions(python)}")
    print(f"  serves: {peer.model_file}")
    with serve(peer, python, model, workdir, timeout) as url:
        log = workdir / f"{peer.name}.log"
        post(peer, url, texts[:1], log)
        labels = post(peer, url, texts, log)
    if reference is not None:
        agree = sum(a == b for a, b in zip(labels, reference))
        print(f"  agreement with textcls: {agree}/{len(texts)}")
        if agree < MIN_AGREEMENT * len(texts):
            raise CheckError(f"{peer.name}: agrees with textcls on only {agree}/{len(texts)}: "
                             f"{labels} vs {reference}")
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=[],
                        help="peers to check (default: all); textcls always runs first, as the "
                        "reference")
    parser.add_argument("--envs", type=Path, default=ROOT / "build" / "bench-envs")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to get ready")
    parser.add_argument("--texts", type=int, default=16)
    args = parser.parse_args(argv)
    names = args.names or list(PEERS)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {list(PEERS)}")

    model = ModelFiles.default()
    print(f"model: checkpoint {model.checkpoint}; bundle {model.bundle} ({model.onnx_file})")
    texts = dev_texts(args.texts)
    workdir = Path(tempfile.mkdtemp(prefix="peers-check-"))
    failed: dict[str, str] = {}
    try:
        reference = check(PEERS["textcls"], model, args.envs, workdir, texts, None, args.timeout)
    except CheckError as err:
        print(f"FAILED textcls (the reference): {err}")
        return 1
    for name in names:
        if name == "textcls":
            continue
        try:
            check(PEERS[name], model, args.envs, workdir, texts, reference, args.timeout)
        except (CheckError, subprocess.CalledProcessError) as err:
            failed[name] = str(err)
            print(f"FAILED {name}: {err}")
    passed = [n for n in names if n not in failed]
    print(f"\n{len(passed)} passed, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
