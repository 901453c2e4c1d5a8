"""uvicorn's HTTP/1.1 protocol for ``credvault serve``: httptools (C) with h11's bound on a head.

Under the W16 team load every engineer process, both servers and PostgreSQL share two cores:
uvicorn's pure-Python parser (h11) and asyncio's pure-Python TLS were about a fifth of the
server's CPU per checkout (docs/performance-server.md). With ``httptools`` and ``uvloop``
installed (dependencies of the project) ``uvicorn_config`` runs this protocol on uvloop.

h11 refuses a request whose head (request line and headers) passes 16 KiB before it ends
(``h11_max_incomplete_event_size``); llhttp has no such bound, and httptools keeps a header's
pieces until it ends. ``BoundedHttpTools`` keeps h11's bound: the bytes received while a head
is incomplete are counted, and past ``MAX_HEAD`` the request is answered 400 and the
connection closed, before the app sees anything (at most one read's worth beyond the bound
is held); a head that arrived whole in one read is measured when it ends (its target and
header lines) and refused the same way. Bodies keep their own limits (``limits.BodyLimit``).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD = 16 * 1024  # h11's default bound on an incomplete event, which uvicorn's h11 protocol keeps
HEAD_TOO_LARGE = "Request head too large."


class BoundedHttpTools(HttpToolsProtocol):
    """``HttpToolsProtocol`` refusing a head over ``MAX_HEAD`` bytes (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._heading, self._head = True, 0  # in a request's head; its bytes so far

    def data_received(self, data: bytes) -> None:
        if self._heading:
            self._head += len(data)
        super().data_received(data)
        if self._heading and self._head > MAX_HEAD and not self.transport.is_closing():
            self.logger.warning(HEAD_TOO_LARGE)
            self.send_400_response(HEAD_TOO_LARGE)

    def on_headers_complete(self) -> None:
        self._heading = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)  # "": "", CRLF
        if size > MAX_HEAD:  # a head that came whole in one read: uvicorn answers 400 and closes
            self.logger.warning(HEAD_TOO_LARGE)
            raise ValueError(HEAD_TOO_LARGE)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._heading, self._head = True, 0  # the next request on this connection
