"""Batch scoring figures: rows/s in process and through a running service, and peak memory.

    python bench/batch_score.py                       # speed on AG News dev, then memory at 100k and 1M rows
    python bench/batch_score.py --skip-memory         # speed only (about two minutes)
    python bench/batch_score.py --skip-speed --rows 100000

Speed: `textcls score ../shared/data/topic/agnews_dev.csv --task topic` (1,000 AG News texts) in
process, then the same file with `--url` against `bentoml serve` started here on a free port
(the store's `sentiment` and `topic`, default settings), one after the other so they do not share
the cores; the in-process run first. Each figure is the median of ``--repeat`` runs (3). The two
outputs' labels are compared (same model; int8 answers move slightly with batch neighbours).

Memory: a generated CSV of N rows (an id and a short headline-like text per row, 12 tokens on
average) scored in process, with the store's topic model or ``--memory-model`` (1M rows took 19
minutes with the demo MiniLM model here, 6 with the tests' tiny bundle);
peak RSS is the child's own ``ru_maxrss`` (``os.wait4``), so it covers the whole command: start-up,
the counting pass, every chunk and the final merge.

Every run is `python -m textcls.cli score ...` in a subprocess, as the Kubernetes Job runs it.
Needs the `topic` model in the BentoML store (`make models`). Prints a Markdown table and one JSON
line; docs/batch.md keeps the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
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
AGNEWS_DEV = ROOT.parent / "shared" / "data" / "topic" / "agnews_dev.csv"
BENTOML = Path(sys.executable).with_name("bentoml")

HEADLINES = [
    "Oil prices jump as OPEC cuts output", "Stocks fall on weak earnings outlook",
    "Team wins the title in extra time", "New chip promises faster phones next year",
    "Leaders meet for talks on border dispute", "Striker signs record transfer deal",
    "Central bank holds interest rates steady", "Scientists find water ice on distant moon",
]


def run_score(args: list[str], log: Path) -> dict:
    """One `textcls score` in a child process: its JSON summary, wall time and peak RSS."""
    started = time.perf_counter()
    with log.open("w") as err, tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", "textcls.cli", "score", *args], cwd=ROOT,
                                stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the largest child's
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        lines = out.read().strip().splitlines()
    if proc.returncode != 0 or not lines:
        sys.exit(f"textcls score {' '.join(args)} failed ({proc.returncode}); see {log}:\n"
                 + log.read_text()[-2000:])
    summary = json.loads(lines[-1])
    summary.update(wall_seconds=round(wall, 1), peak_rss_mib=round(usage.ru_maxrss / 1024, 1))
    return summary


def report(result: dict) -> None:
    """Each figure as soon as it is measured (the long runs take a while)."""
    runs = f" (runs: {result['rows_per_second_runs']})" if "rows_per_second_runs" in result else ""
    print(f"  {result['mode']}: {result['rows_per_second']} rows/s{runs}, {result['wall_seconds']} s, "
          f"peak RSS {result['peak_rss_mib']} MiB", file=sys.stderr, flush=True)
    if "server" in result:
        print(f"    service side: {result['server']}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("w") as out:
        proc = subprocess.Popen([str(BENTOML), "serve", "service.service:TextClassifier", "--host",
                                 "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bentoml serve exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return proc, url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    stop(proc)
    sys.exit(f"bentoml serve was not ready after 300 s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


SERVER_SERIES = ("inference_duration_seconds_sum", "batch_size_sum", "batch_size_count",
                 "batch_tokens_sum", "batch_padded_tokens_sum", "queue_duration_seconds_sum",
                 "queue_duration_seconds_count")


def server_stats(url: str) -> dict[str, float]:
    """The service's own topic counters: where a --url run's time went."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    stats = dict.fromkeys(SERVER_SERIES, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removeprefix("textcls_")
            if name in stats and sample.labels.get("task") == "topic":
                stats[name] += sample.value
    return stats


