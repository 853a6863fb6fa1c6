"""The batching strategy behind ``@bentoml.api(batchable=True)``: dispatch when the model is free.

BentoML keeps the API (``batchable``, ``max_batch_size``, ``max_latency_ms``) and the mechanics
(the queue, splitting a request over batches, handing every caller its slice, failing every
caller of a failed batch); this module replaces only the *when* of a batch.

Why: BentoML's ``CorkDispatcher`` (bentoml/_internal/marshal/dispatcher.py, 1.4.39) holds a batch
until ``n * (wait of the newest request + 1 ms + o_a) > 0.95 * optimizer.wait``, where
``optimizer.wait`` is the mean over the last 50 batches of how long each batch's first request
waited (lines 43-96, 314-319). Under a burst only one batch runs at a time, so every first
request waits about a batch duration; after the burst a lone request is held that long on
purpose, and the hold feeds the mean back to itself (measured: docs/benchmarks.md). No setting
reaches it (``@bentoml.api`` takes only batchable, batch_dim, max_batch_size, max_latency_ms).
It also polls every 1 ms while a batch runs, and sheds requests (503) by a linear cost model that
predicts, rather than measures, missing ``max_latency_ms``.

The strategy here is Triton's dynamic batcher with ``max_queue_delay_microseconds`` (and
text-embeddings-inference's loop): one batch runs at a time (as in BentoML); the moment the model
is free, everything queued (up to ``max_batch_size`` texts) goes, so under load batches grow by
themselves with the requests that arrived during the previous one, and a lone request goes at
once. ``max_queue_delay_ms`` (default 0) lets an idle model wait that long for companions. A
request that has already waited ``max_latency_ms`` when its batch would start is answered 503
(BentoML's ``process is overloaded``): measured, not predicted.

The patch is pinned: ``install`` refuses a BentoML whose dispatcher it has not been checked
against, and tests/service/test_batching_strategy.py checks that the served app uses it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing as t

import bentoml
from _bentoml_impl.server import app as bentoml_app
from bentoml._internal.marshal.dispatcher import CorkDispatcher, Job

log = logging.getLogger("bentoml.textcls")

# Versions whose CorkDispatcher (queue, _get_inputs, outbound_call, the futures) this subclass was
# read against; 1.4.40's dispatcher.py is the same file.
SUPPORTED_BENTOML = ("1.4.39", "1.4.40")


class FreeModelDispatcher(CorkDispatcher):
    """A CorkDispatcher whose controller dispatches as soon as the model is free."""

    # set by install(); seconds an idle model waits for more requests before it starts a batch
    max_queue_delay: t.ClassVar[float] = 0.0

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle = asyncio.Event()
        self._idle.set()

    async def controller(self) -> None:
        while True:
            try:
                async with self._wake_event:  # until a request is queued
                    await self._wake_event.wait_for(self._queue.__len__)
                if self._sema.is_locked():
                    # a batch is running: requests keep queueing; look again when it ends
                    await self._idle.wait()
                    continue
                if self.max_queue_delay > 0:
                    await self._hold()
                if not self._sema.is_locked():  # (a batch may have started meanwhile)
                    self._dispatch()
            except asyncio.CancelledError:
                raise
            except Exception:  # as BentoML's controller: log and keep serving
                log.exception("error while dispatching a batch")

    async def _hold(self) -> None:
        """Wait until the oldest request has waited max_queue_delay or a full batch is queued."""
        deadline = self._queue[0].enqueue_time + self.max_queue_delay

        def full() -> bool:
            return self._queued_texts() >= self.max_batch_size

        remaining = deadline - time.time()
        if remaining <= 0 or full():
            return
        try:
            async with self._wake_event:
                await asyncio.wait_for(self._wake_event.wait_for(full), remaining)
        except TimeoutError:
            pass

    def _queued_texts(self) -> int:
        return sum(self.get_batch_size(job.data) for job in self._queue)

    def _shed_expired(self) -> None:
        """Answer 503 (the fallback) to requests that already waited max_latency_ms."""
        now = time.time()
        while self._queue and now - self._queue[0].enqueue_time >= self.max_latency:
            job: Job = self._queue.popleft()
            job.future.cancel()

    async def outbound_call(self, inputs_info: tuple[Job, ...], training: bool = False) -> None:
        """BentoML's outbound_call, except that the next batch starts before this one's answers
        go out: answering 64 requests takes the event loop tens of milliseconds, during which
        the model would otherwise sit idle (a quarter of the time at 128 clients, measured)."""
        try:
            outputs = await self.callback(tuple(job.data for job in inputs_info))
            if len(outputs) != len(inputs_info):
                raise RuntimeError(f"a batch of {len(inputs_info)} requests answered "
                                   f"{len(outputs)} results")
        except Exception as exc:  # every caller of the batch gets the error (as BentoML)
            outputs = [exc] * len(inputs_info)
        except BaseException:
            for job in inputs_info:
                if not job.future.done():
                    job.future.cancel()
            self._release()
            raise
        self._release()
        if self._queue and not self._sema.is_locked():
            self._dispatch()
            await asyncio.sleep(0)  # let the next batch reach the model thread first
        for job, out in zip(inputs_info, outputs):
            if not job.future.done():
                job.future.set_result(out)

    def _release(self) -> None:
        self._sema.release()
        self._idle.set()

    def _dispatch(self) -> None:
        self._shed_expired()
        if not self._queue:
            return
        self._idle.clear()
        self._sema.acquire()
        self._loop.create_task(self.outbound_call(tuple(self._get_inputs())))


def install(max_queue_delay_ms: float, strategy: str = "free") -> None:
    """Make BentoML's service app build a FreeModelDispatcher for every batchable API (strategy
    "free"), or BentoML's own CorkDispatcher again ("bentoml", for comparisons).

    ServiceAppFactory.__init__ (_bentoml_impl/server/app.py:117-135) builds its dispatchers from
    the module's global ``CorkDispatcher`` when the app is made, after the service module is
    imported, so replacing that name here covers `bentoml serve`, the Bento and ``to_asgi()``.
    """
    if bentoml.__version__ not in SUPPORTED_BENTOML:
        raise RuntimeError(
            f"service/batching.py replaces the batch dispatcher of BentoML {SUPPORTED_BENTOML}, "
            f"but BentoML {bentoml.__version__} is installed; read its "
            "bentoml/_internal/marshal/dispatcher.py, check the subclass still fits, then add the "
            "version to SUPPORTED_BENTOML"
        )
    current = bentoml_app.CorkDispatcher
    if current is not CorkDispatcher and current is not FreeModelDispatcher:
        raise RuntimeError(f"BentoML's dispatcher was already replaced by {current!r}")
    FreeModelDispatcher.max_queue_delay = max_queue_delay_ms / 1000.0
    bentoml_app.CorkDispatcher = FreeModelDispatcher if strategy == "free" else CorkDispatcher
