"""Graceful shutdown: what a worker does between SIGTERM and its exit.

How the signal travels (read in BentoML 1.4, circus 0.18, uvicorn 0.54; docs/reliability.md;
what the drain touches beyond public APIs is in service/internals.py):
- `bentoml serve` is a circus arbiter. SIGTERM (or SIGINT) to it stops its watchers: each worker
  gets SIGTERM and the arbiter waits for it (its graceful_timeout, a day), then closes the
  listening socket it created and passed to the workers.
- A worker is a uvicorn server on that socket. Its SIGTERM handler (``Server.handle_exit``)
  sets should_exit; shutdown then closes the listener, closes every idle keep-alive connection at
  once, waits for the responses in progress, and runs the lifespan shutdown. A client that sends
  its next request on a keep-alive connection just as it is closed gets no answer, and the
  listening socket stays open in the arbiter until the worker has exited, so connections made in
  that window are accepted by the kernel and then reset. Nothing in that path turns /readyz to
  503 or bounds the wait.

So the worker takes over the signal first (``Lifecycle.install``, from the service's start-up hook,
which runs in the worker's main thread after uvicorn installed its handlers):
1. at once: ``draining``: /readyz and every new prediction request are answered 503
   ``shutting_down`` with ``Connection: close``, and the listening socket is shut down for every
   process that holds it, so new connections are refused rather than queued and reset;
2. the requests already admitted (queued in our batcher or running) are answered as usual,
   also with ``Connection: close``;
3. when none is left (and ``LINGER_SECONDS`` more, for requests still unread in open
   connections), or after ``TEXTCLS_SHUTDOWN_GRACE_SECONDS``, uvicorn's own handler runs and the
   worker exits; past the grace period it is told to stop waiting (its force exit).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from typing import Any

from service.internals import close_asyncio_servers, listening_sockets, uvicorn_server_of

log = logging.getLogger("bentoml.textcls")

SIGNALS = (signal.SIGTERM, signal.SIGINT)

# After the last admitted request is answered, how long requests arriving on connections that are
# already open still get their 503 before the idle connections are closed.
LINGER_SECONDS = 1.0


class Lifecycle:
    """Requests in flight in this worker, and whether it is draining for shutdown."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.in_flight = 0  # admitted: queued in the batcher or running
        self.reading = 0  # bodies being read (bounded by TEXTCLS_BODY_TIMEOUT_SECONDS)
        self.ready = False  # the models are loaded and warm (set by the service's start-up hook)
        self.draining = False
        self.answered_while_draining = 0
        self.refused_while_draining = 0
        self._handlers: dict[int, Any] = {}
        self._drain_task: asyncio.Task | None = None  # the loop holds tasks only weakly

    @property
    def busy(self) -> int:
        """Requests the drain waits for: admitted ones, and bodies that started arriving before
        the signal (they are admitted, or refused, when complete)."""
        return self.in_flight + self.reading

    def install(self) -> bool:
        """Take over SIGTERM and SIGINT in this worker; False where it cannot (not the main thread,
        or no handler to hand over to, as in tests that run the app in process)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        if not all(callable(handler) for handler in previous.values()):
            return False
        self._handlers = previous
        for sig in SIGNALS:
            signal.signal(sig, lambda sig, frame: loop.call_soon_threadsafe(self._on_signal, sig))
        return True

    def _on_signal(self, sig: int) -> None:
        """Runs in the event loop, scheduled by the signal handler."""
        name = signal.Signals(sig).name
        if self.draining:
            if sig == signal.SIGINT:  # a second Ctrl-C: stop waiting, as uvicorn does
                log.warning("%s while draining: exiting without waiting for %d request(s)",
                            name, self.in_flight)
                self._hand_over(sig, force=True)
            # a repeated SIGTERM (circus forwards the one the arbiter got, and `kill` of the
            # process group sends its own) must not cut the drain short
            return
        self.draining = True
        closed = shut_listeners(self._uvicorn_server())
        log.info("%s: draining: %d request(s) in flight, /readyz answers 503, %d listening "
                 "socket(s) closed; waiting up to %.0f s", name, self.in_flight, closed,
                 self.grace_seconds)
        self._drain_task = asyncio.get_running_loop().create_task(self._drain(sig))

    async def _drain(self, sig: int) -> None:
        started = time.monotonic()
        deadline = started + self.grace_seconds
        in_flight_at_signal = self.in_flight

        async def until_idle() -> None:
            while self.busy and time.monotonic() < deadline:
                await asyncio.sleep(0.02)

        await until_idle()
        # Requests that were sent on kept-alive connections while the loop was busy may still
        # sit unread in their sockets: closing those connections now would reset them. Answer
        # them (503, Connection: close) for a moment before uvicorn closes what is idle.
        await asyncio.sleep(max(0.0, min(LINGER_SECONDS, deadline - time.monotonic())))
        await until_idle()  # any that were admitted meanwhile
        waited = time.monotonic() - started
        if self.busy:
            log.error("drain: %d request(s) still in flight after the %.0f s grace period; "
                      "exiting without them", self.busy, self.grace_seconds)
            self._hand_over(sig, force=True)
            return
        log.info("drain: done in %.2f s: %d request(s) in flight at the signal, %d answered "
                 "while draining, %d new ones refused with 503", waited, in_flight_at_signal,
                 self.answered_while_draining, self.refused_while_draining)
        self._hand_over(sig, force=False)

    def _hand_over(self, sig: int, *, force: bool) -> None:
        handler = self._handlers.get(sig)
        if not callable(handler):
            return
        handler(sig, None)
        if force:  # uvicorn: SIGINT while already exiting means do not wait
            handler(signal.SIGINT, None)

    def _uvicorn_server(self) -> Any:
        """The uvicorn Server whose handle_exit we took over, if it is one."""
        for handler in self._handlers.values():
            server = uvicorn_server_of(handler)
            if server is not None:
                return server
        return None


def shut_listeners(server: Any) -> int:
    """Stop accepting connections: shut down every listening TCP socket of this process (the
    socket is shared with the circus arbiter and any sibling worker, and shutdown() acts on the
    socket itself, so new connections are refused for all of them instead of waiting in a
    backlog that nobody accepts), then close uvicorn's asyncio servers so the event loop stops
    polling them. Returns the number of sockets shut down."""
    closed = 0
    for sock in listening_sockets():
        try:
            sock.shutdown(socket.SHUT_RD)
            closed += 1
        except OSError:
            pass
    close_asyncio_servers(server)
    return closed
