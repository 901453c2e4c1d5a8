"""An unsigned 5xx answer (a proxy's error page in front of the team server) is said with its status.

A reverse proxy that cannot reach the server answers 502 or 503 with its own HTML page, unsigned.
A pinned engineer's transport refuses an unsigned answer before reading it; it said only "not signed
by the pinned server key: it lacks content-digest, ..." and the engineer could not tell a proxy's
failure from an attack (issue 14). Now an unsigned 5xx is ``StoreUnavailable`` naming the status,
with a hint that a proxy in front of the server or the server itself failed, and at most a short,
neutralised excerpt of the page (no markup, no terminal escape, no line break). A *signed* answer
whose status was changed stays refused as untrusted. The server here is a plain HTTP stub on
loopback (``http://`` is allowed to a loopback host).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from vault.authority.engineer_requests import WhoamiRequest
from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.errors import StoreUnavailable, UntrustedRecord
from vault.transport.https import EXCERPT, HttpsTransport

PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head><body>\r\n<center><h1>502 Bad Gateway</h1></center>"
    b'\x1b]0;owned\x07\x1b[2J internal upstream 10.0.0.7:8443 "quoted" ' + b"x" * 5000 + b"</body></html>"
)


class _Keys:
    def me(self) -> SimpleNamespace:
        return SimpleNamespace(engineer_id=7, key_generation=1)

    def my_signing_key(self) -> SigningKey:
        return SigningKey(bytes(32))


class _Proxy(BaseHTTPRequestHandler):
    """Answers every POST with the status its server was given and a proxy's error page."""

    def do_POST(self) -> None:  # http.server's name
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        for name, value in self.server.extra.items():  # type: ignore[attr-defined]
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def proxy() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    server.status, server.extra = 502, {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _transport(server: ThreadingHTTPServer, pinned: bool = True) -> HttpsTransport:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    key = (1, ServerSigningKey.generate(1).public) if pinned else None
    return HttpsTransport(url, _Keys(), server_key=key, timeout=5.0)


@pytest.mark.parametrize("status", [502, 503])
@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_an_unsigned_5xx_is_reported_with_its_status_and_a_neutralised_excerpt(
    proxy: ThreadingHTTPServer, status: int, pinned: bool
) -> None:
    proxy.status = status  # type: ignore[attr-defined]
    https = _transport(proxy, pinned)
    try:
        with pytest.raises(StoreUnavailable) as failed:
            https.call("engineers.whoami", WhoamiRequest())
    finally:
        https.close()
    message = str(failed.value)
    assert f"HTTP {status}" in message and "502 Bad Gateway" in message
    assert "proxy" in (failed.value.hint or "")
    said = message.split("it said: ", 1)[1]
    assert len(said) <= EXCERPT + 3  # the excerpt and its quotes
    assert not any(c in message for c in "<>\x1b\x07\r\n")  # no markup, no escape, no line break
    assert "x" * (EXCERPT + 1) not in message


def test_a_5xx_that_names_a_signature_which_does_not_verify_stays_untrusted(proxy: ThreadingHTTPServer) -> None:
    """An answer carrying a response signature's fields claims to be the server's: its failure to
    verify is a refusal (``UntrustedRecord``), whatever its status."""
    proxy.extra = {"Signature": "sv=:AAAA:", "Signature-Input": "sv=()"}  # type: ignore[attr-defined]
    https = _transport(proxy)
    try:
        with pytest.raises(UntrustedRecord):
            https.call("engineers.whoami", WhoamiRequest())
    finally:
        https.close()
