"""Our own batching queue: when a batch starts is a decision this module owns, tests and measures.

One ``Batcher`` per served model, a plain asyncio class as text-embeddings-inference's queue
(``core/src/queue.rs``) and MLServer's adaptive batcher (``mlserver/batching/adaptive.py``) are:

- a request's texts become one queue entry (or several, when it holds more than a batch) that
  carries its own arrival time, so queue time is measured, not inferred;
- one batch runs at a time per model; the moment the model is free, everything queued (up to
  ``max_batch_size`` texts, whole entries in arrival order) goes, so a lone request starts at once
  and under load batches grow by themselves with what arrived during the previous one (Triton's
  dynamic batcher with ``max_queue_delay_microseconds`` = 0). ``max_queue_delay`` > 0 lets an
  idle model wait that long for companions;
- an entry that has already waited ``max_latency`` when its batch would start is answered
  ``Overloaded`` (503): measured, not predicted;
- the next batch is handed to the model *before* the answers of the previous one go out:
  answering 64 requests takes the event loop tens of milliseconds, during which the model would
  otherwise sit idle (a quarter of the time at 128 clients, measured with BentoML's dispatcher);
- when a batch fails, every entry in it gets the error and no other entry does.

It knows nothing of HTTP, BentoML or the engine: ``process`` is any coroutine function from a
list of texts to one output per text.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

log = logging.getLogger("bentoml.textcls")

R = TypeVar("R")


class Overloaded(Exception):
    """The entry waited ``max_latency`` in the queue before its batch could start."""


@dataclass(eq=False)
class Entry:
    """Texts of one request (or one slice of a request larger than a batch) in the queue."""

    texts: list[str]
    request: int  # the request this entry belongs to: a request split over entries has one id
    first: bool  # the first slice of its request (queue time is counted once per request)
    arrived: float = field(default_factory=time.perf_counter)
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def waited(self, now: float) -> float:
        return now - self.arrived


class Batcher(Generic[R]):
    """A queue of entries and the one task that turns them into batches, one at a time."""

    def __init__(
        self,
        process: Callable[[list[str]], Awaitable[Sequence[R]]],
        *,
        max_batch_size: int,
        max_latency: float,
        max_queue_delay: float = 0.0,
        on_batch_start: Callable[[list[Entry], float], None] | None = None,
        name: str = "",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.process = process
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency
        self.max_queue_delay = max_queue_delay
        self.on_batch_start = on_batch_start
        self.name = name
        self.batches = 0
        self.shed = 0
        self._queue: collections.deque[Entry] = collections.deque()
        self._queued_texts = 0
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._requests = itertools.count()

    @property
    def queued(self) -> int:
        """Texts waiting for a batch."""
        return self._queued_texts

    async def submit(self, texts: Sequence[str]) -> list[R]:
        """One output per text, in order, once the batches holding them have run."""
        if not texts:
            return []
        self._start()
        request = next(self._requests)
        size = self.max_batch_size
        entries = [Entry(list(texts[i:i + size]), request, first=i == 0)
                   for i in range(0, len(texts), size)]
        for entry in entries:
            self._queue.append(entry)
            self._queued_texts += len(entry.texts)
        self._arrived.set()
        if len(entries) == 1:
            return await entries[0].future
        try:
            parts = await asyncio.gather(*(e.future for e in entries))
        finally:
            for entry in entries:  # a failed slice: the rest are not waited for
                if not entry.future.done():
                    entry.future.cancel()
        return [out for part in parts for out in part]

    async def close(self) -> None:
        """Stop the batch task; entries still queued are cancelled."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        while self._queue:
            self._queue.popleft().future.cancel()
        self._queued_texts = 0

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._arrived = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            if self.max_queue_delay > 0:
                await self._hold()
            batch = self._take()
            if not batch:
                continue
            self.batches += 1
            texts = [text for entry in batch for text in entry.texts]
            if self.on_batch_start is not None:
                try:  # metrics: never worth a batch
                    self.on_batch_start(batch, time.perf_counter())
                except Exception:
                    log.exception("%s: recording a batch's start failed", self.name)
            try:
                outputs = await self.process(texts)
                if len(outputs) != len(texts):
                    raise RuntimeError(f"a batch of {len(texts)} texts answered {len(outputs)} "
                                       "results")
            except asyncio.CancelledError:
                for entry in batch:
                    entry.future.cancel()
                raise
            except Exception as exc:  # every entry of the batch gets the error, no other
                loop.call_soon(_fail, batch, exc)
                continue
            # answered after the next batch has reached the model (its process() starts the
            # model call before it first yields to the loop)
            loop.call_soon(_answer, batch, outputs)

    async def _hold(self) -> None:
        """Wait until the oldest entry has waited max_queue_delay, or a full batch is queued."""
        deadline = self._queue[0].arrived + self.max_queue_delay
        while self._queued_texts < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[Entry]:
        """The next batch: entries in arrival order up to max_batch_size texts, after answering
        Overloaded to those that waited past max_latency (the oldest are at the front)."""
        now = time.perf_counter()
        queue = self._queue
        while queue and queue[0].waited(now) >= self.max_latency:
            entry = queue.popleft()
            self._queued_texts -= len(entry.texts)
            self.shed += 1
            if not entry.future.done():
                entry.future.set_exception(Overloaded(
                    f"waited {entry.waited(now):.3f} s for a batch (bound {self.max_latency:g} s)"))
        batch: list[Entry] = []
        size = 0
        while queue and (not batch or size + len(queue[0].texts) <= self.max_batch_size):
            entry = queue.popleft()
            size += len(entry.texts)
            if entry.future.done():  # its caller went away (cancelled)
                self._queued_texts -= len(entry.texts)
                size -= len(entry.texts)
                continue
            batch.append(entry)
        self._queued_texts -= size
        return batch


def _answer(batch: list[Entry], outputs: Sequence) -> None:
    start = 0
    for entry in batch:
        end = start + len(entry.texts)
        if not entry.future.done():
            entry.future.set_result(list(outputs[start:end]))
        start = end


def _fail(batch: list[Entry], exc: Exception) -> None:
    for entry in batch:
        if not entry.future.done():
            entry.future.set_exception(exc)
