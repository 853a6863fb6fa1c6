"""The BentoML service: ``POST /sentiment`` and ``POST /topic`` over the engine.

A request goes through
1. ``RequestGate`` (ASGI middleware): caps requests in flight, refuses oversized bodies (413) and
   bodies that are not ``{"texts": [...]}`` within the limits (400/422), all before BentoML sees
   them, and re-shapes every error BentoML itself answers into ``{"error", "type"}``;
2. BentoML's parsing into ``TextsRequest`` (per request, so a bad request never joins a batch);
3. BentoML's adaptive batcher (``@bentoml.api(batchable=True, ...)``), which concatenates the
   texts of concurrent requests, calls ``_classify`` once per batch in a worker thread, and hands
   each caller its slice; when the call raises, every caller in the batch gets the error
   (bentoml/_internal/marshal/dispatcher.py:359-364);
4. the engine: tokenize, sort by length, pad per sub-batch, ONNX Runtime, softmax.

``build_service`` composes all of it from one ``ServiceSettings``; the module-level
``TextClassifier`` is what ``bentoml serve`` and ``bentofile.yaml`` name. Nothing here imports
torch.
"""

import asyncio
import itertools
import json
import logging
import threading
import time
from http import HTTPStatus
from typing import Annotated, Any, Callable, Literal, Protocol

import bentoml
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from starlette.responses import JSONResponse, RedirectResponse

from engine.long_texts import LongTextRule
from core.tasks import TASKS
from service import batching
from engine.bundle import describe_long_texts, override_long_texts, resolve_bundle
from engine.engine import BatchResult, Engine
from service.errors import SHAPED_HEADER, ErrorType, ServiceError, from_status
from engine.explain import EXPLAIN, ExplainError, Explainer
from service.lifecycle import Lifecycle
from service.metrics import get_metrics
from service.settings import ServiceSettings, is_bundle_path, load_settings

# BentoML's server logging config sends "bentoml.*" to stdout at INFO and leaves the root logger
# at WARNING (bentoml/_internal/log.py:103-124), so start-up facts must log under "bentoml".
log = logging.getLogger("bentoml.textcls")

ROUTES = {f"/{task}": task for task in TASKS}
EXPLAIN_ROUTE = "/explain"


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


def make_engine(task: str, ref: str, settings: ServiceSettings) -> Engine:
    bundle = resolve_bundle(ref)
    return Engine(
        bundle,
        device=settings.device,
        threads=settings.threads,
        batch_tokens=settings.batch_tokens,
        # the bundle's rule unless TEXTCLS_LONG_TEXTS / TEXTCLS_MAX_WINDOWS say otherwise
        long_texts=override_long_texts(bundle.long_texts, settings.long_texts, settings.max_windows),
    )


def long_texts_note(engine: Classifier, settings: ServiceSettings) -> str:
    """The engine's long-text rule for the start-up log, and where it comes from."""
    rule = engine.long_texts
    chosen = [f"{name}={value}" for name, value in (("TEXTCLS_LONG_TEXTS", settings.long_texts),
                                                     ("TEXTCLS_MAX_WINDOWS", settings.max_windows))
              if value]
    return f"{describe_long_texts(rule)}, " + (f"set by {' '.join(chosen)}" if chosen
                                                 else "as the bundle records")


def make_explainer(engine: Classifier, settings: ServiceSettings) -> Explainer | None:
    """An explainer over the engine's bundle when it has the `explain` variant, else None."""
    bundle = getattr(engine, "bundle", None)
    if bundle is None or EXPLAIN not in bundle.variants or bundle.verdict(EXPLAIN) == "failed":
        return None
    return Explainer(bundle, device=settings.device, threads=settings.threads, long_texts=engine.long_texts)


class Prediction(BaseModel):
    label: str = Field(description="The most probable class.")
    score: float = Field(description="Its probability.")
    scores: dict[str, float] = Field(description="Every class's probability; they sum to 1.")


