"""The HTTP contract in process: every 4xx path answers one JSON shape and the server stays up;
probes and docs; and one round trip through the real engine on the tiny bundles."""

from __future__ import annotations

import json

import pytest
from service_fixtures import (  # noqa: F401  (anyio_backend is a fixture)
    TEST_BENTOML_CONFIG, FakeEngines, fake_prediction, fake_settings, serving, anyio_backend,
)

from service.errors import ErrorType
from service.gate import _ErrorShaper
from service.service import service_for

pytestmark = pytest.mark.anyio

LIMITS = dict(max_texts_per_request=3, max_chars_per_text=20, max_body_bytes=2048)


@pytest.fixture
async def client(tmp_path):
    engines = FakeEngines()
    svc = service_for(fake_settings(tmp_path, overlong="refuse", **LIMITS),
                        engine_factory=engines, bentoml_config=TEST_BENTOML_CONFIG)
    async with serving(svc) as client:
        client.engines = engines
        yield client


def assert_error(response, status: int, type_: str, *phrases: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "type"} and body["type"] == type_, body
    for phrase in phrases:
        assert phrase in body["error"], body


async def still_serving(client) -> None:
    response = await client.post("/sentiment", json={"texts": ["still here"]})
    assert response.status_code == 200
    assert response.json() == [fake_prediction("sentiment", "still here")]


INVALID = [
    pytest.param({"texts": [""]}, "texts[0] is empty", id="empty-text"),
    pytest.param({"texts": ["ok", "   \n"]}, "texts[1] is empty", id="whitespace-text"),
    pytest.param({"texts": []}, "texts is empty", id="no-texts"),
    pytest.param({"texts": [1, "a"]}, "texts[0]: Input should be a valid string", id="number"),
    pytest.param({"texts": ["a", None]}, "texts[1]: Input should be a valid string", id="null"),
    pytest.param({"texts": "just one"}, "texts: Input should be a valid array", id="not-a-list"),
    pytest.param({"text": ["a"]}, "texts is missing", id="missing-field"),
    pytest.param({"texts": ["a"], "lang": "en"}, "lang: Extra inputs", id="extra-field"),
    pytest.param(["a", "b"], "must be a JSON object", id="body-is-a-list"),
    pytest.param({"texts": ["a", "b", "c", "d"]}, "holds 4 texts; at most 3", id="too-many"),
    pytest.param({"texts": ["short", "x" * 21]}, "texts[1] has 21 characters; at most 20",
                 id="too-long-refused"),
]


@pytest.mark.parametrize("body,phrase", INVALID)
async def test_invalid_input_is_422_with_a_message_that_says_what_to_fix(client, body, phrase):
    response = await client.post("/topic", json=body)
    assert_error(response, 422, "invalid_input", phrase)
    assert client.engines.by_task["topic"].calls == []
    await still_serving(client)


