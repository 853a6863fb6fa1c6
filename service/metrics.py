"""Prometheus metrics of the service: prefix ``textcls_``, durations in seconds, labelled by task.

They are plain ``prometheus_client`` collectors on its default registry, which is what BentoML's
``/metrics`` exposes: in ``bentoml serve`` workers PROMETHEUS_MULTIPROC_DIR is set and the
endpoint merges every worker's files with a MultiProcessCollector (tests/service/
test_service_serve.py reads them there). ``bentoml.metrics`` is only a deprecated alias of
prometheus_client in BentoML 1.4, so it is not used.

prometheus_client picks its value store (memory or multiprocess files) when it is first imported,
so it is imported here only when the metrics are first made, inside the serving process, never at
module import.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from engine.engine import BatchResult

PREFIX = "textcls"

# Request and queue durations span one fast batch to the 2 s latency bound and beyond.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
# Tokenizing and one model call per batch: sub-millisecond to about a second on CPU.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)

# name (after the prefix) -> (kind, help, extra labels); every metric is labelled by task too.
CATALOGUE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "request_duration_seconds": (
        "histogram", "Successful prediction requests, from arrival to response, in seconds.", ()),
    "queue_duration_seconds": (
        "histogram", "Time a request waited in BentoML's batching queue before its batch ran.", ()),
    "tokenization_duration_seconds": ("histogram", "Tokenizing one batch, in seconds.", ()),
    "inference_duration_seconds": (
        "histogram", "ONNX Runtime time for one batch (all its sub-batches), in seconds.", ()),
    "batch_size": ("histogram", "Texts per model batch, across the requests batched together.", ()),
    "batch_tokens": ("histogram", "Real (non-pad) tokens per model batch.", ()),
    "batch_padded_tokens": (
        "histogram", "Tokens fed to the model per batch, padding included.", ()),
    "predictions_total": ("counter", "Predictions answered, by predicted label.", ("label",)),
    "truncated_texts_total": (
        "counter", ("Texts cut to the character limit, or of which the long-text rule left "
                    "tokens unread."), ()),
    "long_texts_total": (
        "counter", ("Texts over the model's max_length tokens, by the long-text rule that read "
                    "them."), ("rule",)),
    "text_windows_total": (
        "counter", ("Model inputs (windows) made from texts over max_length tokens: one per "
                    "text under truncate and head_tail, up to max_windows under chunk."), ("rule",)),
    "request_errors_total": (
        "counter", "Failed prediction requests, by error type (see docs/service.md).", ("type",)),
    "model_info": (
        "gauge", "The bundle each task serves: 1 for its version, variant and provider.",
        ("version", "variant", "provider")),
}


class ServiceMetrics:
    """The collectors, made once per process (prometheus_client refuses duplicates)."""

    def __init__(self) -> None:
        import prometheus_client as prom  # deferred: see the module docstring

        buckets = {
            "request_duration_seconds": REQUEST_BUCKETS,
            "queue_duration_seconds": REQUEST_BUCKETS,
            "tokenization_duration_seconds": STAGE_BUCKETS,
            "inference_duration_seconds": STAGE_BUCKETS,
            "batch_size": BATCH_SIZE_BUCKETS,
            "batch_tokens": TOKEN_BUCKETS,
            "batch_padded_tokens": TOKEN_BUCKETS,
        }
        self._m = {}
        for name, (kind, doc, labels) in CATALOGUE.items():
            full = f"{PREFIX}_{name}"
            labelnames = ("task", *labels)
            if kind == "histogram":
                metric = prom.Histogram(full, doc, labelnames, buckets=buckets[name])
            elif kind == "counter":
                # prometheus_client appends _total itself
                metric = prom.Counter(full.removesuffix("_total"), doc, labelnames)
            else:
                # livemax: a dead worker's info disappears, the live ones agree on the value 1
                metric = prom.Gauge(full, doc, labelnames, multiprocess_mode="livemax")
            self._m[name] = metric
        # labelled children, made once: labels() takes a lock and builds its key on every call,
        # and the event loop calls it per request (py-spy: 6% of the loop at 128 clients)
        self._children: dict[tuple, Any] = {}

    def _child(self, name: str, *labels: str) -> Any:
        child = self._children.get((name, labels))
        if child is None:
            child = self._children.setdefault((name, labels), self._m[name].labels(*labels))
        return child

    def observe_request(self, task: str, seconds: float) -> None:
        self._child("request_duration_seconds", task).observe(seconds)

    def observe_queue(self, task: str, waits: Iterable[float]) -> None:
        hist = self._child("queue_duration_seconds", task)
        for seconds in waits:
            hist.observe(seconds)

    def observe_batch(self, task: str, result: BatchResult, *, truncated: int,
                      long_text_rule: str) -> None:
        """One model batch; ``truncated`` counts its texts cut by characters or by tokens;
        ``long_text_rule`` is the rule the engine read texts over max_length tokens by."""
        self._child("tokenization_duration_seconds", task).observe(result.tokenize_seconds)
        self._child("inference_duration_seconds", task).observe(result.inference_seconds)
        self._child("batch_size", task).observe(len(result.predictions))
        self._child("batch_tokens", task).observe(result.tokens)
        self._child("batch_padded_tokens", task).observe(result.padded_tokens)
        if truncated:
            self._child("truncated_texts_total", task).inc(truncated)
        long = result.long_text_windows()
        if long:
            self._child("long_texts_total", task, long_text_rule).inc(len(long))
            self._child("text_windows_total", task, long_text_rule).inc(sum(long))
        counts: dict[str, int] = {}
        for p in result.predictions:
            counts[p.label] = counts.get(p.label, 0) + 1
        for label, n in counts.items():
            self._child("predictions_total", task, label).inc(n)

    def count_truncated(self, task: str, texts: int = 1) -> None:
        """Texts cut outside a model batch (POST /explain)."""
        self._child("truncated_texts_total", task).inc(texts)

    def count_error(self, task: str, error_type: str) -> None:
        self._child("request_errors_total", task, error_type).inc()

    def set_model_info(self, task: str, *, version: str, variant: str, provider: str) -> None:
        self._child("model_info", task, version, variant, provider).set(1)

    def start_counters(self, task: str, labels: Iterable[str], error_types: Iterable[str], *,
                       long_text_rule: str) -> None:
        """Expose every counter series at 0 from start-up, so rate() and alerts see them before
        the first event (a labelled series only exists once it is touched)."""
        self._child("truncated_texts_total", task)
        self._child("long_texts_total", task, long_text_rule)
        self._child("text_windows_total", task, long_text_rule)
        for label in labels:
            self._child("predictions_total", task, label)
        for error_type in error_types:
            self._child("request_errors_total", task, error_type)


_metrics: ServiceMetrics | None = None
_lock = threading.Lock()


def get_metrics() -> ServiceMetrics:
    """This process's metrics, made on first use."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = ServiceMetrics()
        return _metrics


def metric_names() -> list[str]:
    """Every exposed family name (as /metrics shows them), for docs and tests."""
    return [f"{PREFIX}_{name}" for name in CATALOGUE]
