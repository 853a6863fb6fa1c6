"""Helpers of the service tests: a fake engine and an in-process client for the BentoML app.

Not a conftest.py: tests/ is not a package, so a second conftest would take the module name
`conftest` from tests/conftest.py, which other tests import from. The real engine's tests use the
`tiny_bundles` fixture of tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import httpx
import pytest

from engine.long_texts import LongTextRule
from engine.engine import BatchResult, Prediction
from service.settings import load_settings

LABELS = {
    "sentiment": ["negative", "positive"],
    "topic": ["World", "Sports", "Business", "Sci/Tech"],
}


def fake_prediction(task: str, text: str) -> dict:
    """A deterministic answer that depends on the text, so a caller can tell its own answers."""
    labels = LABELS[task]
    best = len(text) % len(labels)
    top = round(0.5 + (len(text) % 40) / 100, 4)
    rest = (1 - top) / (len(labels) - 1)
    scores = {label: (top if i == best else rest) for i, label in enumerate(labels)}
    return {"label": labels[best], "score": top, "scores": scores}


class FakeEngine:
    """Stands in for engine.engine.Engine: records every call; can be held, slowed or failed."""

    provider = "CPUExecutionProvider"
    variant = "fake"
    version = "fake0001"
    long_texts = LongTextRule()

    def __init__(self, task: str, *, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.task = task
        self.labels = LABELS[task]
        self.delay = delay
        self.fail_on = fail_on
        self.calls: list[list[str]] = []
        self.released = threading.Event()
        self.released.set()
        self.entered = threading.Event()
        self.warmed = False

    def run(self, texts: list[str]) -> BatchResult:
        self.calls.append(list(texts))
        self.entered.set()
        assert self.released.wait(timeout=20), "the test never released the fake engine"
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise RuntimeError("engine exploded: /secret/path/model.onnx")
        preds = [Prediction(**fake_prediction(self.task, t)) for t in texts]
        tokens = sum(len(t.split()) + 2 for t in texts)
        return BatchResult(predictions=preds, tokenize_seconds=0.0001, inference_seconds=0.0002,
                           tokens=tokens, padded_tokens=tokens, truncated=[False] * len(texts),
                           windows=[1] * len(texts))

    def warmup(self) -> None:
        self.warmed = True


class FakeEngines:
    """An engine factory for service_for that keeps the engines it made, by task."""

    def __init__(self, **engine_kwargs) -> None:
        self.kwargs = engine_kwargs
        self.by_task: dict[str, FakeEngine] = {}

    def __call__(self, task: str, ref: str, settings) -> FakeEngine:
        self.by_task[task] = FakeEngine(task, **self.kwargs)
        return self.by_task[task]


def fake_settings(tmp_path: Path, **overrides):
    """Settings whose model refs are directories, so no model store is needed."""
    (tmp_path / "bundle").mkdir(exist_ok=True)
    ref = str(tmp_path / "bundle")
    return load_settings(sentiment_model=ref, topic_model=ref, threads=1, **overrides)


# Each in-process app registers BentoML's own traffic metrics again, which prometheus_client
# refuses in one process; the real-serve test covers /metrics.
TEST_BENTOML_CONFIG = {"metrics": {"enabled": False}}


@contextlib.asynccontextmanager
async def serving(svc):
    """The service's ASGI app with its lifespan (instance, warm-up) run, and a client on it."""
    app = svc.to_asgi()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


@pytest.fixture
def anyio_backend():
    return "asyncio"