# The media type stated, so BentoML does not derive it from the output's JSON schema on every
# response (_bentoml_sdk/io_models.py, IOMixin.mime_type; 13% of the per-request CPU).
Predictions = Annotated[list[Prediction], ContentType("application/json")]


class ClippedText(str):
    """A request's text, remembering whether it was cut to the character limit."""

    clipped: bool = False


class ReceivedText(ClippedText):
    """A text that remembers when its request passed validation and which request it came from.

    BentoML's batcher keeps its enqueue times to itself (dispatcher.py:103-108) but hands the batch
    function the very objects the request parsed to (container.py:543-556), so stamping the texts is
    how the batch function learns how long each request queued. Parsing happens right before the
    request is queued (_bentoml_impl/server/app.py:785-805).
    """

    received_at: float
    request_id: int


def request_model(settings: ServiceSettings) -> type[BaseModel]:
    """The request body, its limits taken from the settings; also the OpenAPI schema at /docs."""
    max_texts = settings.max_texts_per_request
    max_chars = settings.max_chars_per_text
    refuse = settings.overlong == "refuse"
    request_ids = itertools.count()
    item_schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if refuse:
        item_schema["maxLength"] = max_chars
    over_long = "refused" if refuse else "truncated to the limit"

    class TextsRequest(BaseModel):
        """Texts to classify; the answer has one prediction per text, in the same order."""

        model_config = ConfigDict(extra="forbid")

        texts: list[str] = Field(
            description=f"1 to {max_texts} non-empty texts; texts over {max_chars} characters "
            f"are {over_long}.",
            json_schema_extra={"minItems": 1, "maxItems": max_texts, "items": item_schema},
            examples=[["a great film", "dull"]],
        )

        @field_validator("texts", mode="after")
        @classmethod
        def _limits(cls, texts: list[str]) -> list[str]:
            if not texts:
                raise PydanticCustomError("no_texts", "texts is empty; send at least one text")
            if len(texts) > max_texts:
                raise PydanticCustomError(
                    "too_many_texts",
                    "texts holds {count} texts; at most {limit} are accepted per request, "
                    "so split it",
                    {"count": len(texts), "limit": max_texts},
                )
            problems = []
            for i, text in enumerate(texts):
                if not text.strip():
                    problems.append(f"texts[{i}] is empty; send some non-space characters")
                elif refuse and len(text) > max_chars:
                    problems.append(
                        f"texts[{i}] has {len(text)} characters; at most {max_chars} are accepted"
                    )
            if problems:
                raise PydanticCustomError("bad_text", "; ".join(problems[:3]))
            received_at = time.perf_counter()
            request_id = next(request_ids)
            stamped = []
            for text in texts:
                item = ReceivedText(text[:max_chars])
                item.received_at, item.request_id = received_at, request_id
                item.clipped = len(text) > max_chars
                stamped.append(item)
            return stamped

    return TextsRequest


def explain_request_model(settings: ServiceSettings) -> type[BaseModel]:
    """The body of POST /explain, with the same text limits as the prediction endpoints."""
    max_chars = settings.max_chars_per_text
    refuse = settings.overlong == "refuse"

    class ExplainRequest(BaseModel):
        """One text to explain with the task's model: its tokens, label and attention rollout."""

        model_config = ConfigDict(extra="forbid")

        task: Literal[TASKS] = Field(description="Whose model explains: sentiment or topic.")
        text: str = Field(description=f"A non-empty text; over {max_chars} characters it is "
                          f"{'refused' if refuse else 'truncated'}.", examples=["a dull, lifeless film"])
        layer: int = Field(-1, strict=True, description="Layer of the attention matrix returned (negative counts "
                           "from the last); the rollout weights always use every layer.")
        head: int | None = Field(None, strict=True,
                                 description="Head of that layer; default: the mean of the heads.")

        @field_validator("text", mode="after")
        @classmethod
        def _limits(cls, text: str) -> str:
            if not text.strip():
                raise PydanticCustomError("bad_text", "text is empty; send some non-space characters")
            if refuse and len(text) > max_chars:
                raise PydanticCustomError(
                    "bad_text", "text has {n} characters; at most {limit} are accepted",
                    {"n": len(text), "limit": max_chars})
            clipped = ClippedText(text[:max_chars])
            clipped.clipped = len(text) > max_chars
            return clipped

    return ExplainRequest


