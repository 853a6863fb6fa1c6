"""Side-by-side HTTP benchmark: this service against the servers a user would pick instead.

    textcls bench                        # every server, the default durations (~25 minutes)
    textcls bench --servers textcls,naive --duration 10

One run on this machine, one server at a time (each started in its own process and virtual
environment by bench/peers, stopped before the next starts, so none shares the cores with another),
the same model (the default topic model: its PyTorch checkpoint for the PyTorch servers, its ONNX
files for the others), the same texts (the AG News dev file from ../shared/data; the demo dev file
when it is absent). For each server:

1. start-up: seconds from launch to ready;
2. closed loop (wrk): 1, 8, 32 and 128 concurrent clients, one text per request, then the single
   client again right after the heavy runs, then the same with 16 texts per request; requests/s,
   predictions/s, p50/p95/p99, errors (non-2xx and socket errors), the server's CPU seconds per
   1,000 predictions and its peak resident memory (every process of the server, sampled);
3. open loop (Locust headless, 32 users each paced by `constant_throughput`): offered rates at
   fractions of the server's own best closed-loop throughput, latency against load.

Writes docs/reports/bench.json, docs/benchmarks.png (the plot) and the tables between the
`bench:begin`/`bench:end` markers of docs/benchmarks.md, with every server's package versions.

Why these generators: wrk is a small C program whose own cost stays low on 2 shared cores, for the
closed loop; it cannot pace requests. Locust's `constant_throughput` keeps each user at a fixed
rate whatever the answers (until a user's answer takes longer than its interval), which is the
offered-load sweep; it costs more CPU per request than wrk, which is why it only runs the sweep.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench.http_load import LUA as WRK_LUA
from bench.peers import PEERS, ModelFiles, Peer, free_port
from bench.serving import stop_process

ROOT = Path(__file__).resolve().parents[1]
AGNEWS_DEV = ROOT.parent / "shared" / "data" / "topic" / "agnews_dev.csv"
LOCUST_REQUIREMENTS = ["locust==2.47.0"]

LOCUSTFILE = r'''
import json, os
from locust import FastHttpUser, constant_throughput, task

BODIES = [line.rstrip("\n").encode() for line in open(os.environ["BENCH_BODIES"])]
RATE = float(os.environ["BENCH_USER_RATE"])
PATH = os.environ["BENCH_PATH"]

class Client(FastHttpUser):
    wait_time = constant_throughput(RATE)
    connection_timeout = 30.0
    network_timeout = 30.0
    i = 0

    @task
    def predict(self):
        Client.i = (Client.i + 97) % len(BODIES)
        self.client.post(PATH, data=BODIES[Client.i], headers={"Content-Type": "application/json"})
'''


@dataclass
class BenchConfig:
    """What `textcls bench` measures; the defaults are the figures in docs/benchmarks.md."""

    servers: list[str] = field(default_factory=lambda: list(PEERS))
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32, 128])
    texts_per_request: list[int] = field(default_factory=lambda: [1, 16])
    duration: int = 15  # seconds per closed-loop level
    warmup: int = 5
    sweep_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 0.9])
    sweep_duration: int = 15
    texts: Path | None = None  # default: AG News dev, else the demo dev file
    max_texts: int = 1000
    envs: Path = ROOT / "build" / "bench-envs"
    output: Path = ROOT / "docs"  # reports/bench.json, benchmarks.png, the tables in benchmarks.md
    start_timeout: float = 600


class BenchError(RuntimeError):
    pass


def read_texts(config: BenchConfig) -> tuple[list[str], str]:
    import csv

    path = config.texts
    if path is None:
        path = AGNEWS_DEV if AGNEWS_DEV.is_file() else ROOT / "train" / "data" / "topic_dev.csv"
    if not path.is_file():
        raise BenchError(f"no texts at {path}; pass --texts FILE (CSV with a `text` column)")
    with path.open(newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f) if row.get("text", "").strip()]
    return texts[: config.max_texts], str(path)


class ProcessWatch:
    """CPU seconds and peak resident memory of a server's whole process tree."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self.tree():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def largest_process_rss(self) -> int:
        sizes = []
        for p in self.tree():
            try:
                sizes.append(p.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
        return max(sizes, default=0)

    def wait_idle(self, timeout: float = 120, busy: float = 0.1) -> float:
        """Wait until the server uses under ``busy`` of a core over half a second: the requests a
        closed-loop run left queued when wrk stopped are answered. Returns the seconds waited."""
        started = time.monotonic()
        last = self.cpu_seconds()
        while time.monotonic() - started < timeout:
            time.sleep(0.5)
            now = self.cpu_seconds()
            if now - last < busy * 0.5:
                break
            last = now
        return time.monotonic() - started

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.peak_rss = max(self.peak_rss, self.rss())

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Running:
    peer: Peer
    url: str
    proc: subprocess.Popen
    log: Path
    watch: ProcessWatch
    startup_seconds: float


def start(peer: Peer, python: Path, model: ModelFiles, config: BenchConfig,
          workdir: Path) -> Running:
    port = free_port()
    log = workdir / f"{peer.name}.log"
    cmd = peer.command(python, port, model, workdir)
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, **peer.env(model)}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = started + config.start_timeout
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise BenchError(f"{peer.name} did not get ready:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + peer.ready_path, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return Running(peer, url, proc, log, ProcessWatch(proc.pid), time.monotonic() - started)


def wrk(server: Running, bodies: Path, script: Path, connections: int, duration: int) -> dict:
    threads = max(1, min(2, connections))
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
           "--timeout", "30s", "-s", str(script), server.url + server.peer.infer_path, "--",
           str(bodies)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    seconds = raw["duration_us"] / 1e6
    return {"requests": raw["requests"], "requests_per_s": round(raw["requests"] / seconds, 1),
            "p50_ms": raw["p50_us"] / 1000, "p95_ms": raw["p95_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000, "errors": raw["non_2xx"] + raw["socket_errors"]}


def batch_counts(server: Running) -> tuple[float, float] | None:
    """textcls only: texts and batches so far, from its textcls_batch_size histogram."""
    if server.peer.name != "textcls":
        return None
    text = httpx.get(server.url + "/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        for key in ("textcls_batch_size_sum", "textcls_batch_size_count"):
            if line.startswith(key + "{") and 'task="topic"' in line:
                values[key] = float(line.rsplit(" ", 1)[1])
    return values.get("textcls_batch_size_sum", 0.0), values.get("textcls_batch_size_count", 0.0)


def closed_loop(server: Running, bodies: Path, script: Path, connections: int,
                duration: int, texts_per_request: int) -> dict:
    cpu0, batches0 = server.watch.cpu_seconds(), batch_counts(server)
    result = wrk(server, bodies, script, connections, duration)
    cpu, batches1 = server.watch.cpu_seconds() - cpu0, batch_counts(server)
    if batches0 is not None and batches1 is not None and batches1[1] > batches0[1]:
        result["mean_batch_texts"] = round((batches1[0] - batches0[0]) / (batches1[1] - batches0[1]), 1)
    predictions = result["requests"] * texts_per_request
    result.update(connections=connections, texts_per_request=texts_per_request,
                  predictions_per_s=round(result["requests_per_s"] * texts_per_request, 1),
                  cpu_s_per_1000=round(1000 * cpu / max(predictions, 1), 2))
    return result


def locust_python(config: BenchConfig) -> Path:
    venv = config.envs / "locust"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists() or marker.read_text() != " ".join(LOCUST_REQUIREMENTS):
        print("  setting up Locust in", venv, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *LOCUST_REQUIREMENTS],
                       check=True)
        marker.write_text(" ".join(LOCUST_REQUIREMENTS))
    return python


def open_loop(server: Running, bodies: Path, workdir: Path, rate: float, duration: int,
              locust: Path) -> dict:
    # users start 8 a second: started together, paced users stay in step and arrive in bursts
    # (64 synchronised users made batches of 64 at a quarter of the load); statistics are reset
    # once all have started
    users = 32
    locustfile = workdir / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    prefix = workdir / f"locust-{server.peer.name}-{int(rate)}"
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_USER_RATE": str(rate / users),
           "BENCH_PATH": server.peer.infer_path}
    ramp = users // 8
    cmd = [str(locust.with_name("locust")), "-f", str(locustfile), "--headless", "-u", str(users),
           "-r", "8", "-t", f"{duration + ramp}s", "--reset-stats", "--host", server.url,
           "--csv", str(prefix), "--only-summary", "--loglevel", "ERROR"]
    subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + ramp + 120)
    import csv

    stats = prefix.with_name(prefix.name + "_stats.csv")
    if not stats.exists():
        raise BenchError(f"Locust wrote no statistics for {server.peer.name} at {rate}/s")
    with stats.open() as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return {"offered_per_s": round(rate, 1),
            "achieved_per_s": round(float(row["Requests/s"]), 1),
            "p50_ms": float(row["50%"]), "p99_ms": float(row["99%"]),
            "errors": int(row["Failure Count"])}


def bench_server(peer: Peer, model: ModelFiles, texts: list[str], config: BenchConfig,
                 workdir: Path, locust: Path | None) -> dict:
    python = peer.ensure_env(config.envs, log=lambda m: print("  " + m, flush=True))
    server = start(peer, python, model, config, workdir)
    print(f"  ready after {server.startup_seconds:.1f} s", flush=True)
    script = workdir / "post.lua"
    script.write_text(WRK_LUA)
    report: dict = {"title": peer.title, "startup_seconds": round(server.startup_seconds, 1),
                    "versions": peer.versions(python), "closed_loop": [], "open_loop": []}
    try:
        report["idle_rss_mb"] = round(server.watch.rss() / 2**20)
        for n in config.texts_per_request:
            bodies = workdir / f"bodies-{peer.name}-{n}.txt"
            chunks = [texts[i:i + n] for i in range(0, len(texts) - n + 1, n)]
            bodies.write_bytes(b"\n".join(peer.body(c) for c in chunks) + b"\n")
            wrk(server, bodies, script, 8, config.warmup)  # warm-up, not recorded
            levels = [*config.concurrency]
            if 1 in levels and n == 1:
                levels.append(1)  # the lone client again, right after the heavy runs
            for i, c in enumerate(levels):
                server.watch.wait_idle()  # the previous level's queued requests answered first
                row = closed_loop(server, bodies, script, c, config.duration, n)
                row["after_burst"] = i == len(levels) - 1 and i > 0 and c == 1 and n == 1
                report["closed_loop"].append(row)
                print(f"  {n:>2} text(s) x {c:>3} clients{' (after the burst)' if row['after_burst'] else ''}: "
                      f"{row['requests_per_s']} req/s, p50 {row['p50_ms']:.1f} ms, p99 "
                      f"{row['p99_ms']:.1f} ms, errors {row['errors']}, "
                      f"{row['cpu_s_per_1000']} CPU s/1000"
                      + (f", {row['mean_batch_texts']} texts per batch" if "mean_batch_texts" in row else ""),
                      flush=True)
        if locust is not None and config.sweep_fractions:
            bodies = workdir / f"bodies-{peer.name}-1.txt"
            peak = max((r["requests_per_s"] for r in report["closed_loop"]
                        if r["texts_per_request"] == 1), default=0)
            for fraction in config.sweep_fractions:
                server.watch.wait_idle()
                row = open_loop(server, bodies, workdir, fraction * peak, config.sweep_duration,
                                locust)
                row["fraction"] = fraction
                report["open_loop"].append(row)
                print(f"  open loop {row['offered_per_s']}/s: achieved {row['achieved_per_s']}/s, "
                      f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, errors {row['errors']}",
                      flush=True)
        report["peak_rss_mb"] = round(server.watch.peak_rss / 2**20)
        report["largest_process_rss_mb"] = round(server.watch.largest_process_rss() / 2**20)
    finally:
        server.watch.stop()
        stop_process(server.proc)
    return report


def run_bench(config: BenchConfig) -> dict:
    """Every server of ``config.servers`` measured one after the other; writes the reports."""
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: apt-get install wrk")
    unknown = [s for s in config.servers if s not in PEERS]
    if unknown:
        raise BenchError(f"unknown servers {unknown}; known: {list(PEERS)}")
    texts, source = read_texts(config)
    model = ModelFiles.default()
    locust = locust_python(config) if config.sweep_fractions else None
    results: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version()},
        "texts": source, "n_texts": len(texts), "model": str(model.bundle),
        "checkpoint": str(model.checkpoint), "config": {
            "concurrency": config.concurrency, "texts_per_request": config.texts_per_request,
            "duration_s": config.duration, "sweep_fractions": config.sweep_fractions,
            "sweep_duration_s": config.sweep_duration},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "servers": {},
    }
    with tempfile.TemporaryDirectory(prefix="textcls-bench-") as tmp:
        for name in config.servers:
            print(f"{name}: {PEERS[name].title}", flush=True)
            results["servers"][name] = bench_server(PEERS[name], model, texts, config,
                                                    Path(tmp), locust)
    write_reports(results, config.output)
    return results


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def write_reports(results: dict, output: Path) -> None:
    """bench.json, the plot, and the tables between the markers of benchmarks.md (the rest of
    that file is prose and stays; a missing file or markers: the tables are appended)."""
    (output / "reports").mkdir(parents=True, exist_ok=True)
    (output / "reports" / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, output / "benchmarks.png")
    doc = output / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    block = f"{BEGIN}\n{markdown(results)}{END}"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)
    print(f"wrote {output / 'reports' / 'bench.json'}, {output / 'benchmarks.png'} and the "
          f"tables of {doc}")


