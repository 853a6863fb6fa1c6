"""A real `bentoml serve` process on the tiny bundles: readiness, concurrent requests, errors at
the real server, and the metric names on BentoML's /metrics (multiprocess mode)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from processes import free_port, serve_command, serve_env, serving
from engine.bundle import Bundle
from service.metrics import CATALOGUE


@pytest.fixture(scope="module")
def server(tiny_bundles, tmp_path_factory):
    """`bentoml serve` of the project on a free port; the store (BENTOML_HOME) holds the tiny
    `sentiment` and `topic` bundles, which the default settings name."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(serve_command(port), f"{url}/readyz", log, env=serve_env(TEXTCLS_MAX_BODY_BYTES="65536",
                                                                             TEXTCLS_MAX_TEXTS_PER_REQUEST="48",
                                                                             TEXTCLS_OVERLONG="refuse"),
                 what="bentoml serve"):
        yield url, log


def test_serves_concurrent_requests_one_prediction_per_text_in_order(server, tiny_bundles):
    url, log = server
    labels = {task: set(Bundle.load(path).labels) for task, path in tiny_bundles.items()}
    jobs = [(task, [f"request {i} text {j} " + "word " * (i + j) for j in range(1 + i % 3)])
            for i in range(24) for task in ("sentiment", "topic")]

    def call(job):
        task, texts = job
        return httpx.post(f"{url}/{task}", json={"texts": texts}, timeout=60)

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(call, jobs))
    for (task, texts), response in zip(jobs, responses, strict=True):
        assert response.status_code == 200, response.text
        predictions = response.json()
        assert len(predictions) == len(texts)
        for p in predictions:
            assert p["label"] in labels[task] and set(p["scores"]) == labels[task]
    # the same text answers the same whether it came alone or in someone's batch
    alone = httpx.post(f"{url}/topic", json={"texts": [jobs[5][1][0]]}, timeout=30).json()[0]
    assert alone["label"] == responses[5].json()[0]["label"]
    assert "variant" in log.read_text() and "CPUExecutionProvider" in log.read_text()


def test_errors_at_the_real_server_keep_the_shape_and_the_server_up(server):
    url, _ = server
    invalid = httpx.post(f"{url}/sentiment", json={"texts": ["fine", ""]}, timeout=30)
    assert invalid.status_code == 422 and invalid.json()["type"] == "invalid_input"
    huge = httpx.post(f"{url}/sentiment", json={"texts": ["x" * 100_000]}, timeout=30)
    assert huge.status_code == 413 and huge.json()["type"] == "payload_too_large"
    # what the README shows: curl -d without a Content-Type
    curl_like = httpx.post(f"{url}/sentiment", content=b'{"texts": ["a great film", "dull"]}',
                           headers={"content-type": "application/x-www-form-urlencoded"},
                           timeout=30)
    assert curl_like.status_code == 200 and len(curl_like.json()) == 2
    assert httpx.get(f"{url}/livez", timeout=10).status_code == 200
    assert httpx.get(f"{url}/docs", timeout=10).status_code == 307
    spec = httpx.get(f"{url}/docs.json", timeout=10).json()
    assert {"/sentiment", "/topic"} <= set(spec["paths"])
    for path in ("/sentiment", "/topic"):  # the limits the environment set, published
        request = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        texts = request["schema"]["properties"]["texts"]
        assert texts["maxItems"] == 48 and texts["items"]["maxLength"] == 10_000


def test_metrics_carry_every_textcls_metric_labelled_by_task(server):
    url, _ = server
    httpx.post(f"{url}/topic", json={"texts": ["markets rallied", "the match ended 2-1"]},
               timeout=30)
    httpx.post(f"{url}/topic", json={"texts": 5}, timeout=30)
    text = httpx.get(f"{url}/metrics", timeout=30).text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    names = {s.name for s in samples}
    for name, (kind, _, _) in CATALOGUE.items():
        expected = f"textcls_{name}" + ("_bucket" if kind == "histogram" else "")
        assert expected in names, f"{expected} missing from /metrics"
    assert "bentoml_service_request_total" in names  # BentoML's own are still there
    info = [s for s in samples if s.name == "textcls_model_info"]
    assert {s.labels["task"] for s in info} == {"sentiment", "topic"}
    assert all(s.labels["provider"] == "CPUExecutionProvider" and s.value == 1 for s in info)
    errors = [s for s in samples if s.name == "textcls_request_errors_total"]
    assert any(s.labels == {"task": "topic", "type": "invalid_input"} for s in errors)
    batched = sum(s.value for s in samples
                  if s.name == "textcls_batch_size_sum" and s.labels["task"] == "topic")
    assert batched >= 2
