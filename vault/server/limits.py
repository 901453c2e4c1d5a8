"""The body limit: a pure ASGI middleware (docs/server.md §2, Limits).

Starlette reads a body as far as the client sends it; this middleware bounds what is read.
Each route has a limit (``default``, 64 KiB, unless ``routes`` names a larger one: the bulk
routes). A request whose ``Content-Length`` is over it, or not a plain decimal number, is
answered 413 / 400 before anything of the body is read. Without a ``Content-Length`` (a
chunked body) or with one that lies, the ``http.request`` chunks are counted as the app
reads them; the chunk that crosses the limit raises ``InvalidInput(BODY_TOO_LARGE)``, which
the app answers 413, and nothing after it is read. So at most the limit and one chunk are
ever read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vault.errors import InvalidInput
from vault.server import problems

DEFAULT_LIMIT = 64 * 1024
BULK_LIMIT = 8 * 1024 * 1024


class BodyLimit:
    """Refuse (413) a request body over its route's limit, reading at most the limit and one chunk."""

    def __init__(self, app: ASGIApp, *, default: int = DEFAULT_LIMIT, routes: Mapping[str, int] | None = None) -> None:
        if default <= 0 or any(limit <= 0 for limit in (routes or {}).values()):
            raise ValueError("a body limit is a positive number of bytes")
        self.app, self.default, self.routes = app, default, dict(routes or {})

    def limit_for(self, path: str) -> int:
        return self.routes.get(path, self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and (declared < 0 or declared > limit):
            marker = problems.BODY_TOO_LARGE if declared > limit else "the Content-Length is not a number"
            await _answer(send, InvalidInput(marker, hint=f"this route takes at most {limit} bytes"))
            return
        read = 0

        async def bounded() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise InvalidInput(problems.BODY_TOO_LARGE, hint=f"this route takes at most {limit} bytes")
            return message

        await self.app(scope, bounded, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length; -1 for a value that is not one decimal number (or given twice)."""
    values = [value for name, value in scope.get("headers", ()) if name.lower() == b"content-length"]
    if not values:
        return None
    if len(values) > 1 or not values[0].isdigit() or len(values[0]) > 18:
        return -1
    return int(values[0])


async def _answer(send: Send, error: InvalidInput) -> None:
    status, headers, body = problems.problem(error)
    raw: list[Any] = [(name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()]
    raw += [(b"content-length", str(len(body)).encode("ascii")), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
