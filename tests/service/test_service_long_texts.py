"""TEXTCLS_LONG_TEXTS and TEXTCLS_MAX_WINDOWS in process, on the tiny bundles (max_length 64): the
override reaches the engines and /explain, the start-up log names the rule, and the long-text
counters count what the engine read."""

from __future__ import annotations

import contextlib
import logging
import os

import pytest
from service_fixtures import (  # noqa: F401  (anyio_backend is a fixture)
    TEST_BENTOML_CONFIG, FakeEngines, anyio_backend, fake_settings, serving,
)

from engine.bundle import Bundle
from service.models import make_engine
from service.service import service_for

# The tiny BERT's tokenizer splits punctuation: one token per full stop, plus [CLS] and [SEP].
SHORT = "a wonderful film"
FULLY_READ = ". " * 100  # 100 content tokens: 3 windows of 62 (30 apart) cover them under chunk
GAPPED = ". " * 200  # 200: 6 windows needed, 3 spread over the text leave gaps


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("TEXTCLS_"):
            monkeypatch.delenv(name)


def tiny_settings(tiny_bundles, tmp_path, **overrides):
    return fake_settings(tmp_path, **overrides).model_copy(
        update={f"{task}_model": str(path) for task, path in tiny_bundles.items()})


class Recorder:
    """The real engine factory, keeping what it made by task."""

    def __init__(self) -> None:
        self.by_task = {}

    def __call__(self, task, ref, settings):
        self.by_task[task] = make_engine(task, ref, settings)
        return self.by_task[task]


@contextlib.contextmanager
def start_up_log(caplog):
    """The service's start-up messages (logger bentoml.textcls, whatever BentoML did to its
    propagation), as a list filled while the block runs."""
    logger = logging.getLogger("bentoml.textcls")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caplog.handler)
    messages: list[str] = []
    try:
        yield messages
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
        messages.extend(dict.fromkeys(r.getMessage() for r in caplog.records))


def counter(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_without_settings_the_engine_reads_by_the_bundles_rule(tiny_bundles, tmp_path):
    settings = tiny_settings(tiny_bundles, tmp_path)
    engine = make_engine("sentiment", str(tiny_bundles["sentiment"]), settings)
    assert engine.long_texts == Bundle.load(tiny_bundles["sentiment"]).long_texts


def test_the_settings_override_the_bundles_rule_and_keep_the_rest(tiny_bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTCLS_LONG_TEXTS", "chunk")
    monkeypatch.setenv("TEXTCLS_MAX_WINDOWS", "3")
    settings = tiny_settings(tiny_bundles, tmp_path)
    assert (settings.long_texts, settings.max_windows) == ("chunk", 3)
    recorded = Bundle.load(tiny_bundles["sentiment"]).long_texts
    engine = make_engine("sentiment", str(tiny_bundles["sentiment"]), settings)
    assert (engine.long_texts.rule, engine.long_texts.max_windows) == ("chunk", 3)
    assert (engine.long_texts.overlap, engine.long_texts.head) == (recorded.overlap, recorded.head)
    result = engine.run([SHORT, FULLY_READ])
    assert result.windows[0] == 1 and result.windows[1] > 1


@pytest.mark.anyio
async def test_the_served_engines_and_explain_read_by_the_override_and_the_log_says_so(
        tiny_bundles, tmp_path, caplog):
    engines = Recorder()
    settings = tiny_settings(tiny_bundles, tmp_path, long_texts="chunk", max_windows=3)
    svc = service_for(settings, engine_factory=engines, bentoml_config=TEST_BENTOML_CONFIG)
    with start_up_log(caplog) as messages:
        async with serving(svc) as client:
            served = (await client.post("/sentiment", json={"texts": [FULLY_READ]})).json()[0]
            explained = (await client.post("/explain", json={"task": "sentiment",
                                                              "text": FULLY_READ})).json()
    assert {task: e.long_texts.rule for task, e in engines.by_task.items()} == {
        "sentiment": "chunk", "topic": "chunk"}
    # /explain read the three windows the prediction read (every token; truncate: 64 of them)
    assert len(explained["tokens"]) == 102 and explained["truncated"] is False
    assert explained["label"] == served["label"]
    for task in ("sentiment", "topic"):
        assert any(m.startswith(f"{task}: bundle") and "long texts: chunk (at most 3 windows"
                   in m and m.endswith("set by TEXTCLS_LONG_TEXTS=chunk TEXTCLS_MAX_WINDOWS=3")
                   for m in messages), messages


@pytest.mark.anyio
async def test_max_windows_under_another_rule_is_logged_as_doing_nothing(tmp_path, caplog):
    svc = service_for(fake_settings(tmp_path, max_windows=3), engine_factory=FakeEngines(),
                        bentoml_config=TEST_BENTOML_CONFIG)
    with start_up_log(caplog) as messages:
        async with serving(svc):
            pass
    assert any("TEXTCLS_MAX_WINDOWS=3 applies to the chunk rule only" in m for m in messages), messages
    assert any("long texts: truncate, set by TEXTCLS_MAX_WINDOWS=3" in m for m in messages), messages


@pytest.mark.anyio
async def test_long_texts_and_their_windows_are_counted_by_rule(tiny_bundles, tmp_path):
    settings = tiny_settings(tiny_bundles, tmp_path, long_texts="chunk", max_windows=3)
    labels = {"task": "sentiment", "rule": "chunk"}

    def snapshot() -> dict[str, float]:
        return {"long": counter("textcls_long_texts_total", **labels),
                "windows": counter("textcls_text_windows_total", **labels),
                "truncated": counter("textcls_truncated_texts_total", task="sentiment")}

    async with serving(service_for(settings, bentoml_config=TEST_BENTOML_CONFIG)) as client:
        from prometheus_client import REGISTRY

        # the series exist from start-up, for both tasks, under the rule in use
        for task in ("sentiment", "topic"):
            for name in ("textcls_long_texts_total", "textcls_text_windows_total"):
                assert REGISTRY.get_sample_value(name, {"task": task, "rule": "chunk"}) is not None

        async def sent(text: str) -> dict[str, float]:
            before = snapshot()
            response = await client.post("/sentiment", json={"texts": [text]})
            assert response.status_code == 200, response.text
            return {k: v - before[k] for k, v in snapshot().items()}

        assert await sent(SHORT) == {"long": 0, "windows": 0, "truncated": 0}
        # read whole, as three windows: long, not truncated
        assert await sent(FULLY_READ) == {"long": 1, "windows": 3, "truncated": 0}
        # three windows spread over it leave tokens unread: long and truncated
        assert await sent(GAPPED) == {"long": 1, "windows": 3, "truncated": 1}


@pytest.mark.anyio
async def test_under_the_bundles_truncate_rule_a_long_text_is_one_window(tiny_bundles, tmp_path):
    assert Bundle.load(tiny_bundles["sentiment"]).long_texts.rule == "truncate"
    labels = {"task": "sentiment", "rule": "truncate"}
    settings = tiny_settings(tiny_bundles, tmp_path)
    async with serving(service_for(settings, bentoml_config=TEST_BENTOML_CONFIG)) as client:
        before = (counter("textcls_long_texts_total", **labels),
                  counter("textcls_text_windows_total", **labels))
        response = await client.post("/sentiment", json={"texts": [FULLY_READ, SHORT]})
        assert response.status_code == 200, response.text
    after = (counter("textcls_long_texts_total", **labels), counter("textcls_text_windows_total", **labels))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
