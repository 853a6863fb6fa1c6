"""HTTP load with the outcome of every request: the reliability tests and the soak benchmark.

wrk (bench/http_load.py) measures throughput and latency well, but it only counts errors; the
shutdown and overload checks need to know, request by request, whether it was answered and how:
a 200, a 503 with Retry-After, a connection refused before anything was sent, or a request that
was sent and never answered (dropped or reset). So this drives load with httpx (the HTTP client
the project already uses) on asyncio:

- ``closed_loop``: N clients, each with its own keep-alive connection, sending the next request
  when the previous answer arrives (as wrk does), until told to stop;
- ``open_loop``: requests started at a fixed rate whatever the answers, as independent users
  arrive, for the soak at a fraction of the peak.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import httpx

# outcomes of one request
OK = "ok"  # 2xx
HTTP_ERROR = "http_error"  # an answer with a 4xx or 5xx status
REFUSED = "refused"  # the connection was refused: nothing was sent
DROPPED = "dropped"  # sent, then the connection closed or reset without an answer
TIMEOUT = "timeout"  # no answer within the client's timeout


@dataclass
class Result:
    client: int
    sent_at: float  # time.monotonic() when the request started
    done_at: float
    outcome: str
    status: int | None = None
    error_type: str | None = None  # the "type" of our error shape
    retry_after: str | None = None
    connection_close: bool = False
    detail: str = ""

    @property
    def latency(self) -> float:
        return self.done_at - self.sent_at


def classify(exc: Exception) -> tuple[str, str]:
    """The outcome of a request that raised, and a short description."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.ConnectError):
        # no connection was made (refused, or unreachable), so nothing was sent
        return REFUSED, text
    if isinstance(exc, httpx.TimeoutException):
        return TIMEOUT, text
    # RemoteProtocolError ("Server disconnected without sending a response"), ReadError,
    # WriteError (reset or broken pipe): the request went out and no answer came back
    return DROPPED, text


async def send(client: httpx.AsyncClient, url: str, body: bytes, client_id: int) -> Result:
    sent = time.monotonic()
    try:
        response = await client.post(url, content=body, headers={"content-type": "application/json"})
    except httpx.HTTPError as exc:
        outcome, detail = classify(exc)
        return Result(client_id, sent, time.monotonic(), outcome, detail=detail)
    done = time.monotonic()
    error_type = None
    if response.status_code >= 400:
        try:
            error_type = response.json().get("type")
        except (ValueError, AttributeError):
            error_type = "<not our shape>"
    return Result(
        client_id, sent, done, OK if response.status_code < 400 else HTTP_ERROR,
        status=response.status_code, error_type=error_type,
        retry_after=response.headers.get("retry-after"),
        connection_close=response.headers.get("connection", "").lower() == "close",
    )


def _client(connections: int, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=timeout,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                            # below uvicorn's 5 s keep-alive timeout, so the client never reuses
                            # a connection the server is closing (that race drops the request)
                            keepalive_expiry=2.0),
    )


async def closed_loop(url: str, bodies: Sequence[bytes], clients: int, stop: asyncio.Event, *,
                      timeout: float = 60.0) -> list[Result]:
    """``clients`` closed-loop clients until ``stop`` is set. A client whose connection is
    refused stops: there is nobody left to ask."""
    results: list[Result] = []

    async def one(client_id: int) -> None:
        cycle = itertools.cycle(bodies[client_id % len(bodies):] + bodies[:client_id % len(bodies)])
        async with _client(1, timeout) as client:
            while not stop.is_set():
                result = await send(client, url, next(cycle), client_id)
                results.append(result)
                if result.outcome == REFUSED:
                    return
                if result.outcome != OK:
                    await asyncio.sleep(0.01)

    await asyncio.gather(*(one(i) for i in range(clients)))
    return results


async def open_loop(url: str, bodies: Sequence[bytes], rate: float, duration: float, *,
                    timeout: float = 30.0, max_outstanding: int = 1000) -> list[Result]:
    """Requests started every 1/``rate`` seconds for ``duration`` seconds, answered or not.
    When ``max_outstanding`` requests are unanswered the next start is counted as a client
    timeout instead of piling up without bound (the service is then far past its capacity)."""
    results: list[Result] = []
    tasks: set[asyncio.Task] = set()
    cycle = itertools.cycle(bodies)
    async with _client(max_outstanding, timeout) as client:
        start = time.monotonic()
        for i in itertools.count():
            due = start + i / rate
            if due - start >= duration:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_outstanding:
                now = time.monotonic()
                results.append(Result(-1, now, now, TIMEOUT, detail="client backlog full"))
                continue
            task = asyncio.create_task(send(client, url, next(cycle), i))
            tasks.add(task)
            task.add_done_callback(lambda t: (tasks.discard(t), results.append(t.result())))
        if tasks:
            await asyncio.gather(*tasks)
    return results


def bodies_for(texts: Iterable[str], per_request: int = 1) -> list[bytes]:
    """Request bodies of ``per_request`` texts each."""
    texts = list(texts)
    return [json.dumps({"texts": texts[i:i + per_request]}).encode()
            for i in range(0, len(texts) - per_request + 1, per_request)]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(results: Sequence[Result]) -> dict:
    """Counts by outcome and status, and latency percentiles of the 2xx answers."""
    ok = [r.latency for r in results if r.outcome == OK]
    return {
        "requests": len(results),
        "outcomes": dict(Counter(r.outcome for r in results)),
        "statuses": {str(k): v for k, v in Counter(r.status for r in results if r.status).items()},
        "error_types": dict(Counter(r.error_type for r in results if r.error_type)),
        "p50_ms": round(percentile(ok, 50) * 1000, 1),
        "p99_ms": round(percentile(ok, 99) * 1000, 1),
    }