@pytest.mark.parametrize("raw,phrase", [
    pytest.param(b'{"texts": ["a",', "not valid JSON", id="truncated-json"),
    pytest.param(b"texts=a", "not valid JSON", id="not-json"),
    pytest.param(b"", "the body is empty", id="empty-body"),
])
async def test_a_body_that_is_not_json_is_400(client, raw, phrase):
    response = await client.post("/sentiment", content=raw,
                                 headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed_request", phrase)
    await still_serving(client)


async def test_an_oversized_body_is_413_whether_declared_or_streamed(client):
    body = json.dumps({"texts": ["x" * 3000]}).encode()
    declared = await client.post("/sentiment", content=body,
                                 headers={"content-type": "application/json"})
    assert_error(declared, 413, "payload_too_large", "at most 2048")

    async def chunks():  # no Content-Length: the gate counts what arrives
        for i in range(0, len(body), 500):
            yield body[i:i + 500]

    streamed = await client.post("/sentiment", content=chunks(),
                                 headers={"content-type": "application/json"})
    assert "content-length" not in streamed.request.headers
    assert_error(streamed, 413, "payload_too_large")
    await still_serving(client)


async def test_other_media_types_are_415_but_curl_default_form_encoding_is_read_as_json(client):
    multipart = await client.post("/sentiment", files={"texts": ("a.txt", b"hello")})
    assert_error(multipart, 415, "unsupported_media_type", "application/json")
    # `curl -d '{"texts": [...]}'` sends application/x-www-form-urlencoded
    curl_like = await client.post("/sentiment", content=b'{"texts": ["a great film", "dull"]}',
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert curl_like.status_code == 200
    assert curl_like.json() == [fake_prediction("sentiment", t) for t in ("a great film", "dull")]


async def test_truncate_policy_cuts_over_long_texts_instead_of_refusing(tmp_path):
    engines = FakeEngines()
    svc = service_for(fake_settings(tmp_path, overlong="truncate", **LIMITS),
                        engine_factory=engines, bentoml_config=TEST_BENTOML_CONFIG)
    async with serving(svc) as client:
        response = await client.post("/sentiment", json={"texts": ["y" * 50, "short"]})
    assert response.status_code == 200
    assert engines.by_task["sentiment"].calls == [["y" * 20, "short"]]
    assert response.json()[0] == fake_prediction("sentiment", "y" * 20)


async def test_probes_docs_and_openapi(client):
    assert (await client.get("/livez")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    docs = await client.get("/docs")
    assert docs.status_code == 307 and docs.headers["location"] == "/"
    spec = (await client.get("/docs.json")).json()
    # (the limits it states are the environment's: tests/service/test_service_serve.py)
    assert {"/sentiment", "/topic", "/explain"} <= set(spec["paths"])
    assert all(e.warmed for e in client.engines.by_task.values())


async def test_error_shaper_turns_a_not_ready_readyz_into_our_shape():
    sent = []

    async def send(message):
        sent.append(message)

    shaper = _ErrorShaper(send, readiness=True)
    await shaper({"type": "http.response.start", "status": 503, "headers": []})
    await shaper({"type": "http.response.body", "body": b"not ready", "more_body": False})
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"]) == {
        "error": "the service is starting: models are loading or warming up",
        "type": ErrorType.NOT_READY.value,
    }


async def test_readyz_is_503_not_ready_until_the_models_are_warm_whatever_bentoml_asks(tmp_path):
    """The gate answers /readyz from the lifecycle: BentoML 1.4.0 never asks __is_ready__."""
    from starlette.testclient import TestClient

    from service.gate import RequestGate
    from service.lifecycle import Lifecycle
    from service.schemas import explain_request_model, request_model

    async def app(scope, receive, send):  # BentoML's own /readyz: always 200
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"\n"})

    settings = fake_settings(tmp_path)
    lifecycle = Lifecycle(1)
    gate = RequestGate(app, settings=settings, request_model=request_model(settings),
                       explain_model=explain_request_model(settings), lifecycle=lifecycle)
    client = TestClient(gate)
    cold = client.get("/readyz")
    assert cold.status_code == 503 and cold.json()["type"] == "not_ready"
    lifecycle.ready = True
    assert client.get("/readyz").status_code == 200
    lifecycle.draining = True
    assert client.get("/readyz").json()["type"] == "shutting_down"


async def test_real_engine_round_trip_on_the_tiny_bundles(tiny_bundles, tmp_path):
    settings = fake_settings(tmp_path)
    settings = settings.model_copy(update={f"{task}_model": str(path)
                                           for task, path in tiny_bundles.items()})
    svc = service_for(settings, bentoml_config=TEST_BENTOML_CONFIG)
    texts = ["a wonderful, moving film", "dull", "Markets rallied as tech shares climbed"]
    async with serving(svc) as client:
        for task in ("sentiment", "topic"):
            response = await client.post(f"/{task}", json={"texts": texts})
            assert response.status_code == 200, response.text
            predictions = response.json()
            assert len(predictions) == len(texts)
            for p in predictions:
                assert p["label"] in p["scores"] and p["score"] == p["scores"][p["label"]]
                assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-5)
            # one text alone gets the same answer as inside the batch: order is kept. The score
            # may move in the third decimal: the served int8 variant picks its activation scale
            # per batch (dynamic quantization); tests/test_engine.py checks fp32 exactly.
            alone = await client.post(f"/{task}", json={"texts": [texts[2]]})
            assert alone.json()[0]["label"] == predictions[2]["label"]
            assert alone.json()[0]["score"] == pytest.approx(predictions[2]["score"], abs=1e-2)
