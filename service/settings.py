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

from engine.long_texts import RULES
from core.system import DEFAULT_BATCH_TOKENS, available_cores

ENV_PREFIX = "TEXTCLS_"

log = logging.getLogger("bentoml.textcls")

# BentoML tag syntax: a lowercase name, optionally ":version" (bentoml/_internal/tag.py).
_NAME = r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?"
_VERSION = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_TAG = re.compile(rf"^{_NAME}(?::{_VERSION})?$")


def is_bundle_path(ref: str) -> bool:
    """A model ref names a directory when it looks like a path; otherwise it is a store tag."""
    return "/" in ref or ref.startswith((".", "~"))


class ServiceSettings(BaseSettings):
    """Everything an operator can tune, each field read from ``TEXTCLS_<FIELD NAME>``."""

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
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Execution provider: `auto` picks CUDA (with the bundle's GPU variant) when "
        "onnxruntime-gpu sees a GPU, else CPU (with the CPU variant); `cuda` fails at start-up "
        "when no GPU is usable.",
    )
    threads: int = Field(
        default_factory=available_cores,
        ge=1,
        description="ONNX Runtime intra-op threads per model. Default: the cores this process may "
        "use (os.sched_getaffinity). Under a Kubernetes CPU limit set it to the limit: affinity "
        "does not see CFS quotas.",
    )
    batch_tokens: int = Field(
        default=DEFAULT_BATCH_TOKENS,
        ge=16,
        le=1_000_000,
        description="Padded tokens per ONNX Runtime call: a batch's texts, sorted by length, go "
        "to the model in calls of as many texts as fit (text-embeddings-inference's "
        "max-batch-tokens). The default was fastest on this CPU for one-text and mixed-length "
        "loads (docs/benchmarks.md).",
    )
    max_batch_size: int = Field(
        default=64,
        ge=2,  # BentoML rejects max_batch_size <= 1 (_bentoml_sdk/method.py:64)
        le=4096,
        description="Most texts BentoML's adaptive batcher puts into one model call, across "
        "concurrent requests. A request with more texts is split over batches.",
    )
    max_latency_ms: int = Field(
        default=2000,
        ge=10,
        description="Longest a request may wait in the batch queue: one that has waited this "
        "long when its batch would start is answered 503 `overloaded` instead (service/"
        "batching.py). A bound on queueing under overload, not a latency target.",
    )
    batching: Literal["free", "bentoml"] = Field(
        default="free",
        description="When a batch starts. `free`: the moment the model is free (service/"
        "batching.py). `bentoml`: BentoML's own dispatcher, which holds a lone request after a "
        "burst (docs/service.md); kept to compare the two (docs/benchmarks.md).",
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
    long_texts: str = Field(
        default="",
        description="What the model reads of a text over its max_length tokens: `truncate` (its "
        "start), `head_tail` (its start and its end) or `chunk` (windows over the whole text, at "
        "most TEXTCLS_MAX_WINDOWS, their logits averaged). Empty: the rule the bundle records, "
        "the one it was trained with (docs/service.md#long-texts).",
    )
    max_windows: int | None = Field(
        default=None,
        ge=1,
        description="`chunk`: most windows (model inputs) read of one text; a longer text is read "
        "by that many spread over it. Empty: the bundle's. Each window costs a model input.",
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

    @field_validator("long_texts", mode="before")
    @classmethod
    def _long_text_rule(cls, rule: object) -> object:
        if isinstance(rule, str):
            rule = rule.strip()
            if rule and rule not in RULES:
                raise ValueError(f"{rule!r} is not a long-text rule: give {', '.join(RULES)}, or "
                                 "leave it empty for the rule the bundle records")
        return rule

    @field_validator("max_windows", mode="before")
    @classmethod
    def _empty_is_the_bundles(cls, value: object) -> object:
        # `TEXTCLS_MAX_WINDOWS=` (as in a ConfigMap) means unset
        return None if isinstance(value, str) and not value.strip() else value

    def model_ref(self, task: str) -> str:
        return getattr(self, f"{task}_model")


class SettingsError(BentoMLException):
    """Invalid TEXTCLS_* settings; the message names each variable and what is wrong with it.
    A BentoMLException, so `bentoml serve` prints it as one message, not a traceback
    (bentoml_cli/utils.py:353-371)."""


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
