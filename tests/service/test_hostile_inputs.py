"""Issue 12: the corpus of hostile inputs (tests/data/hostile_inputs.json) against a real
`bentoml serve` with its default limits, over raw sockets so every byte is the corpus's own.

Whatever the case: no 5xx; every 4xx the service answers is {"error": non-empty, "type": ...}
(malformed HTTP, which uvicorn refuses with its own text/plain 400 before the service sees it, is
marked `http_layer` in the corpus); no body shows a stack trace or a server path; nothing new in
the server log looks like a crash; and afterwards GET /livez and a valid request answer 200. Each
case adds its own expectation (the status, the error type and message, one prediction per text).
Slow bodies run next to a normal request that must be answered promptly. After the corpus:
stalled bodies at the in-flight cap, the server alive, and last a SIGTERM that must stop it
promptly.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from processes import ROOT, free_port, serve_command, serve_env, serving
from service.errors import ErrorType
from service.settings import ServiceSettings

pytestmark = pytest.mark.reliability

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "hostile_inputs.json").read_text("utf-8"))
CASES = CORPUS["cases"]
BODY_KEYS = ("json", "raw", "raw_latin1", "parts")
ERROR_TYPES = {t.value for t in ErrorType}
LEAKS = ("Traceback", 'File "', "site-packages", str(ROOT))
CRASH_MARKERS = ("Traceback (most recent call last)", "Exception in ASGI application",
                 "unhandled error")
ANSWER_TIMEOUT = 60  # seconds for any answer; a hang fails the case instead of the run
PROMPT = 3.0  # seconds a normal request may take while a slow client is being served
SHUTDOWN_GRACE = 2  # TEXTCLS_SHUTDOWN_GRACE_SECONDS of the server


@pytest.fixture(scope="module")
def server(tiny_bundles, tmp_path_factory):
    """`bentoml serve` of the project with its default limits, on the tiny bundles; the process
    too, for the last test, which stops it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("hostile") / "serve.log"
    # a short drain, so that the last test can tell a prompt stop from a stuck one
    env = serve_env(TEXTCLS_SHUTDOWN_GRACE_SECONDS=str(SHUTDOWN_GRACE))
    with serving(serve_command(port), f"{url}/readyz", log, env=env, what="bentoml serve") as proc:
        yield url, log, proc


# --- building the request from its corpus entry ------------------------------------------------

def _expand(parts: list) -> str:
    return "".join((piece if isinstance(piece, str) else _expand(piece)) * times
                   for piece, times in parts)


def body_of(case: dict[str, Any]) -> bytes:
    given = [key for key in BODY_KEYS if key in case]
    assert len(given) <= 1, f"{case['name']}: more than one body ({given})"
    if "json" in case:
        return json.dumps(case["json"], ensure_ascii=False).encode("utf-8")
    if "raw" in case:
        return case["raw"].encode("utf-8")
    if "raw_latin1" in case:
        return case["raw_latin1"].encode("latin-1")
    if "parts" in case:
        return _expand(case["parts"]).encode("utf-8")
    return b""


def head_of(case: dict[str, Any], port: int, body: bytes) -> bytes:
    send = case.get("send", {})
    lines = [f"{case.get('method', 'POST')} {case.get('route', '/sentiment')} HTTP/1.1",
             f"Host: 127.0.0.1:{port}", "Connection: close"]
    content_type = case.get("content_type", "application/json")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{name}: {value}" for name, value in case.get("headers", [])]
    how = send.get("how", "whole")
    if how == "chunked":
        lines.append("Transfer-Encoding: chunked")
    elif how == "truncated":
        lines.append(f"Content-Length: {len(body) + send['missing_bytes']}")
    elif "content_length" in send:
        if send["content_length"] is not None:
            lines.append(f"Content-Length: {send['content_length']}")
    else:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(body: bytes, size: int, *, drop_last: bool = False) -> bytes:
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    if drop_last:  # the last data chunk and the terminating zero chunk never come
        return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks[:-1])
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


# --- reading the answer ----------------------------------------------------------------------

@dataclass
class Answer:
    status: int | None = None  # None: no answer at all, the connection was closed (cut off)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = True  # False: the answer started but the connection closed before its end

    @property
    def cut_off(self) -> bool:
        return self.status is None

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        if self.cut_off:
            return "no answer (connection closed)"
        return f"{self.status} {self.headers.get('content-type', '')} {self.text()[:300]!r}" + (
            "" if self.complete else " [body cut short]")


