"""HTTP load test of a running service with wrk: latency percentiles and throughput per concurrency.

    python bench/http_load.py --task topic --connections 1,32 --duration 30

For each concurrency level, wrk keeps that many connections busy (each sends its next request
when the previous answer arrives, as closed-loop clients do) for --duration seconds, cycling
through real texts (one per request by default, as the figures in
../shared/docs/architecture.md were measured). It reports requests/s, p50/p95/p99 latency, and
non-2xx answers; 503s mean the service shed load (see TEXTCLS_MAX_LATENCY_MS).

wrk (Debian package `wrk`: apt-get install wrk) is used because it is a small C load generator
whose own cost stays low on a 2-core machine shared with the server, and because the baseline
figures were taken with it, so results compare. Start the service first (`bentoml serve`) and
wait for /readyz.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXTS = {
    "topic": ROOT.parent / "shared" / "data" / "topic" / "agnews_dev.csv",
    "sentiment": ROOT.parent / "shared" / "data" / "sentiment" / "sst2_dev.csv",
}

# wrk runs one Lua state per thread. Each thread starts at a different offset in the bodies, so
# concurrent connections do not all send the same text; done() prints one JSON line to parse.
LUA = r"""
local bodies = {}
local next_index = 1
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("offset", counter)
end

init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  next_index = ((tonumber(offset) or 1) * 97) % #bodies + 1
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

request = function()
  local body = bodies[next_index]
  next_index = next_index % #bodies + 1
  return wrk.format(nil, wrk.path, nil, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def read_texts(path: Path, limit: int) -> list[str]:
    if not path.is_file():
        sys.exit(f"no text file at {path}; pass --texts FILE (CSV with a `text` column, or one "
                 "text per line)")
    with path.open(newline="", encoding="utf-8") as f:
        if path.suffix == ".csv":
            texts = [row["text"] for row in csv.DictReader(f) if row.get("text", "").strip()]
        else:
            texts = [line.strip() for line in f if line.strip()]
    if not texts:
        sys.exit(f"{path} holds no texts")
    return texts[:limit]


def check_service(url: str, task: str, body: str) -> None:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
            r.read()
        req = urllib.request.Request(f"{url}/{task}", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
    except (urllib.error.URLError, OSError) as exc:
        sys.exit(f"the service at {url} is not ready or refused a request: {exc}")
    print(f"service ready; sample answer: {json.dumps(answer)[:160]}")


def run_wrk(url: str, task: str, bodies: Path, script: Path, connections: int, threads: int,
            duration: int) -> dict:
    threads = max(1, min(threads, connections))
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
           "--timeout", "30s", "-s", str(script), f"{url}/{task}", "--", str(bodies)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if out.returncode != 0:
        sys.exit(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        sys.exit(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    seconds = raw["duration_us"] / 1e6
    return {
        "connections": connections,
        "requests": raw["requests"],
        "requests_per_s": round(raw["requests"] / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["socket_errors"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Load-test a running textcls service with wrk: single-request latency "
        "(1 connection) and throughput under concurrency.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="service base URL")
    parser.add_argument("--task", choices=sorted(DEFAULT_TEXTS), default="topic",
                        help="endpoint to load")
    parser.add_argument("--texts", type=Path, default=None,
                        help="CSV with a `text` column or one text per line "
                        "(default: the task's dev file in ../shared/data)")
    parser.add_argument("--max-texts", type=int, default=1000, help="distinct texts to cycle")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--connections", default="1,32",
                        help="comma-separated concurrency levels (closed-loop clients)")
    parser.add_argument("--duration", type=int, default=30, help="seconds per level")
    parser.add_argument("--threads", type=int, default=2,
                        help="wrk threads (at most one per connection)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="seconds of load before measuring, so the batcher has trained")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    texts = read_texts(args.texts or DEFAULT_TEXTS[args.task], args.max_texts)
    n = args.texts_per_request
    bodies = [json.dumps({"texts": texts[i:i + n]}) for i in range(0, len(texts) - n + 1, n)]
    levels = [int(c) for c in args.connections.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        bodies_file, script = Path(tmp) / "bodies.jsonl", Path(tmp) / "post.lua"
        bodies_file.write_text("\n".join(bodies) + "\n")
        script.write_text(LUA)
        check_service(args.url, args.task, bodies[0])
        if args.warmup:
            run_wrk(args.url, args.task, bodies_file, script, max(levels), args.threads,
                    args.warmup)
        results = []
        for connections in levels:
            result = run_wrk(args.url, args.task, bodies_file, script, connections,
                             args.threads, args.duration)
            results.append(result)
            time.sleep(1)

    print(f"\n{args.task}: {len(bodies)} distinct bodies, {n} text(s) per request, "
          f"{args.duration}s per level, wrk on this machine")
    print(f"{'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for r in results:
        print(f"{r['connections']:>5} {r['requests_per_s']:>8} {r['p50_ms']:>8.1f} "
              f"{r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['non_2xx']:>8}")
    if args.json:
        args.json.write_text(json.dumps({"task": args.task, "url": args.url,
                                         "texts_per_request": n, "duration_s": args.duration,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
