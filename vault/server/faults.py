"""A test-only crash seam: ``credvault serve`` SIGKILLs itself at a chosen point of a write.

docs/server.md §7 ("SIGKILL"): tests kill a server subprocess at three points of an audited
write (a route whose events ``eventrequest.ROUTE_ACTIONS`` names) and then check the database
and a retried request. The seam is armed only when the environment holds BOTH
``CREDVAULT_TEST_FAULTS=1`` and ``CREDVAULT_FAULT=<point>``; otherwise ``armed`` returns the
app as it is and installs nothing (a stray ``CREDVAULT_FAULT`` in production does nothing).

Points:

* ``before-commit``: the unit has appended its event (``INSERT INTO audit_events`` ran on the
  connection) and is about to commit: the process dies before the database commits;
* ``after-commit``: the unit committed and the handler returned its answer; the process dies
  before the response's first byte leaves;
* ``mid-response``: the status line, the headers and half of the body have been sent; the
  process dies before the rest.

``tests/server/test_server_kill.py`` is the user. Nothing here is reachable from a request.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vault.errors import ConfigurationError
from vault.storage.engine import Store
from vault.wire.eventrequest import operation_of

ENABLE, POINT = "CREDVAULT_TEST_FAULTS", "CREDVAULT_FAULT"
POINTS = ("before-commit", "after-commit", "mid-response")
_APPENDED = "credvault_fault_appended"


def chosen(environ: Mapping[str, str] = os.environ) -> str | None:
    """The point this process is to die at, or None (the seam is not enabled)."""
    if environ.get(ENABLE) != "1" or not environ.get(POINT):
        return None
    point = environ[POINT]
    if point not in POINTS:
        raise ConfigurationError(f"{POINT} is one of {', '.join(POINTS)}")
    return point


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def armed(app: ASGIApp, store: Store, environ: Mapping[str, str] = os.environ) -> ASGIApp:
    """``app``, with the seam the environment asks for (module docstring); else ``app`` itself."""
    point = chosen(environ)
    if point == "before-commit":
        event.listen(store.engine, "before_cursor_execute", _mark)
        event.listen(store.engine, "rollback", lambda conn: conn.info.pop(_APPENDED, None))
        event.listen(store.engine, "commit", _commit)
        return app
    if point is None:
        return app
    return _ResponseFault(app, point)


def _mark(conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
    if statement.startswith("INSERT INTO audit_events"):
        conn.info[_APPENDED] = True


def _commit(conn: Any) -> None:  # fired before the driver's commit
    if conn.info.pop(_APPENDED, False):
        die()


class _ResponseFault:
    """Dies after an audited write's answer is ready (``after-commit``) or half sent (``mid-response``)."""

    def __init__(self, app: ASGIApp, point: str) -> None:
        self.app, self.point = app, point

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or operation_of(scope.get("path", "")) is None:
            await self.app(scope, receive, send)
            return
        status = 0

        async def faulty(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 200 and self.point == "after-commit":
                    die()
            elif message["type"] == "http.response.body" and status == 200 and self.point == "mid-response":
                body = message.get("body", b"")
                await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
                await asyncio.sleep(0.2)  # let the event loop write it out
                die()
            await send(message)

        await self.app(scope, receive, faulty)