def inprocess_padding(chunk_size: int) -> float:
    """Padded over real tokens when the engine sorts each chunk of AG News dev by length and cuts
    it into calls under the token budget, as `textcls score` in process does (the service does
    the same per batch): the engine `score` opens, its model inputs by the bundle's long-text rule."""
    import numpy as np

    from engine.engine import token_batches
    from engine.options import open_engine

    engine = open_engine("topic")  # `textcls score --task topic`'s, its options left at their defaults
    with AGNEWS_DEV.open(newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    real = padded = 0
    for start in range(0, len(texts), chunk_size):
        rows = engine.read(engine.tokenizer.encode_batch(texts[start: start + chunk_size]))[0]
        lengths = np.sort([len(row) for row in rows])
        real += int(lengths.sum())
        padded += sum(int(lengths[s].max()) * len(lengths[s])
                      for s in token_batches(lengths, engine.batch_tokens))
    return round(padded / real, 2)


def server_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    d = {k: after[k] - before[k] for k in SERVER_SERIES}
    per = lambda total, count: total / max(1.0, count)
    return {"inference_seconds": round(d["inference_duration_seconds_sum"], 2),
            "batches": int(d["batch_size_count"]),
            "mean_batch_size": round(per(d["batch_size_sum"], d["batch_size_count"]), 1),
            "padded_over_real_tokens": round(per(d["batch_padded_tokens_sum"], d["batch_tokens_sum"]), 2),
            "mean_queue_seconds": round(per(d["queue_duration_seconds_sum"],
                                            d["queue_duration_seconds_count"]), 3)}


def labels(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return [row["pred_label"] for row in csv.DictReader(f)]


def median_of(repeat: int, run) -> dict:
    """The run with the median rows/s of ``repeat`` runs, with every run's rows/s: a 3-second run on
    a shared machine moves by a fifth from one try to the next."""
    runs = sorted((run() for _ in range(repeat)), key=lambda r: r["rows_per_second"])
    middle = runs[len(runs) // 2]
    middle["rows_per_second_runs"] = [r["rows_per_second"] for r in runs]
    return middle


def speed(work: Path, concurrency: list[int], chunk_size: int, repeat: int) -> list[dict]:
    if not AGNEWS_DEV.is_file():
        print(f"skipped the speed figures: {AGNEWS_DEV} is absent (the real data lives in "
              "../shared/data, never in this repository).", file=sys.stderr)
        return []
    # the dev file has its own `label` column: the predictions go to pred_label, pred_score
    common = ["--task", "topic", "--column-prefix", "pred_", "--chunk-size", str(chunk_size), "--overwrite"]
    results = []
    local = work / "agnews-inprocess.csv"
    print("in process ...", file=sys.stderr)
    results.append({"mode": "in process",
                    **median_of(repeat, lambda: run_score([str(AGNEWS_DEV), "-o", str(local), *common],
                                                          work / "inprocess.log")),
                    "padded_over_real_tokens": inprocess_padding(chunk_size)})
    report(results[-1])
    print("starting bentoml serve ...", file=sys.stderr)
    server, url = serve(work / "serve.log")
    try:
        for n in concurrency:
            print(f"--url, concurrency {n} ...", file=sys.stderr)
            remote = work / f"agnews-url-c{n}.csv"

            def through_service(remote: Path = remote, n: int = n) -> dict:
                before = server_stats(url)
                summary = run_score([str(AGNEWS_DEV), "-o", str(remote), *common, "--url", url,
                                     "--concurrency", str(n)], work / f"url-c{n}.log")
                return {**summary, "server": server_figures(before, server_stats(url))}

            summary = median_of(repeat, through_service)
            same = sum(a == b for a, b in zip(labels(local), labels(remote), strict=True))
            results.append({"mode": f"--url, concurrency {n}", **summary, "labels_as_in_process": same})
            report(results[-1])
    finally:
        stop(server)
    return results


def generate(path: Path, rows: int) -> None:
    rng = random.Random(0)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for i in range(rows):
            writer.writerow([i, f"{rng.choice(HEADLINES)} ({i})"])


def memory(work: Path, sizes: list[int], chunk_size: int, model: str | None) -> list[dict]:
    results = []
    for rows in sizes:
        data = work / f"generated-{rows}.csv"
        if not data.is_file():
            print(f"generating {rows} rows ...", file=sys.stderr)
            generate(data, rows)
        print(f"scoring {rows} rows in process (peak RSS) ...", file=sys.stderr)
        out = work / f"generated-{rows}.scored.csv"
        which = ["--model", model] if model else ["--task", "topic"]
        summary = run_score([str(data), "-o", str(out), *which, "--chunk-size", str(chunk_size),
                             "--overwrite"], work / f"memory-{rows}.log")
        results.append({"mode": f"in process, {rows:,} generated rows", "input_mib":
                        round(data.stat().st_size / 2**20, 1), **summary})
        report(results[-1])
        out.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="4", help="--url concurrency levels, comma-separated")
    parser.add_argument("--rows", default="100000,1000000", help="generated file sizes for the memory runs")
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per speed figure; the median is kept")
    parser.add_argument("--memory-model", default=None, help="bundle directory or store tag for the "
                        "memory runs (default: the store's topic model, as --task topic)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="where inputs and outputs go "
                        "(default: a temporary directory; the 1M-row file is 52 MiB)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="textcls-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    if not args.skip_speed:
        results += speed(work, [int(c) for c in args.concurrency.split(",")], args.chunk_size, args.repeat)
    if not args.skip_memory:
        results += memory(work, [int(r) for r in args.rows.split(",")], args.chunk_size,
                          args.memory_model)

    print("| run | rows | rows/s (scoring) | wall s | peak RSS MiB | model |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        model = f"{r['model']['task']} {r['model']['version']} ({r['model']['variant']})"
        extra = f", labels as in process: {r['labels_as_in_process']}/{r['rows']}" if "labels_as_in_process" in r else ""
        print(f"| {r['mode']}{extra} | {r['rows']:,} | {r['rows_per_second']} | {r['wall_seconds']} | "
              f"{r['peak_rss_mib']} | {model} |")
    print(json.dumps({"cores": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
