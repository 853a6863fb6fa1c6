"""The served models: for each task an engine, its explainer, the thread its batches run on and our
batching queue, composed from one ``ServiceSettings``. What the endpoints await; no HTTP here.

preprocess (clip to the character limit) → the queue → predict (the engine, on a thread of its
own, bounded by ``batch_timeout_seconds``) → postprocess (label dicts, metrics).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from core.tasks import TASKS
from engine.bundle import EXPLAIN, describe_long_texts
from engine.engine import BatchResult
from engine.explain import Explainer
from engine.long_texts import LongTextRule
from engine.options import open_engine
from service.batcher import Batcher, Entry
from service.errors import ErrorType
from service.metrics import get_metrics
from service.settings import ServiceSettings

log = logging.getLogger("bentoml.textcls")


class Classifier(Protocol):
    """What the service needs of an engine (engine.engine.Engine, or a fake in tests)."""

    task: str
    labels: list[str]
    provider: str
    variant: str
    version: str
    long_texts: LongTextRule  # what it reads of a text over its max_length tokens

    def run(self, texts: list[str]) -> BatchResult: ...

    def warmup(self) -> None: ...


# (task, bundle ref, settings) -> engine; the real engine reads its task from the bundle
EngineFactory = Callable[[str, str, ServiceSettings], Classifier]
ExplainerFactory = Callable[[Classifier, ServiceSettings], "Explainer | None"]


def make_engine(task: str, ref: str, settings: ServiceSettings) -> Classifier:
    """The engine for a bundle reference, with the settings' engine options (device, threads,
    tokens per call, long-text rule: the bundle's unless TEXTCLS_LONG_TEXTS says otherwise)."""
    return open_engine(ref, settings.engine_options())


def make_explainer(engine: Classifier, settings: ServiceSettings) -> Explainer | None:
    """An explainer over the engine's bundle when it has the `explain` variant, else None."""
    bundle = getattr(engine, "bundle", None)
    if bundle is None or EXPLAIN not in bundle.variants or bundle.verdict(EXPLAIN) == "failed":
        return None
    return Explainer(bundle, device=settings.device, threads=settings.threads, long_texts=engine.long_texts)


def wrong_task(task: str, engine: Classifier, settings: ServiceSettings) -> str | None:
    """Why ``engine`` must not serve ``task``'s endpoint, or None when it may."""
    if engine.task == task:
        return None
    return (f"TEXTCLS_{task.upper()}_MODEL={settings.model_ref(task)} is a {engine.task!r} "
            f"bundle, not a {task!r} one")


def preflight(settings: ServiceSettings, engine_factory: EngineFactory) -> list[str]:
    """What would stop each task's engine from serving: a missing or unreadable bundle, a bundle
    of the other task, no variant that passed, files that differ from what the export checked
    (sha256), an ONNX file ONNX Runtime cannot load. One line per task that fails; the engines
    built for the check are dropped."""
    problems = []
    for task in TASKS:
        ref = settings.model_ref(task)
        try:
            engine = engine_factory(task, ref, settings)
        except Exception as exc:  # BundleError, NotFound, ONNX Runtime's own errors
            message = " ".join(str(exc).split())
            problems.append(f"TEXTCLS_{task.upper()}_MODEL={ref}: {message[:600]}")
            continue
        if (mismatch := wrong_task(task, engine, settings)) is not None:
            problems.append(mismatch)
        del engine
    return problems


def long_texts_note(engine: Classifier, settings: ServiceSettings) -> str:
    """The engine's long-text rule for the start-up log, and where it comes from."""
    chosen = [f"{name}={value}" for name, value in (("TEXTCLS_LONG_TEXTS", settings.long_texts),
                                                     ("TEXTCLS_MAX_WINDOWS", settings.max_windows))
              if value]
    return f"{describe_long_texts(engine.long_texts)}, " + (
        f"set by {' '.join(chosen)}" if chosen else "as the bundle records")


class BatchTimeout(Exception):
    """A model call ran past TEXTCLS_BATCH_TIMEOUT_SECONDS."""


class ModelThread:
    """Runs each model call on a daemon thread of its own and waits at most ``timeout`` seconds.

    A call that overruns cannot be interrupted (ONNX Runtime offers no cancel from Python), so its
    thread is left to finish or hang on its own, and being a daemon it never holds up the
    worker's exit: a stuck call costs the requests of its batch, not the service. ONNX Runtime
    sessions may be run from several threads at once. A thread per batch costs about 0.1 ms.
    """

    def __init__(self, task: str, timeout: float) -> None:
        self.task = task
        self.timeout = timeout
        self.abandoned = 0

    async def run(self, call: Callable[[], Any], size: int) -> Any:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if not done.done():
                done.set_exception(error) if error is not None else done.set_result(result)

        def work() -> None:
            try:
                result, error = call(), None
            except BaseException as exc:  # re-raised in the event loop
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:  # the loop closed while an abandoned call ran
                pass

        threading.Thread(target=work, name=f"textcls-{self.task}-batch", daemon=True).start()
        try:
            return await asyncio.wait_for(asyncio.shield(done), self.timeout)
        except TimeoutError:
            self.abandoned += 1
            log.error("%s: a batch of %d texts ran past TEXTCLS_BATCH_TIMEOUT_SECONDS=%g; its "
                      "requests are answered 504 and its thread is abandoned (%d so far)",
                      self.task, size, self.timeout, self.abandoned)
            raise BatchTimeout(f"batch of {size} texts took over {self.timeout:g} s") from None


