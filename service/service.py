"""The BentoML service: ``POST /sentiment``, ``POST /topic`` and ``POST /explain`` over the engine.

A request goes through
1. the gate (service/gate.py, ASGI middleware): caps requests in flight, refuses oversized, slow
   and invalid bodies before BentoML sees them, and gives every error one shape;
2. BentoML's parsing into the request model, then the endpoint below, which awaits
3. our queue (service/batcher.py, one per model): the texts of concurrent requests go to the model
   together, the moment it is free;
4. the engine (engine/): tokenize, sort by length, pad per sub-batch, ONNX Runtime, softmax.

``TextClassifier`` is what ``bentoml serve`` and ``bentofile.yaml`` name; its settings come from
``TEXTCLS_*`` variables when this module is imported (service/settings.py). ``service_for`` makes
the same service over other settings or engines, for tests and benchmarks. Nothing here imports
torch.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import bentoml
from bentoml.exceptions import BentoMLException
from starlette.responses import Response

from core.tasks import TASKS
from engine.explain import ExplainError
from service.batcher import Overloaded
from service.errors import ErrorType, ServiceError
from service.gate import EXPLAIN_ROUTE, ROUTES, RequestGate, shaped_response
from service.lifecycle import Lifecycle
from service.models import (BatchTimeout, EngineFactory, ExplainerFactory, ServedModel,
                            make_engine, make_explainer, open_models, preflight)
from service.schemas import Predictions, explain_request_model, request_model
from service.settings import ServiceSettings, is_bundle_path, load_settings

log = logging.getLogger("bentoml.textcls")

SETTINGS = load_settings()


def service_config(settings: ServiceSettings) -> dict[str, Any]:
    return {
        # One worker whose engines use every core it may (settings.threads); scale out with
        # replicas. Batches run on threads of their own (service/models.py), one per model at a
        # time; the one BentoML thread serves /explain.
        "workers": 1,
        "threads": 1,
        # BentoML's access log decodes the request's Content-Type as UTF-8 when it logs the
        # response; a byte over 0x7f there (legal in HTTP) raised mid-response and cut the answer
        # short. The log line keeps the rest.
        "logging": {"access": {"enabled": settings.access_log, "request_content_type": False}},
        # spans of the prediction routes cost more than anything else around the model
        # (docs/benchmarks.md); traced only when asked (TEXTCLS_TRACE_PREDICTIONS)
        "tracing": {"excluded_urls": [] if settings.trace_predictions
                    else [rf"{route}(\?|$)" for route in (*ROUTES, EXPLAIN_ROUTE)]},
    }


def stored_model(settings: ServiceSettings, task: str) -> bentoml.models.BentoModel | None:
    """A store tag as a ``BentoModel`` class attribute, so `bentoml build` packs the model into the
    Bento; a bundle directory is served as it is (None)."""
    ref = settings.model_ref(task)
    return None if is_bundle_path(ref) else bentoml.models.BentoModel(ref)


@bentoml.service(name="TextClassifier", **service_config(SETTINGS))
class TextClassifier:
    """Sentiment and news-topic classification of short texts."""

    settings: ClassVar[ServiceSettings] = SETTINGS
    engine_factory: ClassVar[EngineFactory] = staticmethod(make_engine)
    explainer_factory: ClassVar[ExplainerFactory] = staticmethod(make_explainer)
    lifecycle: ClassVar[Lifecycle] = Lifecycle(SETTINGS.shutdown_grace_seconds)
    sentiment_model = stored_model(SETTINGS, "sentiment")
    topic_model = stored_model(SETTINGS, "topic")

    def __init__(self) -> None:
        self.models: dict[str, ServedModel] = open_models(
            self.settings, {task: self._bundle_ref(task) for task in TASKS},
            self.engine_factory, self.explainer_factory)

    def _bundle_ref(self, task: str) -> tuple[str, str]:
        """The bundle directory for the engine, and how to name it in the log."""
        stored = getattr(self, f"{task}_model")
        if stored is None:
            return self.settings.model_ref(task), self.settings.model_ref(task)
        # resolves through BentoML's model store: inside a Bento, the Bento's own copy
        return str(stored.path), f"{stored.tag} from the model store"

    @bentoml.on_deployment
    def check_models() -> None:
        """Runs once in `bentoml serve`'s own process before it starts any worker: a model that
        cannot be served stops the server with one message and a non-zero exit. A failure in the
        worker instead would be logged and the worker respawned by circus, again and again."""
        problems = preflight(TextClassifier.inner.settings, TextClassifier.inner.engine_factory)
        if problems:
            raise BentoMLException("cannot serve; fix the model settings or re-export:\n  "
                                   + "\n  ".join(problems))

    @bentoml.on_startup
    def warm_up(self) -> None:
        for model in self.models.values():
            model.warmup()
        # start-up hooks run in the worker's main thread, after uvicorn set its signal
        # handlers: the drain can take them over
        if not self.lifecycle.install():
            log.info("SIGTERM is left to the server: not in its main thread")
        self.lifecycle.ready = True

    @bentoml.on_shutdown
    async def stop_batchers(self) -> None:
        for model in self.models.values():
            await model.batcher.close()

    async def __is_ready__(self) -> bool:
        # the gate answers /readyz itself (503 until the models are warm and while draining);
        # this says the same to BentoML versions that ask
        return self.lifecycle.ready and not self.lifecycle.draining

    @bentoml.api(route="/sentiment", input_spec=request_model(SETTINGS))
    async def sentiment(self, texts: list[str]) -> Predictions:
        """Sentiment of each text (negative/positive), in the order sent."""
        return await self._classify("sentiment", texts)

    @bentoml.api(route="/topic", input_spec=request_model(SETTINGS))
    async def topic(self, texts: list[str]) -> Predictions:
        """News topic of each text, in the order sent."""
        return await self._classify("topic", texts)

    @bentoml.api(route=EXPLAIN_ROUTE, input_spec=explain_request_model(SETTINGS))
    def explain(self, task: str, text: str, layer: int = -1, head: int | None = None) -> dict:
        """Tokens, predicted label and per-token attention-rollout weights of one text,
        computed by the bundle's `explain` ONNX variant."""
        model = self.models[task]
        if model.explainer is None:
            return shaped_response(ServiceError(
                ErrorType.INVALID_INPUT,
                f"explanations are not available for {task}: its bundle has no explain "
                "variant that passed the export's checks; re-export it with `textcls export` "
                "(it builds one by default)"))
        clipped = model.clip(text)
        try:
            answer = model.explainer.explain(str(clipped), layer=layer, head=head).to_dict()
        except ExplainError as exc:  # a layer or head this model does not have
            return shaped_response(ServiceError(ErrorType.INVALID_INPUT, str(exc)))
        # cut to the character limit here, or to the model's max_length by the tokenizer
        answer["truncated"] = answer["truncated"] or len(clipped) < len(text)
        if answer["truncated"]:
            model.metrics.count_truncated(task)
        return answer

    async def _classify(self, task: str, texts: list[str]):
        try:
            # the JSON is made on the model's thread (service/models.py); BentoML passes a
            # Response on as it is
            return Response(await self.models[task].classify(texts), media_type="application/json")
        except Overloaded:
            return shaped_response(ServiceError(ErrorType.OVERLOADED))
        except BatchTimeout:
            return shaped_response(ServiceError(ErrorType.TIMEOUT))
        except Exception:  # a failed batch: every request in it, details only in the log
            log.exception("%s: a batch failed", task)
            return shaped_response(ServiceError(ErrorType.INTERNAL))


