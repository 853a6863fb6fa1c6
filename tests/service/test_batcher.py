"""Our queue (service/batcher.py) on its own: when batches start, what they hold, who gets which
answer or error. A fake ``process`` takes a fixed time, so a held request shows as latency."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.batcher import Batcher, Overloaded

pytestmark = pytest.mark.anyio

BATCH_SECONDS = 0.05


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Model:
    """Records every batch; answers each text with its upper case after ``delay``; a text with
    POISON makes its batch fail; ``gate`` (an Event) holds a batch until set."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def __call__(self, texts: list[str]) -> list[str]:
        self.batches.append(list(texts))
        self.started.set()
        await self.gate.wait()
        await asyncio.sleep(self.delay)
        if any("POISON" in t for t in texts):
            raise RuntimeError("the batch failed")
        return [t.upper() for t in texts]


def batcher(model: Model, **kwargs) -> Batcher:
    options = dict(max_batch_size=8, max_latency=5.0)
    return Batcher(model, **{**options, **kwargs})


async def behind_a_running_batch(model: Model, queue: Batcher, requests: list[list[str]],
                                 hold: float = 0.01):
    """A first request whose batch the model holds while ``requests`` queue behind it, ``hold``
    seconds; then the model goes on. Returns the first request's task and the others'."""
    model.gate.clear()
    first = asyncio.create_task(queue.submit(["first"]))
    await model.started.wait()
    tasks = [asyncio.create_task(queue.submit(texts)) for texts in requests]
    await asyncio.sleep(hold)
    model.gate.set()
    return first, tasks


async def test_a_lone_request_starts_at_once_also_right_after_a_burst():
    model = Model(delay=BATCH_SECONDS)
    queue = batcher(model)

    async def timed(text: str) -> float:
        started = time.perf_counter()
        assert await queue.submit([text]) == [text.upper()]
        return time.perf_counter() - started - BATCH_SECONDS

    fresh = await timed("fresh")
    deadline = time.perf_counter() + 1.0

    async def busy(i: int) -> None:
        while time.perf_counter() < deadline:
            await timed(f"burst {i}")

    await asyncio.gather(*(busy(i) for i in range(32)))
    after = [await timed(f"lone {i}") for i in range(5)]
    await queue.close()
    assert fresh < 0.03 and max(after) < 0.03, (fresh, after)
    assert max(len(b) for b in model.batches) == 8  # the burst filled batches


async def test_requests_queued_behind_a_running_batch_go_together_in_the_next_one():
    model = Model()
    queue = batcher(model, max_batch_size=64)
    first, rest = await behind_a_running_batch(
        model, queue, [[f"queued {i}", f"and {i}"] for i in range(10)])
    assert await first == ["FIRST"]
    assert [await r for r in rest] == [[f"QUEUED {i}", f"AND {i}"] for i in range(10)]
    await queue.close()
    assert model.batches[0] == ["first"]
    assert model.batches[1] == [t for i in range(10) for t in (f"queued {i}", f"and {i}")]
    assert len(model.batches) == 2


async def test_a_request_larger_than_a_batch_is_split_and_answered_in_order():
    model = Model()
    queue = batcher(model, max_batch_size=4)
    texts = [f"t{i}" for i in range(10)]
    assert await queue.submit(texts) == [t.upper() for t in texts]
    await queue.close()
    assert [len(b) for b in model.batches] == [4, 4, 2]


async def test_a_batch_never_holds_more_than_max_batch_size_texts_nor_splits_an_entry():
    model = Model()
    queue = batcher(model, max_batch_size=5)
    sizes = [3, 2, 2, 1, 4]
    first, tasks = await behind_a_running_batch(
        model, queue, [[f"r{i}-{j}" for j in range(n)] for i, n in enumerate(sizes)])
    await asyncio.gather(first, *tasks)
    await queue.close()
    # whole requests in arrival order: 3+2 | 2+1 (the next 4 would not fit) | 4
    assert [len(b) for b in model.batches[1:]] == [5, 3, 4]