class ClippedText(str):
    """A text cut to the character limit (counted as truncated with those the engine cuts)."""


@dataclass(eq=False)
class ServedModel:
    """One task's model as the endpoints see it."""

    task: str
    engine: Classifier
    explainer: Explainer | None
    source: str
    settings: ServiceSettings
    batcher: Batcher = None  # type: ignore[assignment]  (made in __post_init__)

    def __post_init__(self) -> None:
        settings = self.settings
        self.metrics = get_metrics()
        self.thread = ModelThread(self.task, settings.batch_timeout_seconds)
        self.batcher = Batcher(
            self._predict,
            max_batch_size=settings.max_batch_size,
            max_latency=settings.max_latency_ms / 1000,
            max_queue_delay=settings.max_queue_delay_ms / 1000,
            on_batch_start=self._batch_starts,
            name=self.task,
        )

    def clip(self, text: str) -> str:
        limit = self.settings.max_chars_per_text
        return ClippedText(text[:limit]) if len(text) > limit else text

    async def classify(self, texts: list[str]) -> bytes:
        """The JSON answer: one prediction per text, in order, through the queue."""
        parts = await self.batcher.submit([self.clip(text) for text in texts])
        return b"[" + b", ".join(parts) + b"]"

    def _batch_starts(self, entries: list[Entry], now: float) -> None:
        self.metrics.observe_queue(self.task, [e.waited(now) for e in entries if e.first])

    async def _predict(self, texts: list[str]) -> list[bytes]:
        return await self.thread.run(lambda: self._run(texts), len(texts))

    def _run(self, texts: list[str]) -> list[bytes]:
        """predict and postprocess, on the model's thread: the event loop is the busier of the
        two under load (py-spy: 89% against 64% at 128 clients), so everything per text that
        need not be there (metrics, the JSON of each prediction) is done here."""
        result: BatchResult = self.engine.run([str(text) for text in texts])
        if len(result.predictions) != len(texts):
            raise RuntimeError(f"{self.task} engine answered {len(result.predictions)} "
                               f"predictions for {len(texts)} texts")
        flags = list(result.truncated) + [False] * (len(texts) - len(result.truncated))
        cut = sum(1 for text, truncated in zip(texts, flags)
                  if truncated or isinstance(text, ClippedText))
        self.metrics.observe_batch(self.task, result, truncated=cut,
                                   long_text_rule=self.engine.long_texts.rule)
        encode = json.JSONEncoder(ensure_ascii=False).encode
        return [encode(p.to_dict()).encode() for p in result.predictions]

    def warmup(self) -> None:
        started = time.perf_counter()
        self.engine.warmup()
        log.info("%s: warm-up batch took %.3f s", self.task, time.perf_counter() - started)


def open_models(settings: ServiceSettings, sources: dict[str, tuple[str, str]],
                engine_factory: EngineFactory = make_engine,
                explainer_factory: ExplainerFactory = make_explainer) -> dict[str, ServedModel]:
    """Every task's model, from ``sources`` (task -> (bundle directory or tag, how to name it in
    the log)); logs what each serves and starts its metric series."""
    metrics = get_metrics()
    models = {}
    for task in TASKS:
        ref, source = sources[task]
        engine = engine_factory(task, ref, settings)
        if (mismatch := wrong_task(task, engine, settings)) is not None:
            raise RuntimeError(mismatch)
        explainer = explainer_factory(engine, settings)
        if explainer is None:
            log.warning("%s: the bundle has no explain variant that passed the export's checks; "
                        "POST /explain answers 422 for it until the model is re-exported", task)
        log.info("%s: bundle %s (version %s), variant %s on %s, labels %s; long texts: %s",
                 task, source, engine.version, engine.variant, engine.provider, engine.labels,
                 long_texts_note(engine, settings))
        if settings.max_windows is not None and engine.long_texts.rule != "chunk":
            log.warning("%s: TEXTCLS_MAX_WINDOWS=%d applies to the chunk rule only; this model "
                        "reads long texts by %s", task, settings.max_windows, engine.long_texts.rule)
        metrics.set_model_info(task, version=engine.version, variant=engine.variant,
                               provider=engine.provider)
        metrics.start_counters(task, engine.labels, [t.value for t in ErrorType],
                               long_text_rule=engine.long_texts.rule)
        models[task] = ServedModel(task, engine, explainer, source, settings)
    return models