def shaped_response(err: ServiceError) -> JSONResponse:
    """An error response of our shape that the gate passes on as it is (see SHAPED_HEADER)."""
    headers = {**err.headers(), SHAPED_HEADER: err.type.value}
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


OWN_MESSAGES = {"no_texts", "too_many_texts", "bad_text"}


def validation_error(exc: ValidationError) -> ServiceError:
    """One client-facing message for a request body that failed TextsRequest."""
    errors = exc.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        detail = errors[0]["msg"]
        return ServiceError(
            ErrorType.MALFORMED_REQUEST,
            f"the body is not valid JSON ({detail}); send {{\"texts\": [\"...\"]}}",
        )
    parts = []
    for e in errors[:3]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        if e["type"] in OWN_MESSAGES:  # they name the field themselves
            parts.append(e["msg"])
        elif e["type"] == "missing":
            parts.append(f"{loc} is missing; the body must be {{\"texts\": [\"...\"]}}")
        elif e["type"] == "model_type":
            parts.append("the body must be a JSON object like {\"texts\": [\"...\"]}")
        else:
            parts.append(f"{loc or 'body'}: {e['msg']}")
    if len(errors) > 3:
        parts.append(f"and {len(errors) - 3} more problems")
    return ServiceError(ErrorType.INVALID_INPUT, "; ".join(parts))


# Content types we read as JSON: curl -d sends form-urlencoded unless told otherwise, and the
# contract is JSON only, so anything else (multipart, BentoML's pickle) is refused.
JSON_LIKE = {"", "application/json", "application/x-www-form-urlencoded", "text/plain"}


