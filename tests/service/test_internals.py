"""What service/internals.py assumes of uvicorn and of the process's sockets still holds for the
installed versions. A failure here means the graceful drain (service/lifecycle.py) no longer
finds what it stops: read service/internals.py, check the new version, then update it and its
CHECKED versions."""

from __future__ import annotations

import inspect
import signal
import socket

import uvicorn
from uvicorn.server import Server

from service import internals

BROKEN = "service/internals.py no longer matches the installed {what}: "


def test_uvicorn_installs_handle_exit_of_a_server_that_keeps_its_listeners():
    source = inspect.getsource(Server)
    assert "def handle_exit" in source and "def capture_signals" in source, \
        BROKEN.format(what=f"uvicorn {uvicorn.__version__}") + "no Server.handle_exit/capture_signals"
    server = Server(uvicorn.Config(app=lambda *a: None))
    assert internals.uvicorn_server_of(server.handle_exit) is server, \
        BROKEN.format(what=f"uvicorn {uvicorn.__version__}") + "its handler is not the server's"
    assert "self.servers" in inspect.getsource(Server.startup), \
        BROKEN.format(what=f"uvicorn {uvicorn.__version__}") + "Server.startup keeps no `servers`"
    with server.capture_signals():  # what a worker's SIGTERM handler is while it serves
        assert internals.uvicorn_server_of(signal.getsignal(signal.SIGTERM)) is server, \
            BROKEN.format(what=f"uvicorn {uvicorn.__version__}") + "SIGTERM is not handle_exit"


def test_a_handler_that_is_not_uvicorns_is_not_taken_for_a_server():
    assert internals.uvicorn_server_of(signal.default_int_handler) is None
    assert internals.uvicorn_server_of(lambda sig, frame: None) is None


def test_listening_sockets_finds_this_processes_listeners_and_nothing_else():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        found = [s.getsockname() for s in internals.listening_sockets()]
        assert listener.getsockname() in found, BROKEN.format(what="platform") + \
            "a listening socket of this process was not found through /proc/self/fd"
        assert client.getsockname() not in found  # a connected socket is not a listener
    finally:
        for s in (client, accepted, listener):
            s.close()


def test_the_versions_read_are_stated():
    assert set(internals.CHECKED) == {"uvicorn", "circus", "bentoml"}
    assert all(internals.CHECKED.values())


def test_bentomls_image_layout_is_read():
    path, uid = internals.bento_image_layout()
    assert path.startswith("/") and isinstance(uid, int) and uid > 0, \
        BROKEN.format(what="bentoml") + "no Bento path or uid in its container module"
