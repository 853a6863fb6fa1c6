"""Adaptive batching through BentoML's real dispatcher, in process, with a fake engine.

What BentoML owns (the cork dispatcher, batch splitting) is exercised, not mocked: the fake
engine only records which texts each model call received.
"""

from __future__ import annotations

import asyncio

import pytest
from service_fixtures import (  # noqa: F401  (anyio_backend is a fixture)
    TEST_BENTOML_CONFIG, FakeEngines, fake_prediction, fake_settings, serving, anyio_backend,
)

from service.service import service_for

pytestmark = pytest.mark.anyio


def make(tmp_path, engines, **settings):
    return service_for(fake_settings(tmp_path, **settings), engine_factory=engines,
                         bentoml_config=TEST_BENTOML_CONFIG)


async def test_concurrent_requests_share_model_calls_and_each_caller_gets_its_own_answers(tmp_path):
    engines = FakeEngines(delay=0.05)  # slow enough that requests queue behind a running batch
    async with serving(make(tmp_path, engines)) as client:
        # distinct lengths: the fake's answer depends on the text, so mix-ups would show
        bodies = [{"texts": [f"caller {i} " + "x" * i, f"second of {i}" + "y" * (2 * i)]}
                  for i in range(24)]
        responses = await asyncio.gather(*(client.post("/sentiment", json=b) for b in bodies))

    calls = engines.by_task["sentiment"].calls
    assert [r.status_code for r in responses] == [200] * 24
    for body, response in zip(bodies, responses, strict=True):
        assert response.json() == [fake_prediction("sentiment", t) for t in body["texts"]]
    assert sum(len(c) for c in calls) == 48  # every text went through the model exactly once
    assert len(calls) < len(bodies), f"no batching: {len(calls)} model calls for 24 requests"
    assert max(len(c) for c in calls) > 2  # some call held texts of several requests


async def test_a_batch_larger_than_max_batch_size_is_split_and_answers_stay_in_order(tmp_path):
    engines = FakeEngines()
    svc = make(tmp_path, engines, max_batch_size=4, max_texts_per_request=10)
    async with serving(svc) as client:
        texts = [f"text number {i}" + "z" * i for i in range(10)]
        response = await client.post("/topic", json={"texts": texts})
    assert response.status_code == 200
    assert response.json() == [fake_prediction("topic", t) for t in texts]
    assert max(len(c) for c in engines.by_task["topic"].calls) <= 4


@pytest.mark.reliability
async def test_when_a_batch_fails_every_caller_in_it_gets_the_error_and_others_do_not(tmp_path):
    engines = FakeEngines(fail_on="POISON")
    async with serving(make(tmp_path, engines)) as client:
        engine = engines.by_task["sentiment"]
        engine.released.clear()  # hold the first call so the next requests queue into one batch
        first = asyncio.create_task(client.post("/sentiment", json={"texts": ["first one"]}))
        await asyncio.to_thread(engine.entered.wait, 10)
        queued = [asyncio.create_task(client.post("/sentiment", json={"texts": [t]}))
                  for t in ("a fine day", "POISON pill", "another text", "last one")]
        await asyncio.sleep(0.3)  # let them reach the dispatcher's queue
        engine.released.set()
        first, *queued = [await r for r in (first, *queued)]
        after = await client.post("/sentiment", json={"texts": ["still serving"]})

    # the failing call held all four queued requests and nothing else
    failed_call = next(c for c in engine.calls if "POISON pill" in c)
    assert sorted(failed_call) == sorted(["a fine day", "POISON pill", "another text", "last one"])
    assert first.status_code == 200
    for response in queued:
        assert response.status_code == 500
        assert response.json() == {
            "error": "internal error while classifying; the server log has the details",
            "type": "internal",
        }
        assert "secret" not in response.text and "exploded" not in response.text
    assert after.status_code == 200


@pytest.mark.reliability
async def test_a_batch_that_hangs_is_answered_504_in_our_shape_and_the_next_batch_is_served(tmp_path):
    engines = FakeEngines()
    async with serving(make(tmp_path, engines, batch_timeout_seconds=0.5)) as client:
        engine = engines.by_task["topic"]
        engine.released.clear()  # the model call hangs until the test lets it go
        hung = await client.post("/topic", json={"texts": ["stuck", "with it"]})
        engine.released.set()  # (the abandoned call finishes later, unread)
        await asyncio.sleep(0)
        after = await client.post("/topic", json={"texts": ["next"]})
        other = await client.post("/sentiment", json={"texts": ["other task"]})
    assert hung.status_code == 504
    assert hung.json() == {"error": "the model took too long on the batch holding this request; "
                                    "retry, or send fewer or shorter texts", "type": "timeout"}
    assert after.status_code == 200 and after.json() == [fake_prediction("topic", "next")]
    assert other.status_code == 200


