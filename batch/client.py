"""Scoring through a running textcls service (``--url``): ``POST /<task>`` with ``{"texts": [...]}``.

Requests of ``request_size`` texts go out ``concurrency`` at a time (a thread pool over one
``httpx.Client`` whose connection pool has as many connections), so the job never queues more on
the service than it asked for. A connection error, a time-out, or a 429/502/503/504 answer (the
service sheds load with 503 and ``Retry-After``) is tried again after a pause: ``Retry-After``
when the answer gives one, else an exponential backoff with jitter, each pause capped, at most
``retries`` times. Then the run stops with a message; the rows it committed stay committed, and the
same command resumes. A 413 or 422 for a request of several texts splits it in two until the text
the service refuses is alone: that row gets the service's message in its error column, the others
are scored.

The backoff is these few lines rather than tenacity: it must read ``Retry-After``, report each
pause, and split 413/422 requests, which would need most of this code around tenacity anyway, and
the Bento would ship one more package.
"""

from __future__ import annotations

import email.utils
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, NamedTuple

import httpx

from core.errors import UserError

RETRY_STATUS = {429, 502, 503, 504}
# the service's 422 for a request over TEXTCLS_MAX_TEXTS_PER_REQUEST (service/service.py)
_TOO_MANY = re.compile(r"at most (\d+) are accepted per request")
PROBE_TEXT = "textcls score: which labels does this model have?"


class Outcome(NamedTuple):
    """One text's prediction (label, its probability, every class's probability in label order),
    or why it has none."""

    label: str | None
    score: float | None
    probs: list[float] | None
    error: str = ""


