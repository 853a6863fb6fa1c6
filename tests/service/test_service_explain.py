"""POST /explain in process: explanations from the explain variant, errors in the one shape."""

from __future__ import annotations

import pytest

from service.service import service_for
from service_fixtures import TEST_BENTOML_CONFIG, FakeEngines, fake_settings, serving

pytestmark = pytest.mark.anyio

TEXTS = ["a wonderful, moving film", "dull and far too long", "Markets rallied as tech shares climbed"]


def tiny_service(tiny_bundles, tmp_path, **kwargs):
    settings = fake_settings(tmp_path).model_copy(
        update={f"{task}_model": str(path) for task, path in tiny_bundles.items()})
    return service_for(settings, bentoml_config=TEST_BENTOML_CONFIG, **kwargs)


async def test_explanations_match_the_served_labels(tiny_bundles, tmp_path):
    async with serving(tiny_service(tiny_bundles, tmp_path)) as client:
        for task in ("sentiment", "topic"):
            served = (await client.post(f"/{task}", json={"texts": TEXTS})).json()
            for text, prediction in zip(TEXTS, served):
                response = await client.post("/explain", json={"task": task, "text": text})
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["method"] == "attention-rollout"
                assert len(body["tokens"]) == len(body["weights"]) >= 3
                assert sum(body["weights"]) == pytest.approx(1.0, abs=1e-5)
                assert min(body["weights"]) >= 0 and body["weights"][0] == 0.0  # [CLS] / <s>
                # the explain graph (fp32) and the served CPU variant agree on the label
                assert body["label"] == prediction["label"], (task, text)


async def test_explain_says_when_the_text_was_cut(tiny_bundles, tmp_path):
    from prometheus_client import REGISTRY

    def counted() -> float:  # textcls_truncated_texts_total for sentiment, so far in this process
        return REGISTRY.get_sample_value("textcls_truncated_texts_total", {"task": "sentiment"}) or 0.0

    settings = fake_settings(tmp_path, max_chars_per_text=100).model_copy(
        update={f"{task}_model": str(path) for task, path in tiny_bundles.items()})
    async with serving(service_for(settings, bentoml_config=TEST_BENTOML_CONFIG)) as client:
        async def explain(text: str) -> dict:
            response = await client.post("/explain", json={"task": "sentiment", "text": text})
            assert response.status_code == 200, response.text
            return response.json()

        before = counted()
        assert (await explain("a wonderful film"))["truncated"] is False
        assert counted() == before  # an uncut text is not counted
        # over the character limit: cut to 100 characters before the tokenizer sees it
        long = "a wonderful film " * 10
        clipped = await explain(long)
        assert clipped["truncated"] is True
        assert "".join(clipped["tokens"][1:-1]) == long[:100].replace(" ", "")
        # within the characters, over the model's max_length (64 tokens): cut by the tokenizer
        many = await explain("." * 90)  # one token per full stop
        assert many["truncated"] is True and len(many["tokens"]) == 64
        assert counted() == before + 2  # both cuts counted, as for predictions


@pytest.mark.parametrize("payload, needle", [
    ({"task": "sentiment", "text": "fine", "layer": 99}, "layer 99 does not exist"),
    ({"task": "sentiment", "text": "fine", "head": 99}, "head 99 does not exist"),
    ({"task": "weather", "text": "fine"}, "'sentiment' or 'topic'"),
    ({"task": "sentiment", "text": "  "}, "text is empty"),
    ({"task": "sentiment"}, "text is missing"),
    ({"task": "sentiment", "text": "fine", "extra": 1}, "extra"),
])
async def test_bad_explain_requests_get_422_and_the_server_stays_up(tiny_bundles, tmp_path, payload, needle):
    async with serving(tiny_service(tiny_bundles, tmp_path)) as client:
        response = await client.post("/explain", json=payload)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["type"] == "invalid_input" and needle in body["error"], body
        assert set(body) == {"error", "type"}
        ok = await client.post("/explain", json={"task": "topic", "text": "Stocks fell"})
        assert ok.status_code == 200


async def test_a_bundle_without_the_explain_variant_says_how_to_fix_it(tiny_bundles, tmp_path):
    svc = tiny_service(tiny_bundles, tmp_path, explainer_factory=lambda engine, settings: None)
    async with serving(svc) as client:
        response = await client.post("/explain", json={"task": "topic", "text": "Stocks fell"})
        assert response.status_code == 422
        assert "no explain variant" in response.json()["error"]
        assert "textcls export" in response.json()["error"]
        # predictions are unaffected
        assert (await client.post("/topic", json={"texts": ["Stocks fell"]})).status_code == 200


async def test_engines_without_a_bundle_get_no_explainer(tmp_path):
    svc = service_for(fake_settings(tmp_path), engine_factory=FakeEngines(),
                        bentoml_config=TEST_BENTOML_CONFIG)
    async with serving(svc) as client:
        response = await client.post("/explain", json={"task": "sentiment", "text": "fine"})
        assert response.status_code == 422 and "no explain variant" in response.json()["error"]