def add_gate(svc: bentoml.Service, settings: ServiceSettings, lifecycle: Lifecycle) -> None:
    svc.add_asgi_middleware(RequestGate, settings=settings, request_model=request_model(settings),
                            explain_model=explain_request_model(settings), lifecycle=lifecycle)


add_gate(TextClassifier, SETTINGS, TextClassifier.inner.lifecycle)


def service_for(
    settings: ServiceSettings,
    *,
    engine_factory: EngineFactory = make_engine,
    explainer_factory: ExplainerFactory = make_explainer,
    bentoml_config: dict[str, Any] | None = None,
) -> bentoml.Service:
    """``TextClassifier`` over other settings and engines (tests pass fake engines), declared to
    BentoML again. Its /docs.json states the limits of this module's settings; the gate enforces
    ``settings``' own."""
    base = TextClassifier.inner
    # BentoML 1.4.0 looks for start-up hooks in the class's own namespace: restated here
    hooks = {name: vars(base)[name] for name in ("warm_up", "stop_batchers")}
    inner = type("TextClassifier", (base,), {
        **hooks,
        "__doc__": base.__doc__,
        "settings": settings,
        "engine_factory": staticmethod(engine_factory),
        "explainer_factory": staticmethod(explainer_factory),
        "lifecycle": Lifecycle(settings.shutdown_grace_seconds),
        "sentiment_model": stored_model(settings, "sentiment"),
        "topic_model": stored_model(settings, "topic"),
    })
    config = {**service_config(settings), **(bentoml_config or {})}
    svc = bentoml.service(name="TextClassifier", **config)(inner)
    add_gate(svc, settings, inner.lifecycle)
    return svc
