"""The bound on a request's head under ``credvault serve``'s HTTP protocol (docs/server.md §2,
Limits; ``vault/server/http_protocol.py``): httptools parses, and a head over 16 KiB is refused
400 with the connection closed before the app sees it, as h11 refused it. A real uvicorn on
loopback (plain HTTP: the parser is what is tested), driven with raw sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from vault.server.app import build_app
from vault.server.http_protocol import HEAD_TOO_LARGE, MAX_HEAD, BoundedHttpTools
from vault.server.running import ServeOptions, uvicorn_config
from vault.storage.engine import Store
from vault.wire.httpsig import MemoryNonceStore


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    url = f"sqlite:///{tmp_path_factory.mktemp('head') / 'unused.db'}"
    store = Store(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    number = int(sock.getsockname()[1])
    app = build_app(store, public_url=f"http://127.0.0.1:{number}", nonce_store=MemoryNonceStore())
    config = uvicorn_config(app, ServeOptions(url, bind=f"127.0.0.1:{number}"))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield number
    server.should_exit = server.force_exit = True  # as served.running: no wait for idle connections
    thread.join(20)
    store.close()


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` at once; everything the server answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(data)
        received = b""
        conn.settimeout(1.0)
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def get(headers: bytes) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"Connection: close\r\n\r\n"


def test_the_server_parses_with_httptools_under_the_bound() -> None:
    config = uvicorn_config(object(), ServeOptions("sqlite://", bind="127.0.0.1:1"))  # type: ignore[arg-type]
    assert config.http is BoundedHttpTools


def test_a_head_over_sixteen_kibibytes_is_refused_and_the_connection_closed(port: int) -> None:
    answer = exchange(port, get(b"X-Padding: " + b"a" * (MAX_HEAD + 1024) + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 400 ") and b"connection: close" in answer.lower()
    assert b'"status":"ok"' not in answer


def test_a_head_sent_in_pieces_is_counted_across_them(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = b""
        try:
            for _ in range(24):  # a header line at a time, never ending the head
                conn.sendall(b"X-Padding: " + b"a" * 1000 + b"\r\n")
                time.sleep(0.005)
        except OSError:
            pass  # the server closed the connection while this was still sending
        conn.settimeout(2.0)
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert answer.startswith(b"HTTP/1.1 400 ") and HEAD_TOO_LARGE.encode() in answer


def test_a_head_within_the_bound_and_a_large_body_in_the_same_write_are_served(port: int) -> None:
    assert b'"status":"ok"' in exchange(port, get(b"X-Padding: " + b"a" * (MAX_HEAD - 2048) + b"\r\n"))
    body = b"{" + b" " * (60 * 1024) + b"}"
    head = b"POST /v1/engineers/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    answer = exchange(port, head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    assert answer.startswith(b"HTTP/1.1 401 ")  # the app's answer (unsigned), not the parser's 400


def test_requests_kept_alive_each_get_the_bound_afresh(port: int) -> None:
    one = get(b"X-Padding: " + b"a" * (MAX_HEAD // 2) + b"\r\n").replace(b"Connection: close\r\n", b"")
    answer = exchange(port, one * 3)
    assert answer.count(b"HTTP/1.1 200 ") == 3
