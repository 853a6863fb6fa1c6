"""Every place the service touches a dependency beyond its public API, in one module.

BentoML offers no public hook for a graceful drain: nothing turns /readyz to 503 on SIGTERM or
stops new connections while admitted requests finish (docs/reliability.md). The drain
(service/lifecycle.py) therefore reaches two things that are not anyone's public API, each named
here with the versions it was read against; tests/service/test_internals.py checks each against
the installed packages and fails with this module's name when one no longer holds.

1. ``uvicorn_server_of(handler)``: the uvicorn ``Server`` whose ``handle_exit`` is the worker's
   SIGTERM handler (a bound method; its ``servers`` are the asyncio servers that accept
   connections, set when it starts). uvicorn installs ``Server.handle_exit`` for SIGTERM/SIGINT in
   ``capture_signals``. Checked: uvicorn 0.54.0 (BentoML 1.4.39 and 1.4.40 serve with it).
2. ``listening_sockets()``: the listening TCP sockets of this process, found through
   ``/proc/self/fd`` (``/dev/fd`` elsewhere). BentoML's arbiter (circus) creates the socket and
   passes its file descriptor to each worker; no API of BentoML or circus names it. Checked:
   BentoML 1.4.39/1.4.40 with circus 0.18.3, Linux.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Iterator

CHECKED = {"uvicorn": ("0.54.0",), "circus": ("0.18.3",), "bentoml": ("1.4.39", "1.4.40")}


def uvicorn_server_of(handler: Any) -> Any | None:
    """The uvicorn Server a signal handler belongs to, when it is uvicorn's ``handle_exit``."""
    server = getattr(handler, "__self__", None)
    if server is not None and hasattr(server, "should_exit") and hasattr(server, "handle_exit"):
        return server
    return None


def close_asyncio_servers(server: Any) -> None:
    """Stop the event loop polling uvicorn's listening sockets."""
    for asyncio_server in getattr(server, "servers", []) or []:
        asyncio_server.close()


def listening_sockets() -> Iterator[socket.socket]:
    """This process's listening TCP sockets, each a duplicate closed after use."""
    for fd in _open_fds():
        try:
            copy = os.dup(fd)
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=copy)
        except OSError:  # not a socket
            os.close(copy)
            continue
        with sock:
            try:
                listening = sock.type == socket.SOCK_STREAM and sock.getsockopt(
                    socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            except OSError:
                listening = False
            if listening:
                yield sock


def _open_fds() -> list[int]:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return sorted(int(name) for name in os.listdir(folder))
        except OSError:
            continue
    return []