def markdown(results: dict) -> str:
    lines = [f"<!-- written by `textcls bench` at {results['started_at']}; do not edit -->",
             f"Texts: {results['texts']} ({results['n_texts']}); model: the default topic model. "
             f"Machine: {results['machine']['cores']} cores, {results['machine']['cpu']}.", "",
             "| server | texts/req | clients | req/s | predictions/s | p50 ms | p95 ms | p99 ms "
             "| errors | CPU s / 1000 pred. | texts per batch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in results["servers"].items():
        for r in s["closed_loop"]:
            clients = f"{r['connections']} (after burst)" if r.get("after_burst") else r["connections"]
            lines.append(f"| {name} | {r['texts_per_request']} | {clients} | {r['requests_per_s']} | "
                         f"{r['predictions_per_s']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {r['errors']} | {r['cpu_s_per_1000']} | "
                         f"{r.get('mean_batch_texts', '')} |")
    lines += ["", "| server | ready after s | idle RSS MB | peak RSS MB (all processes) | "
              "largest process MB |", "| --- | --- | --- | --- | --- |"]
    for name, s in results["servers"].items():
        lines.append(f"| {name} | {s['startup_seconds']} | {s.get('idle_rss_mb')} | "
                     f"{s.get('peak_rss_mb')} | {s.get('largest_process_rss_mb')} |")
    lines += ["", "Open loop (Locust, constant_throughput pacing, 32 users, one text per request):",
              "", "| server | offered/s | achieved/s | p50 ms | p99 ms | errors |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, s in results["servers"].items():
        for r in s["open_loop"]:
            lines.append(f"| {name} | {r['offered_per_s']} | {r['achieved_per_s']} | "
                         f"{r['p50_ms']} | {r['p99_ms']} | {r['errors']} |")
    lines += ["", "Versions:", ""]
    for name, s in results["servers"].items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in s["versions"].items()))
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.8))
    for name, s in results["servers"].items():
        rows = [r for r in s["closed_loop"] if r["texts_per_request"] == 1 and not r.get("after_burst")]
        xs = [r["connections"] for r in rows]
        ax1.plot(xs, [r["requests_per_s"] for r in rows], marker="o", label=name)
        ax2.plot(xs, [r["p99_ms"] for r in rows], marker="o", label=name)
        if s["open_loop"]:
            ax3.plot([r["achieved_per_s"] for r in s["open_loop"]],
                     [r["p99_ms"] for r in s["open_loop"]], marker="o", label=name)
    ax1.set(xscale="log", xlabel="concurrent clients (wrk, one text per request)",
            ylabel="requests/s", title="Throughput")
    ax2.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p99 latency, ms",
            title="Tail latency")
    ax3.set(yscale="log", xlabel="achieved requests/s (Locust, paced)", ylabel="p99 latency, ms",
            title="Latency against offered load")
    for ax in (ax1, ax2, ax3):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Default topic model, AG News texts, {results['machine']['cores']} cores, "
                 "one run", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