def read_answer(sock: socket.socket, deadline: float, data: bytes = b"") -> Answer:
    """The answer on `sock` (after `data`, what came while sending), read until the server closes
    (every request says Connection: close)."""
    while True:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"no complete answer within {ANSWER_TIMEOUT}s; got {data[:300]!r}")
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    if not data:
        return Answer()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    answer = Answer(status=int(status_line.split()[1]), headers=headers, body=body)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        answer.body, answer.complete = _unchunk(body)
    elif "content-length" in headers:
        answer.complete = len(body) == int(headers["content-length"])
    return answer


def _unchunk(data: bytes) -> tuple[bytes, bool]:
    out = b""
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            return out, False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out, True
        out, data = out + data[:size], data[size + 2:]


def _send_reading(sock: socket.socket, data: bytes, deadline: float) -> bytes:
    """Sends `data` while reading what comes back: the server may answer (413) and close before
    the body is all in, and what it answered must not be lost to a reset. Returns what was read."""
    received = b""
    sock.setblocking(False)
    try:
        while data and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            if writable:
                data = data[sock.send(data[:65536]):]
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.setblocking(True)
    return received


def exchange(case: dict[str, Any], port: int) -> Answer:
    """Sends the case's request as its `send` says and reads the answer."""
    body = body_of(case)
    head = head_of(case, port, body)
    send = case.get("send", {})
    how = send.get("how", "whole")
    deadline = time.monotonic() + ANSWER_TIMEOUT
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if how == "chunked":
            received = _send_reading(sock, head + chunked(
                body, send["chunk_bytes"], drop_last=send.get("drop_last", False)), deadline)
        elif how == "slow":
            data = head + body if send.get("headers_too") else body
            if not send.get("headers_too"):
                sock.sendall(head)
            for i in range(len(data)):
                sock.sendall(data[i:i + 1])
                time.sleep(send["byte_delay"])
        else:
            received = _send_reading(sock, head + body, deadline)
        if send.get("then") == "close":
            return Answer()  # the client is gone: nothing to read, only the server to check
        if send.get("then") == "shutdown":
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock, deadline, received)


# --- the checks ------------------------------------------------------------------------------

def assert_always(case: dict[str, Any], answer: Answer) -> None:
    """What holds for every case, whatever it expects."""
    if answer.cut_off:
        return
    assert answer.complete, f"the answer broke off: {answer}"
    assert answer.status < 500, f"server error: {answer}"
    text = answer.text()
    leaked = [marker for marker in LEAKS if marker in text]
    assert not leaked, f"the body shows {leaked}: {answer}"
    if 400 <= answer.status < 500 and not case["expect"].get("http_layer"):
        assert answer.headers.get("content-type", "").startswith("application/json"), str(answer)
        body = answer.json()
        assert isinstance(body, dict) and set(body) == {"error", "type"}, str(answer)
        assert isinstance(body["error"], str) and body["error"].strip(), str(answer)
        assert body["type"] in ERROR_TYPES, str(answer)


def assert_expected(case: dict[str, Any], answer: Answer) -> None:
    expect = case["expect"]
    if answer.cut_off:
        assert "cut_off_or_status" in expect or expect.get("or_cut_off"), (
            "the connection closed without an answer")
        return
    statuses = expect.get("cut_off_or_status") or [expect["status"]]
    assert answer.status in statuses, f"expected {statuses}, got {answer}"
    if answer.status == 200:
        if case.get("route", "/sentiment") == "/explain":
            assert answer.json()["tokens"], str(answer)
        else:
            predictions = answer.json()
            assert len(predictions) == expect["predictions"], str(answer)
            for p in predictions:
                assert p["label"] in p["scores"] and p["score"] == p["scores"][p["label"]], p
    if "type" in expect:
        assert answer.json()["type"] == expect["type"], str(answer)
    if "error_contains" in expect:
        assert expect["error_contains"] in answer.json()["error"], str(answer)


def assert_alive(url: str) -> None:
    assert httpx.get(f"{url}/livez", timeout=10).status_code == 200
    response = httpx.post(f"{url}/sentiment", json={"texts": ["a fine film", "dull"]}, timeout=30)
    assert response.status_code == 200 and len(response.json()) == 2, response.text


def assert_log_calm(log: Path, since: int) -> None:
    """Nothing the server logged since byte `since` looks like a crash."""
    with log.open("rb") as f:
        f.seek(since)
        new = f.read().decode("utf-8", "replace")
    found = [marker for marker in CRASH_MARKERS if marker in new]
    assert not found, f"the server log shows {found}:\n{new[-3000:]}"


# --- the tests -------------------------------------------------------------------------------

