"""One access-log line per request, and the request's id (docs/server.md §6).

A pure ASGI middleware, outermost: it gives each request a random id (``scope["state"]
["request_id"]``, also answered as ``X-Request-Id``), counts the body bytes read and written,
and when the answer is sent logs one line on the ``credvault.access`` logger::

    time=2026-12-05T15:02:17.123Z request=9f2c… route=/v1/{noun}/{operation} status=200 ms=3.1
    engineer=7 in=312 out=420

Only what the server decided: the route's *template* (never the path a client sent, which
could carry a name), the status, the time, the engineer id the signature proved (``-``
before that) and sizes. Never a header value, a body, a name, a slug or a query.

``Outcome`` (``scope["state"]["outcome"]``) is where the app writes the route template and
the engineer id as it learns them.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGGER = logging.getLogger("credvault.access")
NO_ROUTE = "-"


@dataclass
class Outcome:
    """What the app learned of one request that the log may show."""

    request_id: str
    route: str = NO_ROUTE
    engineer_id: int | None = None


def outcome_of(scope: Scope) -> Outcome:
    """The request's ``Outcome`` (one made here when the app runs without the access log: tests)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    found = state.get("outcome")
    if not isinstance(found, Outcome):
        found = state["outcome"] = Outcome(new_request_id())
    return found


def new_request_id() -> str:
    return secrets.token_hex(8)


class AccessLog:
    """Log one line per HTTP request, after its answer is sent."""

    def __init__(self, app: ASGIApp, logger: logging.Logger = LOGGER) -> None:
        self.app, self.logger = app, logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        outcome = outcome_of(scope)
        started = time.perf_counter()
        status, read, written = 0, 0, 0

        async def counted_receive() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
            return message

        async def counted_send(message: Message) -> None:
            nonlocal status, written
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (b"x-request-id", outcome.request_id.encode())],
                }
            elif message["type"] == "http.response.body":
                written += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            if self.listened():  # else (serve without --access-log) the line is not even built
                self._log(outcome, status, started, read, written)

    def listened(self) -> bool:
        """Whether a line would reach a handler (``credvault serve`` without ``--access-log``: none)."""
        return self.logger.isEnabledFor(logging.INFO) and self.logger.hasHandlers()

    def _log(self, outcome: Outcome, status: int, started: float, read: int, written: int) -> None:
        ms = (time.perf_counter() - started) * 1000
        engineer = "-" if outcome.engineer_id is None else str(outcome.engineer_id)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.logger.info(
            "time=%s request=%s route=%s status=%d ms=%.1f engineer=%s in=%d out=%d",
            now,
            outcome.request_id,
            outcome.route,
            status,
            ms,
            engineer,
            read,
            written,
        )