class RequestGate:
    """ASGI middleware in front of BentoML's routes (Service.add_asgi_middleware).

    User middlewares sit inside BentoML's own and outside its routing
    (_bentoml_impl/server/app.py:280-287), so every prediction request passes here first and every
    response passes here last.
    """

    def __init__(self, app, *, settings: ServiceSettings, request_model: type[BaseModel],
                 explain_model: type[BaseModel], lifecycle: Lifecycle) -> None:
        self.app = app
        self.request_model = request_model
        self.explain_model = explain_model
        self.max_body = settings.max_body_bytes
        self.max_in_flight = settings.max_concurrent_requests
        self.body_timeout = settings.body_timeout_seconds
        self.lifecycle = lifecycle
        self.metrics = get_metrics()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _closing_while_draining(send, self.lifecycle)
        path, method = scope["path"], scope["method"]
        task = ROUTES.get(path)
        if task is not None and method == "POST":
            return await self._predict(task, scope, receive, send, self.request_model)
        if path == EXPLAIN_ROUTE and method == "POST":
            return await self._predict("explain", scope, receive, send, self.explain_model)
        if path == "/docs" and method in ("GET", "HEAD"):
            # BentoML serves Swagger UI at / and the spec at /docs.json (app.py:195-213)
            return await RedirectResponse("/", status_code=307)(scope, receive, send)
        if path == "/readyz" and method in ("GET", "HEAD"):
            if self.lifecycle.draining:
                return await _error_response(ServiceError(ErrorType.SHUTTING_DOWN))(
                    scope, _no_receive, send)
            return await self.app(scope, receive, _ErrorShaper(send, readiness=True))
        # anything else (probes, /metrics, the docs, unknown routes and methods): Starlette's
        # plain-text 404 and 405 become our shape too
        return await self.app(scope, receive, _ErrorShaper(send))

    async def _predict(self, task: str, scope, receive, send, model: type[BaseModel]) -> None:
        started = time.perf_counter()
        lifecycle = self.lifecycle
        if lifecycle.draining:
            lifecycle.refused_while_draining += 1
            return await self._refuse(task, ServiceError(ErrorType.SHUTTING_DOWN), scope, send)
        if lifecycle.in_flight >= self.max_in_flight:  # refused before reading a byte of it
            return await self._refuse(task, ServiceError(ErrorType.OVERLOADED), scope, send)
        # Reading the body takes no slot: a client that stalls in its body must not hold one
        # (256 of them would starve everyone), and the read is bounded in time and size.
        lifecycle.reading += 1
        try:
            async with asyncio.timeout(self.body_timeout):
                scope, body = await self._admit(scope, receive, model)
        except ServiceError as err:
            return await self._refuse(task, err, scope, send)
        except TimeoutError:
            return await self._refuse(task, ServiceError(
                ErrorType.REQUEST_TIMEOUT,
                f"the request body did not arrive within {self.body_timeout:g} s; send it at "
                "once"), scope, send)
        finally:
            lifecycle.reading -= 1
        if body is None:
            # The client went away while sending. Answer anyway (nobody reads it): BentoML's
            # traffic-timeout middleware otherwise waits 60 s for a first response
            # (bentoml/_internal/server/http/traffic.py:37-49), and shutdown waits for it.
            return await self._refuse(task, ServiceError(
                ErrorType.MALFORMED_REQUEST, "the client closed the connection before the body "
                "was complete"), scope, send)
        if lifecycle.in_flight >= self.max_in_flight:  # others were admitted meanwhile
            return await self._refuse(task, ServiceError(ErrorType.OVERLOADED), scope, send)
        lifecycle.in_flight += 1
        shaper = _ErrorShaper(send)
        try:
            await self.app(scope, _replay(body, receive), shaper)
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            if not shaper.started:
                await shaper.send_error(ServiceError(ErrorType.INTERNAL))
        finally:
            lifecycle.in_flight -= 1
            if lifecycle.draining:
                lifecycle.answered_while_draining += 1
        if shaper.error is not None:
            self.metrics.count_error(task, shaper.error.type.value)
        elif shaper.status is not None and shaper.status < 400:
            self.metrics.observe_request(task, time.perf_counter() - started)

    async def _admit(self, scope, receive, model: type[BaseModel]) -> tuple[dict, bytes | None]:
        """The request's JSON body if it is within the limits and valid; else a ServiceError."""
        headers = dict(scope["headers"])
        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media not in JSON_LIKE and not media.endswith("+json"):
            raise ServiceError(
                ErrorType.UNSUPPORTED_MEDIA_TYPE,
                f"the body must be JSON (Content-Type: application/json), not {media}",
            )
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                declared_size = int(declared)
            except ValueError:
                raise ServiceError(
                    ErrorType.MALFORMED_REQUEST, "Content-Length is not a number"
                ) from None
            if declared_size > self.max_body:
                raise self._too_large(declared_size)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return scope, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not body.strip():
            raise ServiceError(
                ErrorType.MALFORMED_REQUEST, "the body is empty; send {\"texts\": [\"...\"]}"
            )
        try:
            model.model_validate_json(body)
        except ValidationError as exc:
            raise validation_error(exc) from None
        # BentoML would read form-urlencoded bodies as forms: tell it what the body is
        rest = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        scope = {**scope, "headers": [*rest, (b"content-type", b"application/json")]}
        return scope, body

    def _too_large(self, size: int) -> ServiceError:
        return ServiceError(
            ErrorType.PAYLOAD_TOO_LARGE,
            f"the body has {size} bytes or more; at most {self.max_body} are accepted, "
            "so send fewer or shorter texts per request",
        )

    async def _refuse(self, task: str, err: ServiceError, scope, send) -> None:
        self.metrics.count_error(task, err.type.value)
        await _error_response(err)(scope, _no_receive, send)