def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case["xfail"])] if "xfail" in case else []
        yield pytest.param(case, id=case["name"], marks=marks)


def test_the_corpus_is_well_formed():
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for case in CASES:
        assert sum(key in case for key in BODY_KEYS) <= 1, case["name"]
        assert {"status", "cut_off_or_status"} & set(case["expect"]), case["name"]
        if case["expect"].get("status") == 200 and case.get("route", "/sentiment") != "/explain":
            assert "predictions" in case["expect"], case["name"]
    # what issue 12 asks the corpus to hold
    wanted = ["empty-text", "whitespace-texts", "megabyte-text", "ten-thousand-texts",
              "invalid-utf8", "lone-high-surrogate", "null-bytes-escaped", "right-to-left",
              "combining-characters", "emoji", "nested-arrays-100k", "content-type-html",
              "truncated-body-then-eof", "slow-body"]
    assert set(wanted) <= set(names), set(wanted) - set(names)


@pytest.mark.parametrize("case", list(_params()))
def test_hostile_input(server, case):
    url, log, _ = server
    port = int(url.rsplit(":", 1)[1])
    since = log.stat().st_size
    if case.get("send", {}).get("how") == "slow":
        answer = _with_a_normal_request_meanwhile(url, case, port)
    else:
        answer = exchange(case, port)
    assert_always(case, answer)
    assert_expected(case, answer)
    assert_alive(url)
    assert_log_calm(log, since)


def _with_a_normal_request_meanwhile(url: str, case: dict[str, Any], port: int) -> Answer:
    """The slow client is served on its own; a normal request sent meanwhile is not held up."""
    outcome: dict[str, Any] = {}

    def slow_client() -> None:
        try:
            outcome["answer"] = exchange(case, port)
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=slow_client, daemon=True)
    thread.start()
    time.sleep(0.3)  # the slow request has started sending
    started = time.monotonic()
    response = httpx.post(f"{url}/topic", json={"texts": ["markets rallied"]}, timeout=30)
    took = time.monotonic() - started
    assert thread.is_alive(), "the slow request was over before the normal one was sent"
    assert response.status_code == 200, response.text
    assert took < PROMPT, f"a normal request took {took:.2f}s while a slow client was sending"
    thread.join(ANSWER_TIMEOUT + 30)
    assert not thread.is_alive(), "the slow request was never answered nor cut off"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["answer"]


def test_stalled_bodies_do_not_starve_other_requests(server):
    url, _, _ = server
    port = int(url.rsplit(":", 1)[1])
    slots = ServiceSettings.model_fields["max_concurrent_requests"].default
    body = json.dumps({"texts": ["a fine film"]}).encode()
    head = head_of({"name": "stalled"}, port, body)
    stalled = []
    try:
        for _ in range(slots):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(head + body[:10])  # and nothing more
            stalled.append(sock)
        time.sleep(0.5)
        started = time.monotonic()
        response = httpx.post(f"{url}/sentiment", json={"texts": ["still served?"]}, timeout=30)
        took = time.monotonic() - started
        assert response.status_code == 200, f"{response.status_code} {response.text}"
        assert took < PROMPT, f"a normal request took {took:.2f}s next to {slots} stalled bodies"
    finally:
        for sock in stalled:
            sock.close()


def test_the_server_is_alive_after_the_corpus(server):
    """Last: whatever ran before (the stalled clients included) left the server serving."""
    url, _, _ = server
    deadline = time.monotonic() + 10
    while True:  # the stalled clients' slots come back as the server notices them gone
        response = httpx.post(f"{url}/sentiment", json={"texts": ["a fine film"]}, timeout=30)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 200, response.text
    assert_alive(url)
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200


def test_the_server_stops_promptly_after_the_corpus(server):
    """Very last (it stops the module's server): SIGTERM after the hostile inputs, a truncated
    body sent here too (so the test stands alone under -k), ends the server within its drain
    bound."""
    url, log, proc = server
    port = int(url.rsplit(":", 1)[1])
    truncated = next(case for case in CASES if case["name"] == "truncated-body-then-eof")
    assert exchange(truncated, port).cut_off
    assert_alive(url)
    limit = SHUTDOWN_GRACE + 10  # the drain, then uvicorn's and BentoML's own shutdown
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        tail = log.read_text()[-1500:]
        os.killpg(proc.pid, signal.SIGKILL)  # the fixture's stop() would wait 30 s more
        proc.wait(timeout=10)
        pytest.fail(f"the server still ran {limit} s after SIGTERM; its log ends:\n{tail}")
    assert proc.returncode == 0, proc.returncode
