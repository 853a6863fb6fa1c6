"""Service settings: one pydantic-settings model read from ``TEXTCLS_*`` environment variables.

The service module builds its settings when it is imported, which is when ``bentoml serve`` (or
``bentoml build``) starts: a bad value stops the server before it binds a port, with a message
that names the variable. docs/service.md lists every field; a test keeps that table in sync.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Literal

from bentoml.exceptions import BentoMLException
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.options import EngineOptions

ENV_PREFIX = "TEXTCLS_"

log = logging.getLogger("bentoml.textcls")

# BentoML tag syntax: a lowercase name, optionally ":version".
_NAME = r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?"
_VERSION = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_TAG = re.compile(rf"^{_NAME}(?::{_VERSION})?$")


def is_bundle_path(ref: str) -> bool:
    """A model ref names a directory when it looks like a path; otherwise it is a store tag."""
    return "/" in ref or ref.startswith((".", "~"))


class ServiceSettings(BaseSettings, EngineOptions):
    """Everything an operator can tune, each field read from ``TEXTCLS_<FIELD NAME>``; the
    engine's own knobs (device, threads, batch_tokens, long_texts, max_windows) are declared once,
    in engine.options.EngineOptions, which the batch job and the CLI share."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    sentiment_model: str = Field(
        default="sentiment",
        description="Bundle served at POST /sentiment: a BentoML model store tag (`sentiment`, "
        "`sentiment:VERSION`; the latest version when none is given), packed into the Bento, or "
        "a bundle directory (a value containing `/`), which is served but not packed.",
    )
    topic_model: str = Field(
        default="topic",
        description="Bundle served at POST /topic; same forms as TEXTCLS_SENTIMENT_MODEL.",
    )
    max_batch_size: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Most texts one batch (one model call) holds, across concurrent requests "
        "(service/batcher.py). A request with more texts is split over batches.",
    )
    max_latency_ms: int = Field(
        default=2000,
        ge=10,
        description="Longest a request may wait in the batch queue: one that has waited this "
        "long when its batch would start is answered 503 `overloaded` instead (service/"
        "batcher.py). A bound on queueing under overload, not a latency target.",
    )
    max_queue_delay_ms: float = Field(
        default=0,
        ge=0,
        le=1000,
        description="How long an idle model waits for more requests before it starts a batch "
        "(Triton's max_queue_delay). 0: a batch starts the moment the model is free, so a lone "
        "request is never held; under load batches still grow with what queued during the "
        "previous one (docs/benchmarks.md).",
    )
    max_texts_per_request: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Most texts one request may carry; more is answered 422.",
    )
    max_chars_per_text: int = Field(
        default=10_000,
        ge=1,
        description="Characters per text beyond which a text is over-long (see TEXTCLS_OVERLONG). "
        "Bounds tokenizer work; 512 tokens of English are about 2,500 characters.",
    )
    overlong: Literal["truncate", "refuse"] = Field(
        default="truncate",
        description="What to do with a text over TEXTCLS_MAX_CHARS_PER_TEXT: `truncate` cuts it "
        "to the limit, `refuse` answers 422. What the model reads of a text over its max_length "
        "tokens is TEXTCLS_LONG_TEXTS' rule; texts cut either way are counted in "
        "textcls_truncated_texts_total.",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body in bytes; larger bodies are answered 413 before they "
        "are parsed.",
    )
    max_concurrent_requests: int = Field(
        default=256,
        ge=1,
        description="Prediction requests one worker holds at once (queued or running); more are "
        "answered 503 at once instead of queueing without bound.",
    )

    body_timeout_seconds: float = Field(
        default=10,
        gt=0,
        le=600,
        description="Longest a client may take to send a prediction request's body; slower "
        "bodies are answered 408, so stalled clients cannot hold the "
        "TEXTCLS_MAX_CONCURRENT_REQUESTS slots (a 1 MiB body at 1 Mbit/s takes 8 s).",
    )
    shutdown_grace_seconds: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="After SIGTERM, the longest a worker waits for the requests it already "
        "accepted before it exits without them. Meanwhile /readyz and new requests get 503 and "
        "new connections are refused. Keep Kubernetes' terminationGracePeriodSeconds at least "
        "the preStop pause + this + 5 s (k8s/base/deployment.yaml).",
    )
    batch_timeout_seconds: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="Longest one model call (one batch) may take; past it every request in "
        "the batch is answered 504 `timeout` and the next batch runs on a fresh thread (the "
        "stuck call cannot be interrupted; it is counted in textcls_errors_total). The default is "
        "far above any normal batch (docs/reliability.md has the figures).",
    )

    access_log: bool = Field(
        default=False,
        description="BentoML's access log, one line per request. Off by default: it cost about "
        "7% of the worker's CPU per request (docs/benchmarks.md), and /metrics counts requests, "
        "latencies and errors by type. Turn it on to debug single requests.",
    )
    trace_predictions: bool = Field(
        default=False,
        description="Trace the prediction routes with BentoML's OpenTelemetry middleware. Off "
        "by default: it was the largest per-request cost around the model (about 31%, "
        "docs/benchmarks.md) and its spans go nowhere unless a tracing exporter is configured "
        "in BentoML's config; turn it on together with one.",
    )

    @field_validator("sentiment_model", "topic_model")
    @classmethod
    def _model_ref(cls, ref: str) -> str:
        ref = ref.strip()
        if is_bundle_path(ref):
            path = Path(ref).expanduser()
            if not path.is_dir():
                raise ValueError(f"no bundle directory at {ref}")
            return str(path)
        if not _TAG.match(ref):
            raise ValueError(
                f"{ref!r} is neither a model store tag (name or name:version) nor a path "
                "(a bundle directory path must contain '/')"
            )
        return ref

    def model_ref(self, task: str) -> str:
        return getattr(self, f"{task}_model")


class SettingsError(BentoMLException):
    """Invalid TEXTCLS_* settings; the message names each variable and what is wrong with it.
    A BentoMLException, so `bentoml serve` prints it as one message, not a traceback
    (tests/service/test_start_faults.py)."""


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def load_settings(**overrides) -> ServiceSettings:
    """Settings from the environment (overrides win), failing with one line per bad variable."""
    known = {env_name(f) for f in ServiceSettings.model_fields}
    for name in sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known):
        # not fatal: other textcls stages may read their own TEXTCLS_ variables
        log.warning("%s is not a service setting and is ignored; docs/service.md lists them", name)
    try:
        return ServiceSettings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "settings"
            value = os.environ.get(env_name(field), err.get("input"))
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {env_name(field)}={value!s}: {message}")
        raise SettingsError("invalid service settings:\n" + "\n".join(lines)) from None
