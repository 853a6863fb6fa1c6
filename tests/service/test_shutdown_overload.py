"""A real `bentoml serve` under load: SIGTERM mid-load drains, overload sheds and recovers.

Load comes from bench/load.py (httpx on asyncio, the outcome of every request). The server runs
the tiny bundles of tests/conftest.py; requests carry many texts so the tiny models are busy.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from bench.load import DROPPED, OK, REFUSED, TIMEOUT, bodies_for, closed_loop, summary
from bench.soak import tree_rss
from bench.shutdown import sigterm_under_load
from processes import free_port, serve_command, serve_env, serving
from train.data import load_labelled
from train.demo_data import demo_path

pytestmark = pytest.mark.reliability

GRACE = 20


def demo_texts(n: int = 2000) -> list[str]:
    texts = load_labelled(demo_path("topic", "train")).texts
    return (texts * (n // len(texts) + 1))[:n]


def drain_figures(log_text: str) -> dict[str, int]:
    """The figures of the worker's `drain: done` log line (service/lifecycle.py)."""
    match = re.search(r"drain: done in ([\d.]+) s: (\d+) request\(s\) in flight at the signal, "
                      r"(\d+) answered while draining, (\d+) new ones refused", log_text)
    assert match, f"no `drain: done` line in the server log:\n{log_text[-3000:]}"
    return {"in_flight": int(match[2]), "answered": int(match[3]), "refused": int(match[4])}


def test_sigterm_mid_load_answers_every_accepted_request_and_refuses_the_rest(tiny_bundles, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    bodies = bodies_for(demo_texts(), per_request=32)
    env = serve_env(TEXTCLS_SHUTDOWN_GRACE_SECONDS=str(GRACE), TEXTCLS_MAX_BATCH_SIZE="64")
    with serving(serve_command(port), f"{url}/readyz", log, env=env, what="bentoml serve") as proc:
        report = asyncio.run(sigterm_under_load(url, proc, bodies, clients=32, wait=GRACE + 10))
        exit_code = proc.wait(timeout=GRACE + 15)
    results, signalled_at, probes = report["results"], report["signalled_at"], report["probes"]
    print(summary(results), probes, f"exit {report['exit_seconds']:.2f} s after SIGTERM")
    text = log.read_text()

    assert not [r for r in results if r.outcome in (DROPPED, TIMEOUT)], (
        "requests sent and never answered:\n"
        + "\n".join(r.detail for r in results if r.outcome in (DROPPED, TIMEOUT))[:3000])
    before = [r for r in results if r.done_at < signalled_at]
    assert before and all(r.status == 200 for r in before), summary(before)
    for r in results:
        assert r.outcome in (OK, REFUSED) or (r.status == 503 and r.error_type == "shutting_down"
                                              and r.retry_after == "1"), r
    assert any(r.outcome == REFUSED or r.status == 503 for r in results), "no request met the shutdown"

    figures = drain_figures(text)
    answered_after = [r for r in results if r.status == 200 and r.done_at >= signalled_at]
    assert figures["in_flight"] > 0, "nothing was in flight at SIGTERM: the test proved nothing"
    # every request the worker had accepted was answered, and with a 200 the clients saw
    assert figures["answered"] >= figures["in_flight"]
    assert len(answered_after) >= figures["answered"]
    assert "still in flight after" not in text

    assert probes["readyz_after_signal"] == 503, probes
    assert probes["new_connection"] in ("refused", 503), probes
    assert report["exit_seconds"] < GRACE, report["exit_seconds"]
    assert exit_code == 0, text[-3000:]


def test_past_capacity_it_sheds_quickly_with_retry_after_stays_bounded_and_recovers(tiny_bundles, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bodies = bodies_for(demo_texts(), per_request=32)
    env = serve_env(TEXTCLS_MAX_CONCURRENT_REQUESTS="16")
    with serving(serve_command(port), f"{url}/readyz", tmp_path / "serve.log", env=env,
                 what="bentoml serve") as proc:
        report = asyncio.run(_overload(url, proc.pid, bodies, clients=128, seconds=8))
    results, rss = report["results"], report["rss"]
    print(summary(results), {k: round(v / 2**20, 1) for k, v in rss.items()},
          report["recovered_after_s"])

    ok = [r for r in results if r.status == 200]
    shed = [r for r in results if r.status == 503]
    assert ok and shed, summary(results)
    assert all(r.outcome == OK or r.status == 503 for r in results), summary(results)
    assert all(r.error_type == "overloaded" and r.retry_after == "1" for r in shed)
    # quickly: refused at the door, not after waiting in a queue for a batch (ratios seen here:
    # 0.1 to 0.2 on 2 busy cores; half leaves room for a noisy machine)
    median = lambda rs: sorted(r.latency for r in rs)[len(rs) // 2]  # noqa: E731
    assert median(shed) < median(ok) / 2, (median(shed), median(ok))
    # bounded: the second half of the overload did not grow the server's memory
    assert rss["end"] < rss["half"] * 1.10, rss
    # recovered by itself once the load dropped
    assert report["recovered_after_s"] is not None and report["recovered_after_s"] < 5
    assert report["after"] == [200] * 20


async def _overload(url: str, pid: int, bodies: list[bytes], clients: int, seconds: float) -> dict:
    stop = asyncio.Event()
    load = asyncio.create_task(closed_loop(f"{url}/topic", bodies, clients=clients, stop=stop))
    rss = {"before": tree_rss(pid)}
    await asyncio.sleep(seconds / 2)
    rss["half"] = tree_rss(pid)
    await asyncio.sleep(seconds / 2)
    rss["end"] = tree_rss(pid)
    stop.set()
    results = await load
    stopped = time.monotonic()
    recovered = None
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while time.monotonic() - stopped < 10:
            if (await client.post("/topic", content=bodies[0],
                                  headers={"content-type": "application/json"})).status_code == 200:
                recovered = time.monotonic() - stopped
                break
            await asyncio.sleep(0.1)
        after = [(await client.post("/topic", content=b, headers={"content-type": "application/json"})).status_code
                 for b in bodies[:20]]
    return {"results": results, "rss": rss, "recovered_after_s": recovered, "after": after}