def _closing_while_draining(send, lifecycle: Lifecycle):
    """``send`` that marks every response started while draining ``Connection: close``, so no
    client sends another request on a connection the shutdown is about to close."""

    async def closing(message: dict) -> None:
        if message["type"] == "http.response.start" and lifecycle.draining:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return closing


def _error_response(err: ServiceError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers())


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}


def _replay(body: bytes, receive):
    """A receive callable that yields the already-read body once, then defers to the client."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _ErrorShaper:
    """Wraps ``send``: passes successes through, replaces any error response with our shape.

    Only the status of BentoML's error is used; its body (which may carry exception text) is
    dropped.
    """

    def __init__(self, send, *, readiness: bool = False) -> None:
        self._send = send
        self._readiness = readiness
        self.status: int | None = None
        self.error: ServiceError | None = None
        self.started = False
        self._rewriting = False  # BentoML's error body is being replaced by ours
        self._kept_headers: list[tuple[bytes, bytes]] = []

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.status >= 400:
                shaped = dict(message.get("headers", [])).get(SHAPED_HEADER.encode())
                if shaped is not None and self.status < 500:
                    # our own shape, written by the service (/explain): counted, passed on
                    self.error = ServiceError(ErrorType(shaped.decode()), "shaped by the service")
                else:
                    self.error = from_status(self.status, readiness=self._readiness)
                    self._rewriting = True
                    # a 405 must say which methods the route answers (RFC 9110 15.5.6)
                    self._kept_headers = [(k, v) for k, v in message.get("headers", [])
                                          if k.lower() == b"allow"]
                    return
            self.started = True
        elif message["type"] == "http.response.body" and self._rewriting:
            if not message.get("more_body", False) and not self.started:
                await self.send_error(self.error)
            return
        await self._send(message)

    async def send_error(self, err: ServiceError) -> None:
        self.error, self.started = err, True
        body = json.dumps(err.body()).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in err.headers().items()]
        headers += self._kept_headers
        await self._send({"type": "http.response.start", "status": err.status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


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


class BatchTimeout(BentoMLException):
    """A model call that ran past TEXTCLS_BATCH_TIMEOUT_SECONDS; every caller in its batch gets
    504 (BentoML answers an exception's error_code: _bentoml_impl/server/app.py:727-740)."""

    error_code = HTTPStatus.GATEWAY_TIMEOUT


class BatchRunner:
    """Runs each model call on a daemon thread of its own and waits at most ``timeout`` seconds.

    A call that overruns cannot be interrupted (ONNX Runtime offers no cancel from Python), so its
    thread is left to finish or hang on its own, and being a daemon it never holds up the
    worker's exit: a stuck call costs the requests of its batch, not the service. ONNX Runtime
    sessions may be run from several threads at once. A thread per batch costs about 0.1 ms.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.abandoned = 0

    def run(self, engine: Classifier, texts: list[str]) -> BatchResult:
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["result"] = engine.run(texts)
            except BaseException as exc:  # re-raised in the batch's own thread below
                outcome["error"] = exc

        thread = threading.Thread(target=call, name="textcls-batch", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self.abandoned += 1
            log.error("%s: a batch of %d texts ran past TEXTCLS_BATCH_TIMEOUT_SECONDS=%g; its "
                      "requests are answered 504 and its thread is abandoned (%d so far)",
                      engine.task, len(texts), self.timeout, self.abandoned)
            raise BatchTimeout(f"batch of {len(texts)} texts took over {self.timeout:g} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]


def build_service(
    settings: ServiceSettings,
    *,
    engine_factory: EngineFactory = make_engine,
    explainer_factory: Callable[[Classifier, ServiceSettings], Explainer | None] = make_explainer,
    bentoml_config: dict[str, Any] | None = None,
) -> bentoml.Service:
    """The whole service from one settings object; tests pass a fake engine factory."""
    batching.install(settings.max_queue_delay_ms, settings.batching)
    texts_request = request_model(settings)
    explain_request = explain_request_model(settings)
    lifecycle = Lifecycle(settings.shutdown_grace_seconds)
    batch_api = dict(
        batchable=True,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.max_latency_ms,
        input_spec=texts_request,
    )

    def store_model(task: str) -> bentoml.models.BentoModel | None:
        # A store tag becomes a class attribute so `bentoml build` packs the model into the Bento
        # (_bentoml_sdk/service/factory.py:122-133); a directory is served as it is.
        ref = settings.model_ref(task)
        return None if is_bundle_path(ref) else bentoml.models.BentoModel(ref)

    class TextClassifier:
        """Sentiment and news-topic classification of short texts."""

        sentiment_model = store_model("sentiment")
        topic_model = store_model("topic")

        def __init__(self) -> None:
            self._ready = False
            self.lifecycle = lifecycle
            self.metrics = get_metrics()
            self.runner = BatchRunner(settings.batch_timeout_seconds)
            self.engines: dict[str, Classifier] = {}
            self.explainers: dict[str, Explainer | None] = {}
            for task in TASKS:
                ref, source = self._bundle_ref(task)
                engine = engine_factory(task, ref, settings)
                if (mismatch := wrong_task(task, engine, settings)) is not None:
                    raise RuntimeError(mismatch)
                self.engines[task] = engine
                self.explainers[task] = explainer_factory(engine, settings)
                if self.explainers[task] is None:
                    log.warning("%s: the bundle has no explain variant that passed the export's "
                                "checks; POST /explain answers 422 for it until the model is "
                                "re-exported", task)
                log.info(
                    "%s: bundle %s (version %s), variant %s on %s, labels %s; long texts: %s",
                    task, source, engine.version, engine.variant, engine.provider, engine.labels,
                    long_texts_note(engine, settings),
                )
                if settings.max_windows is not None and engine.long_texts.rule != "chunk":
                    log.warning("%s: TEXTCLS_MAX_WINDOWS=%d applies to the chunk rule only; this "
                                "model reads long texts by %s", task, settings.max_windows,
                                engine.long_texts.rule)
                self.metrics.set_model_info(
                    task, version=engine.version, variant=engine.variant, provider=engine.provider
                )
                self.metrics.start_counters(task, engine.labels, [t.value for t in ErrorType],
                                            long_text_rule=engine.long_texts.rule)

        def _bundle_ref(self, task: str) -> tuple[str, str]:
            """The bundle directory for the engine, and how to name it in the log."""
            if getattr(type(self), f"{task}_model") is None:
                return settings.model_ref(task), settings.model_ref(task)
            # resolves through BentoML's model store: inside a Bento, the Bento's own copy
            stored = getattr(self, f"{task}_model")
            return str(stored.path), f"{stored.tag} from the model store"

        @bentoml.on_deployment
        def check_models() -> None:
            """Runs once in `bentoml serve`'s own process before it starts any worker
            (_bentoml_impl/server/serving.py:137-155,237): a model that cannot be served stops
            the server with one message and a non-zero exit. A failure in the worker instead
            would be logged and the worker respawned by circus, again and again."""
            problems = preflight(settings, engine_factory)
            if problems:
                raise BentoMLException("cannot serve; fix the model settings or re-export:\n  "
                                       + "\n  ".join(problems))

        @bentoml.on_startup
        def warm_up(self) -> None:
            for task, engine in self.engines.items():
                started = time.perf_counter()
                engine.warmup()
                log.info("%s: warm-up batch took %.3f s", task, time.perf_counter() - started)
            # start-up hooks run in the worker's main thread, after uvicorn set its signal
            # handlers (_bentoml_impl/server/app.py:304-327): the drain can take them over
            if not self.lifecycle.install():
                log.info("SIGTERM is left to the server: not in its main thread")
            self._ready = True

        async def __is_ready__(self) -> bool:
            # async: BentoML awaits it in the event loop; a sync one runs in a worker thread
            # (app.py:441-447) and a readiness probe would wait behind a running batch
            # /readyz answers 503 until this is true (_bentoml_impl/server/app.py:432-453); the
            # gate answers it 503 itself once the worker drains for shutdown
            return self._ready and not self.lifecycle.draining

        @bentoml.api(route="/sentiment", **batch_api)
        def sentiment(self, texts: list[str]) -> Predictions:
            """Sentiment of each text (negative/positive), in the order sent."""
            return self._classify("sentiment", texts)

        @bentoml.api(route="/topic", **batch_api)
        def topic(self, texts: list[str]) -> Predictions:
            """News topic of each text, in the order sent."""
            return self._classify("topic", texts)

        @bentoml.api(route=EXPLAIN_ROUTE, input_spec=explain_request)
        def explain(self, task: str, text: str, layer: int = -1, head: int | None = None) -> dict:
            """Tokens, predicted label and per-token attention-rollout weights of one text,
            computed by the bundle's `explain` ONNX variant."""
            explainer = self.explainers[task]
            if explainer is None:
                return shaped_response(ServiceError(
                    ErrorType.INVALID_INPUT,
                    f"explanations are not available for {task}: its bundle has no explain "
                    "variant that passed the export's checks; re-export it with `textcls export` "
                    "(it builds one by default)"))
            try:
                answer = explainer.explain(text, layer=layer, head=head).to_dict()
            except ExplainError as exc:  # a layer or head this model does not have
                return shaped_response(ServiceError(ErrorType.INVALID_INPUT, str(exc)))
            # cut to the character limit here, or to the model's max_length by the tokenizer
            answer["truncated"] = answer["truncated"] or getattr(text, "clipped", False)
            if answer["truncated"]:
                self.metrics.count_truncated(task)
            return answer

        def _classify(self, task: str, texts: list[str]) -> list[dict]:
            """One model call for a batch BentoML assembled from concurrent requests."""
            started = time.perf_counter()
            waits: dict[int, float] = {}
            for text in texts:
                if isinstance(text, ReceivedText):
                    waits.setdefault(text.request_id, started - text.received_at)
            self.metrics.observe_queue(task, waits.values())
            result = self.runner.run(self.engines[task], [str(text) for text in texts])
            if len(result.predictions) != len(texts):
                raise RuntimeError(
                    f"{task} engine answered {len(result.predictions)} predictions "
                    f"for {len(texts)} texts"
                )
            cut = sum(
                1 for text, truncated in itertools.zip_longest(texts, result.truncated)
                if truncated or getattr(text, "clipped", False)
            )
            self.metrics.observe_batch(task, result, truncated=cut,
                                       long_text_rule=self.engines[task].long_texts.rule)
            return [p.to_dict() for p in result.predictions]

    config: dict[str, Any] = {
        # One worker whose engines use every core it may (settings.threads), and one thread for
        # batches, so a sentiment batch and a topic batch never fight over the cores. Scale out
        # with replicas.
        "workers": 1,
        "threads": 1,
        # BentoML's access log decodes the request's Content-Type as UTF-8 when it logs the
        # response (bentoml/_internal/server/http/access.py:123); a byte over 0x7f there (legal
        # in HTTP) raised mid-response and cut the answer short. The log line keeps the rest.
        "logging": {"access": {"enabled": settings.access_log, "request_content_type": False}},
        # spans of the prediction routes cost more than anything else around the model
        # (docs/benchmarks.md); traced only when asked (TEXTCLS_TRACE_PREDICTIONS)
        "tracing": {"excluded_urls": [] if settings.trace_predictions
                    else [rf"{route}(\?|$)" for route in (*ROUTES, EXPLAIN_ROUTE)]},
        **(bentoml_config or {}),
    }
    svc = bentoml.service(name="TextClassifier", **config)(TextClassifier)
    svc.add_asgi_middleware(RequestGate, settings=settings, request_model=texts_request,
                            explain_model=explain_request, lifecycle=lifecycle)
    return svc


TextClassifier = build_service(load_settings())
