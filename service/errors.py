"""The service's errors: a closed set of types, one status table, one JSON shape.

Every error a client can see is ``{"error": "<what is wrong and what to do>", "type": "<type>"}``
with the status from ``STATUS``. Errors raised inside BentoML (its dispatcher's 503 when a request
would miss the latency bound, a failed batch's 500) are re-shaped by the request gate from their
status alone: their bodies are never read or passed on, so a 5xx never leaks internals.
"""

from __future__ import annotations

from enum import Enum


class ErrorType(str, Enum):
    MALFORMED_REQUEST = "malformed_request"  # the body is not JSON at all
    INVALID_INPUT = "invalid_input"  # JSON, but not {"texts": [...]} within the limits
    PAYLOAD_TOO_LARGE = "payload_too_large"
    REQUEST_TIMEOUT = "request_timeout"  # the body arrived too slowly (TEXTCLS_BODY_TIMEOUT_SECONDS)
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    OVERLOADED = "overloaded"  # shed: too many requests in flight, or the latency bound
    NOT_READY = "not_ready"  # models still loading or warming up
    SHUTTING_DOWN = "shutting_down"  # draining after SIGTERM: only admitted requests are answered
    TIMEOUT = "timeout"  # the model call for the request's batch exceeded its time limit
    NOT_FOUND = "not_found"  # no such route
    METHOD_NOT_ALLOWED = "method_not_allowed"  # a route asked with a method it does not answer
    INTERNAL = "internal"  # a bug or a failed batch; details only in the server log


STATUS: dict[ErrorType, int] = {
    ErrorType.MALFORMED_REQUEST: 400,
    ErrorType.INVALID_INPUT: 422,
    ErrorType.PAYLOAD_TOO_LARGE: 413,
    ErrorType.REQUEST_TIMEOUT: 408,
    ErrorType.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorType.OVERLOADED: 503,
    ErrorType.NOT_READY: 503,
    ErrorType.SHUTTING_DOWN: 503,
    ErrorType.TIMEOUT: 504,
    ErrorType.NOT_FOUND: 404,
    ErrorType.METHOD_NOT_ALLOWED: 405,
    ErrorType.INTERNAL: 500,
}

# What a client reads for errors whose cause it cannot fix or must not see.
DEFAULT_MESSAGE: dict[ErrorType, str] = {
    ErrorType.OVERLOADED: "the service is overloaded; retry after a short pause",
    ErrorType.NOT_READY: "the service is starting: models are loading or warming up",
    ErrorType.SHUTTING_DOWN: "this replica is shutting down; retry, another one will answer",
    ErrorType.TIMEOUT: "the model took too long on the batch holding this request; retry, or "
    "send fewer or shorter texts",
    ErrorType.NOT_FOUND: "no such endpoint; the service answers POST /sentiment, POST /topic and "
    "POST /explain (GET /docs describes them)",
    ErrorType.METHOD_NOT_ALLOWED: "this endpoint does not answer that method; the prediction "
    "endpoints take POST with a JSON body (GET /docs describes them)",
    ErrorType.INTERNAL: "internal error while classifying; the server log has the details",
}

# Set on an error response the service shaped itself (a 4xx only the model could detect, such as
# a layer it does not have): the gate passes such a response on instead of re-shaping it by status.
SHAPED_HEADER = "x-textcls-error"

# Seconds a shed client should wait; sent as Retry-After with 503s.
RETRY_AFTER_SECONDS = 1


class ServiceError(Exception):
    """An error with a type from the closed set and a message written for the client."""

    def __init__(self, type: ErrorType, message: str | None = None) -> None:
        message = message or DEFAULT_MESSAGE.get(type, type.value.replace("_", " "))
        super().__init__(message)
        self.type = type
        self.message = message

    @property
    def status(self) -> int:
        return STATUS[self.type]

    def body(self) -> dict[str, str]:
        return {"error": self.message, "type": self.type.value}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_SECONDS)} if self.status == 503 else {}


def from_status(status: int, *, readiness: bool = False) -> ServiceError:
    """The client-facing error for an error status produced inside BentoML."""
    if readiness:
        return ServiceError(ErrorType.NOT_READY)
    if status in (429, 503):
        return ServiceError(ErrorType.OVERLOADED)
    if status == 504:
        return ServiceError(ErrorType.TIMEOUT)
    if status >= 500:
        return ServiceError(ErrorType.INTERNAL)
    if status == 404:
        return ServiceError(ErrorType.NOT_FOUND)
    if status == 405:
        return ServiceError(ErrorType.METHOD_NOT_ALLOWED)
    if status == 413:
        return ServiceError(ErrorType.PAYLOAD_TOO_LARGE)
    if status == 415:
        return ServiceError(ErrorType.UNSUPPORTED_MEDIA_TYPE)
    # BentoML's own validation disagreeing with the gate's: still the client's input
    return ServiceError(ErrorType.INVALID_INPUT, "the request does not match the schema at /docs")