async def test_max_queue_delay_lets_an_idle_model_wait_for_companions():
    model = Model()
    queue = batcher(model, max_queue_delay=0.2)

    async def later(text: str, after: float):
        await asyncio.sleep(after)
        return await queue.submit([text])

    await asyncio.gather(later("early", 0), later("late", 0.05))
    await queue.close()
    assert model.batches == [["early", "late"]]


async def test_max_queue_delay_ends_early_when_a_full_batch_is_queued():
    model = Model()
    queue = batcher(model, max_batch_size=2, max_queue_delay=5.0)
    started = time.perf_counter()
    await asyncio.gather(queue.submit(["a"]), queue.submit(["b"]))
    await queue.close()
    assert time.perf_counter() - started < 1.0
    assert model.batches == [["a", "b"]]


async def test_an_entry_that_waited_past_max_latency_is_shed_and_the_rest_are_served():
    model = Model()
    queue = batcher(model, max_latency=0.1)
    first, (late,) = await behind_a_running_batch(model, queue, [["waits too long"]], hold=0.2)
    assert await first == ["FIRST"]
    with pytest.raises(Overloaded, match="waited"):
        await late
    assert await queue.submit(["after"]) == ["AFTER"]
    await queue.close()
    assert ["waits too long"] not in model.batches
    assert queue.shed == 1


async def test_a_failing_batch_fails_only_its_own_requests():
    model = Model()
    queue = batcher(model)
    first, same_batch = await behind_a_running_batch(
        model, queue, [[t] for t in ("fine", "POISON", "also fine")])
    assert await first == ["FIRST"]
    for task in same_batch:
        with pytest.raises(RuntimeError, match="the batch failed"):
            await task
    assert await queue.submit(["next"]) == ["NEXT"]
    await queue.close()


async def test_a_process_that_answers_the_wrong_number_of_results_fails_its_batch():
    async def short(texts):
        return texts[:-1]

    queue = Batcher(short, max_batch_size=8, max_latency=5.0)
    with pytest.raises(RuntimeError, match="a batch of 2 texts answered 1 results"):
        await queue.submit(["a", "b"])
    await queue.close()


async def test_the_next_batch_reaches_the_model_before_the_previous_answers_go_out():
    order: list[str] = []
    gate = asyncio.Event()

    async def process(texts):
        order.append(f"start {texts[0]}")
        if texts[0] == "first":
            await gate.wait()
        return texts

    queue = Batcher(process, max_batch_size=8, max_latency=5.0)

    async def call(text):
        await queue.submit([text])
        order.append(f"answered {text}")

    first = asyncio.create_task(call("first"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(call("second"))
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(first, second)
    await queue.close()
    assert order.index("start second") < order.index("answered first")


async def test_queue_waits_are_reported_once_per_request_when_its_batch_starts():
    seen = []
    model = Model()
    queue = batcher(model, max_batch_size=2,
                    on_batch_start=lambda entries, now: seen.append(
                        [(e.request, e.first, e.waited(now) >= 0) for e in entries]))
    await queue.submit(["a", "b", "c"])
    await queue.close()
    assert seen == [[(0, True, True)], [(0, False, True)]]


async def test_close_cancels_what_is_still_queued():
    model = Model()
    model.gate.clear()
    queue = batcher(model)
    running = asyncio.create_task(queue.submit(["running"]))
    await model.started.wait()
    queued = asyncio.create_task(queue.submit(["queued"]))
    await asyncio.sleep(0.01)
    await queue.close()
    for task in (running, queued):
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_failing_batch_start_hook_costs_no_batch():
    def broken(entries, now):
        raise RuntimeError("metrics down")

    queue = batcher(Model(), on_batch_start=broken)
    assert await queue.submit(["a"]) == ["A"]
    assert await queue.submit(["b"]) == ["B"]
    await queue.close()
