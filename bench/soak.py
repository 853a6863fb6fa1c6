"""Soak: the served default models at 70% of their measured peak for 10 minutes.

    make soak                        # = python -m bench.soak --minutes 10 --fraction 0.7
    python -m bench.soak --minutes 1 # a quick look

1. `bentoml serve` of this checkout (the models of the current BentoML store; `make models`
   builds the demo ones), warmed up for --warmup seconds;
2. the peak: --clients closed-loop clients (bench/load.py, one AG News dev text per request) for
   --peak-seconds; peak = answered requests per second;
3. the soak: requests started at --fraction x peak per second (open loop: arrivals do not wait
   for answers, as independent users do) for --minutes, while the resident memory of the whole
   server (the circus arbiter and its worker, summed) is sampled every 5 s.

It reports, per minute, requests, errors, p50/p99 latency and resident memory, and checks the
issue's bounds: no errors, p99 of the last minute no more than 5% above the first's, resident
memory at the end within 5% of the end of the first minute (the first minute is the baseline: allocators and
ONNX Runtime's arenas settle there). Figures go to --out (JSON) and docs/reliability.md quotes
them. Exit status 1 when a bound is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import psutil

from bench.load import OK, bodies_for, closed_loop, open_loop, percentile, summary
from bench.serving import AGNEWS_DEV, ROOT, ServerError, bentoml_serve, csv_texts


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.monotonic(), tree_rss(self.pid)))
            self.done.wait(self.every)


async def measure_peak(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    stop = asyncio.Event()
    task = asyncio.create_task(closed_loop(url, bodies, clients=clients, stop=stop))
    started = time.monotonic()
    await asyncio.sleep(seconds)
    stop.set()
    results = await task
    elapsed = time.monotonic() - started
    ok = sum(1 for r in results if r.outcome == OK)
    return {"clients": clients, "seconds": round(elapsed, 1), "rps": round(ok / elapsed, 1),
            **summary(results)}


def per_minute(results, samples, started: float, minutes: int) -> list[dict]:
    rows = []
    for m in range(minutes):
        lo, hi = started + 60 * m, started + 60 * (m + 1)
        chunk = [r for r in results if lo <= r.sent_at < hi]
        ok = [r.latency for r in chunk if r.outcome == OK]
        rss = [b for t, b in samples if lo <= t < hi]
        rows.append({
            "minute": m + 1, "requests": len(chunk), "errors": len(chunk) - len(ok),
            "p50_ms": round(percentile(ok, 50) * 1000, 1), "p99_ms": round(percentile(ok, 99) * 1000, 1),
            "rss_mib": round(rss[-1] / 2**20, 1) if rss else None,
        })
    return rows


def change(first: float, last: float) -> float:
    return round(100 * (last - first) / first, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--fraction", type=float, default=0.7, help="of the peak rate")
    parser.add_argument("--clients", type=int, default=32, help="closed-loop clients for the peak")
    parser.add_argument("--peak-seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=15)
    parser.add_argument("--texts", type=Path, default=AGNEWS_DEV,
                        help="CSV with a `text` column (default: ../shared/data AG News dev)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reports" / "soak.json")
    parser.add_argument("--bound-percent", type=float, default=5.0)
    args = parser.parse_args(argv)
    if not args.texts.is_file():
        print(f"no {args.texts}: pass --texts <csv with a text column>", file=sys.stderr)
        return 2
    bodies = bodies_for(csv_texts(args.texts), 1)
    try:
        with bentoml_serve() as server:
            url = f"{server.url}/topic"
            asyncio.run(measure_peak(url, bodies, args.clients, args.warmup))
            peak = asyncio.run(measure_peak(url, bodies, args.clients, args.peak_seconds))
            rate = args.fraction * peak["rps"]
            print(f"peak {peak['rps']} req/s at {args.clients} clients; soaking at {rate:.1f} req/s "
                  f"for {args.minutes} min", flush=True)
            sampler = MemorySampler(server.proc.pid)
            sampler.start()
            started = time.monotonic()
            results = asyncio.run(open_loop(url, bodies, rate, 60 * args.minutes))
            sampler.done.set()
            sampler.join()
    except ServerError as exc:
        print(exc, file=sys.stderr)
        return 1
    minutes = per_minute(results, sampler.samples, started, args.minutes)
    errors = sum(r.outcome != OK for r in results)
    p99_drift = change(minutes[0]["p99_ms"], minutes[-1]["p99_ms"])
    rss_change = change(minutes[0]["rss_mib"], minutes[-1]["rss_mib"])
    report = {
        "date": time.strftime("%Y-%m-%d"), "peak": peak, "rate": round(rate, 1),
        "fraction": args.fraction, "minutes": minutes, "soak": summary(results),
        "errors": errors, "p99_drift_percent": p99_drift, "rss_change_percent": rss_change,
        # drift is a rise: a p99 that falls over the run (noise on a shared machine) is no drift
        "bounds": {"errors": errors == 0, "p99_drift": p99_drift < args.bound_percent,
                   "rss_change": abs(rss_change) < args.bound_percent},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print("| minute | requests | errors | p50 ms | p99 ms | RSS MiB |\n| --- | --- | --- | --- | --- | --- |")
    for row in minutes:
        print(f"| {row['minute']} | {row['requests']} | {row['errors']} | {row['p50_ms']} | "
              f"{row['p99_ms']} | {row['rss_mib']} |")
    print(json.dumps({k: report[k] for k in ("rate", "errors", "p99_drift_percent",
                                             "rss_change_percent", "bounds")}))
    return 0 if all(report["bounds"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
