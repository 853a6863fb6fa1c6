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

The tests also check what `bentoml build` and `bentoml containerize` make of this project, and
read two facts of BentoML's image build that no public API states (used by tests only):

3. ``bento_image_layout()``: where BentoML's Dockerfile puts the Bento in the image and the uid
   and gid it runs as (``bentoml._internal.container.generate``), which the Kubernetes manifests
   must match. Checked: BentoML 1.4.20, 1.4.39, 1.4.40.
4. ``write_bento_requirements(target, root)``: the requirements file BentoML writes into a Bento
   from bentofile.yaml (``BentoBuildConfig...write_to_bento``), offline. Checked: BentoML 1.4.39.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
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


def bento_image_layout() -> tuple[str, int]:
    """(the Bento's path in a BentoML image, the uid and gid its processes run as)."""
    from bentoml._internal.container.generate import BENTO_PATH, BENTO_UID_GID

    return BENTO_PATH, BENTO_UID_GID


def write_bento_requirements(target: Path, root: Path) -> Path:
    """What `bentoml build` writes as the Bento's env/python/requirements.txt, written under
    ``target``; returns its path."""
    from bentoml._internal.bento.build_config import BentoBuildConfig

    with (root / "bentofile.yaml").open() as f:
        config = BentoBuildConfig.from_yaml(f).with_defaults()
    config.python.write_to_bento(target, str(root))
    return target / "env" / "python" / "requirements.txt"


def _open_fds() -> list[int]:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return sorted(int(name) for name in os.listdir(folder))
        except OSError:
            continue
    return []
