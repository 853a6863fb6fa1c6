"""The gate: ASGI middleware in front of BentoML's routes that every request passes first and every
response passes last (``Service.add_asgi_middleware``, BentoML's public hook).

It caps the prediction requests in flight, refuses oversized, slow and invalid bodies (413, 408,
400/422) before BentoML sees them, answers /readyz 503 until the models are warm and while the
worker drains, and turns every
error BentoML itself answers (its plain-text 404 and 405, a 503 of its readiness check) into the
one shape ``{"error", "type"}``. Nothing here knows the models.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, RedirectResponse

from core.tasks import TASKS
from service.errors import SHAPED_HEADER, ErrorType, ServiceError, from_status
from service.lifecycle import Lifecycle
from service.metrics import get_metrics
from service.schemas import validation_error
from service.settings import ServiceSettings

log = logging.getLogger("bentoml.textcls")

ROUTES = {f"/{task}": task for task in TASKS}
EXPLAIN_ROUTE = "/explain"


def shaped_response(err: ServiceError) -> JSONResponse:
    """An error response of our shape that the gate passes on as it is (see SHAPED_HEADER)."""
    headers = {**err.headers(), SHAPED_HEADER: err.type.value}
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


# Content types we read as JSON: curl -d sends form-urlencoded unless told otherwise, and the
# contract is JSON only, so anything else (multipart, BentoML's pickle) is refused.
JSON_LIKE = {"", "application/json", "application/x-www-form-urlencoded", "text/plain"}


class RequestGate:
    """ASGI middleware in front of BentoML's routes (Service.add_asgi_middleware).

    User middlewares sit inside BentoML's own and outside its routing, so every prediction
    request passes here first and every response passes here last.
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
            # BentoML serves Swagger UI at / and the spec at /docs.json
            return await RedirectResponse("/", status_code=307)(scope, receive, send)
        if path == "/readyz" and method in ("GET", "HEAD"):
            # answered here, not only by the service's __is_ready__, which BentoML before 1.4.x
            # never asks: ready once the models are warm, until the drain starts
            if self.lifecycle.draining:
                return await _error_response(ServiceError(ErrorType.SHUTTING_DOWN))(
                    scope, _no_receive, send)
            if not self.lifecycle.ready:
                return await _error_response(ServiceError(ErrorType.NOT_READY))(
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
            # traffic-timeout middleware otherwise waits 60 s for a first response, and
            # shutdown waits for it.
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
                if shaped is not None:
                    # our own shape, written by the service (an endpoint's ServiceError):
                    # counted, passed on
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