async def test_an_invalid_request_is_refused_alone_and_never_reaches_the_batch(tmp_path):
    engines = FakeEngines(delay=0.05)
    async with serving(make(tmp_path, engines)) as client:
        good = [{"texts": [f"good {i}"]} for i in range(6)]
        bad = {"texts": ["fine", ""]}
        responses = await asyncio.gather(
            *(client.post("/topic", json=b) for b in [*good[:3], bad, *good[3:]])
        )
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 200, 422, 200, 200, 200]
    seen = [t for call in engines.by_task["topic"].calls for t in call]
    assert "fine" not in seen and sorted(seen) == sorted(b["texts"][0] for b in good)


@pytest.mark.reliability
async def test_the_dispatcher_sheds_with_503_in_our_shape_when_the_bound_is_too_tight(tmp_path):
    # 10 ms bound, 100 ms model calls: BentoML's dispatcher cancels queued requests it predicts
    # will miss the bound (dispatcher.py:305-311); the gate turns its 503 into ours
    engines = FakeEngines(delay=0.1)
    async with serving(make(tmp_path, engines, max_latency_ms=10)) as client:
        engine = engines.by_task["sentiment"]
        first = asyncio.create_task(client.post("/sentiment", json={"texts": ["first"]}))
        await asyncio.to_thread(engine.entered.wait, 10)  # a batch is running: the rest queue
        responses = await asyncio.gather(
            *(client.post("/sentiment", json={"texts": [f"t{i}"]}) for i in range(30))
        )
        await first
    shed = [r for r in responses if r.status_code == 503]
    assert shed, "expected the dispatcher to shed some requests"
    assert shed[0].json() == {"error": "the service is overloaded; retry after a short pause",
                              "type": "overloaded"}
    assert shed[0].headers["retry-after"] == "1"
    assert all(r.status_code in (200, 503) for r in responses)


@pytest.mark.reliability
async def test_requests_beyond_the_in_flight_cap_are_refused_at_once(tmp_path):
    engines = FakeEngines()
    async with serving(make(tmp_path, engines, max_concurrent_requests=2)) as client:
        engine = engines.by_task["topic"]
        engine.released.clear()
        held = [asyncio.create_task(client.post("/topic", json={"texts": [f"held {i}"]}))
                for i in range(2)]
        await asyncio.to_thread(engine.entered.wait, 10)
        await asyncio.sleep(0.1)
        refused = await client.post("/topic", json={"texts": ["one too many"]})
        engine.released.set()
        held = [await h for h in held]
    assert refused.status_code == 503
    assert refused.json()["type"] == "overloaded"
    assert [h.status_code for h in held] == [200, 200]


async def test_batches_record_queue_time_batch_size_tokens_and_labels(tmp_path):
    from prometheus_client import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    def snapshot():
        return {
            "queue": value("textcls_queue_duration_seconds_count", task="sentiment"),
            "batch_texts": value("textcls_batch_size_sum", task="sentiment"),
            "batches": value("textcls_batch_size_count", task="sentiment"),
            "requests": value("textcls_request_duration_seconds_count", task="sentiment"),
            "positive": value("textcls_predictions_total", task="sentiment", label="positive"),
            "errors": value("textcls_request_errors_total", task="sentiment", type="invalid_input"),
        }

    before = snapshot()
    engines = FakeEngines(delay=0.02)
    async with serving(make(tmp_path, engines)) as client:
        # odd lengths -> "positive" from the fake
        await asyncio.gather(*(client.post("/sentiment", json={"texts": ["abc", "abcde"]})
                               for _ in range(5)))
        await client.post("/sentiment", json={"texts": [7]})
    calls = engines.by_task["sentiment"].calls
    after = snapshot()
    assert {k: after[k] - before[k] for k in after} == {
        "queue": 5, "batch_texts": 10, "batches": len(calls), "requests": 5, "positive": 10,
        "errors": 1,
    }
    assert value("textcls_model_info", task="sentiment", version="fake0001", variant="fake",
                 provider="CPUExecutionProvider") == 1