class ServiceUnavailable(UserError):
    """The service did not answer within the retry budget, or answered what we cannot use."""


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5  # tries after the first
    backoff: float = 0.5  # first pause without Retry-After, in seconds; doubled after each try
    max_wait: float = 30.0  # cap on any one pause, Retry-After included

    def wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_wait)
        # jittered between half and all of the pause: clients shed together do not return together
        return min(self.max_wait, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return str(body)[:200]


class ServiceScorer:
    """Scores texts through ``{url}/{task}``; ``connect()`` first learns the labels and the model."""

    def __init__(self, url: str, task: str, *, concurrency: int = 4, request_size: int = 32,
                 policy: RetryPolicy = RetryPolicy(), timeout: float = 120.0,
                 note: Callable[[str], None] = lambda message: None) -> None:
        self.url = url.rstrip("/")
        self.task = task
        self.route = f"/{task}"
        self.request_size = request_size
        self.policy = policy
        self.note = note
        # set by close(): requests still pausing between tries give up at once instead of
        # keeping a failed or interrupted run waiting for their backoff
        self._closing = threading.Event()
        self.labels: list[str] = []
        self.identity: dict[str, str] = {}
        self.http = httpx.Client(
            base_url=self.url, timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="textcls-score")

    def close(self) -> None:
        self._closing.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.http.close()

    def connect(self) -> None:
        """Wait until the service is ready, read the model it serves for the task, and its labels."""
        self._send("GET", "/readyz")  # 503 until the models are loaded and warm: tried again
        info = self.model_info()
        probe = self._send("POST", self.route, json={"texts": [PROBE_TEXT]})
        if probe.status_code == 404:
            raise UserError(f"{self.url} has no endpoint {self.route}: is it the textcls service, "
                            "and is --task right?")
        if probe.status_code != 200:
            raise ServiceUnavailable(f"{self.url}{self.route} answered HTTP {probe.status_code} to a "
                                     f"one-text request: {_message(probe)}")
        try:
            self.labels = list(probe.json()[0]["scores"])
        except (ValueError, LookupError, TypeError):
            raise ServiceUnavailable(f"{self.url}{self.route} did not answer a list of predictions "
                                     "with `scores`: is it the textcls service?") from None
        if info is None:
            self.note(f"{self.url}/metrics does not say which model serves {self.task}; the run "
                      "records the URL instead, and cannot notice a model change")
            self.identity = {"task": self.task, "version": "unknown", "variant": "unknown", "url": self.url}
        else:
            self.identity = {"task": self.task, **info}

    def model_info(self) -> dict[str, str] | None:
        """version and variant from the service's ``textcls_model_info{task,version,variant,...}``."""
        from prometheus_client.parser import text_string_to_metric_families

        response = self._send("GET", "/metrics")
        if response.status_code != 200:
            return None
        found = set()
        try:
            for family in text_string_to_metric_families(response.text):
                for sample in family.samples:
                    if (sample.name == "textcls_model_info" and sample.value > 0
                            and sample.labels.get("task") == self.task):
                        found.add((sample.labels.get("version", "unknown"),
                                   sample.labels.get("variant", "unknown")))
        except ValueError:  # not Prometheus text
            return None
        if len(found) != 1:
            return None
        version, variant = found.pop()
        return {"version": version, "variant": variant}

    def check(self) -> None:
        """Stop before committing a chunk if the service's model changed during the run."""
        if self.identity.get("version") == "unknown":
            return
        info = self.model_info()
        if info is not None and info["version"] != self.identity["version"]:
            raise ServiceUnavailable(
                f"the service at {self.url} now serves {self.task} version {info['version']} "
                f"(variant {info['variant']}); this run started with version "
                f"{self.identity['version']}. The rows scored with the old model stay committed; "
                "run again with --restart to score every row with the new one."
            )

    def score(self, texts: list[str]) -> list[Outcome]:
        requests = [texts[i: i + self.request_size] for i in range(0, len(texts), self.request_size)]
        return [o for outcomes in self.pool.map(self._score, requests) for o in outcomes]

    def _score(self, texts: list[str]) -> list[Outcome]:
        response = self._send("POST", self.route, json={"texts": texts})
        status = response.status_code
        if status == 200:
            return self._outcomes(texts, response)
        if status == 422 and (match := _TOO_MANY.search(_message(response))):
            raise UserError(f"--request-size {self.request_size} is over the service's limit of "
                            f"{match.group(1)} texts per request; lower --request-size.")
        if status in (413, 422):
            if len(texts) > 1:  # find the text the service refuses; score the others
                half = len(texts) // 2
                return self._score(texts[:half]) + self._score(texts[half:])
            return [Outcome(None, None, None, f"the service refused it (HTTP {status}): {_message(response)}")]
        if status == 404:
            raise UserError(f"{self.url} has no endpoint {self.route}: is --url right?")
        raise ServiceUnavailable(f"{self.url}{self.route} answered HTTP {status}: {_message(response)}")

    def _outcomes(self, texts: list[str], response: httpx.Response) -> list[Outcome]:
        try:
            answers = response.json()
            if len(answers) != len(texts):
                raise ValueError(f"{len(answers)} predictions for {len(texts)} texts")
            return [Outcome(a["label"], float(a["score"]), [float(a["scores"][k]) for k in self.labels])
                    for a in answers]
        except (ValueError, LookupError, TypeError) as exc:
            raise ServiceUnavailable(f"{self.url}{self.route} answered something other than one "
                                     f"prediction per text with the labels {self.labels}: {exc}") from None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer to one request, tried again on connection errors, time-outs and 429/5xx
        overload answers, within the retry policy."""
        started = time.monotonic()
        for attempt in range(self.policy.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                problem, pause = f"{type(exc).__name__} ({exc or 'no detail'})", None
            else:
                if response.status_code not in RETRY_STATUS:
                    return response
                problem = f"HTTP {response.status_code} ({_message(response)})"
                pause = retry_after(response)
            if attempt == self.policy.retries:
                break
            wait = self.policy.wait(attempt, pause)
            self.note(f"{self.url}{path}: {problem}; try {attempt + 2} of {self.policy.retries + 1} "
                      f"in {wait:.1f} s")
            if self._closing.wait(wait):
                raise ServiceUnavailable(f"{self.url}{path}: {problem}; the run is stopping")
        tries = self.policy.retries + 1
        raise ServiceUnavailable(
            f"{self.url}{path}: {problem}, {tries} tr{'y' if tries == 1 else 'ies'} in "
            f"{time.monotonic() - started:.0f} s. Is the service running and is --url right? Rows "
            "already committed are kept: run the same command again to resume (more tries: --retries)."
        )
