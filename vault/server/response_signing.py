"""Signed responses: a pure ASGI middleware (docs/server.md §3, "Responses are signed").

Every response to a POST (an operation's 200, and every problem+json: 400 to 503, a 413 of
the body limit, a 500 of the catch-all) is signed with the server's signing key under the
profile of ``vault/wire/httpsig_response.py``, bound to the request's ``cv`` signature. The
answer is buffered whole (responses are single bodies: the keyset pages), its digest taken,
and the three headers added to its start. A request without one well-formed ``cv`` signature
is answered unsigned (nothing to bind it to); so are the GET routes (``/healthz``,
``/readyz``, ``/v1/identity``). A server run without a server key has no such middleware:
its answers carry no signature, and a keyholder pinning a server key refuses them.

With a key file's ring (a rotation under way) the key is the server's current choice
(``signing_keys.ActiveSigningKey``), read again in the thread pool when it is older than a second.

It sits inside the access log and outside the catch-all, so that the catch-all's 500 and
the body limit's 413 are signed too. A streamed answer (``application/x-ndjson``: a backup's rows,
``server/backup_routes.py``) is passed through unbuffered and unsigned here: buffering it would
hold the whole backup, and its own end line carries the server's signature over every line before
it (``wire/backupstream.py``); a refusal before the stream is problem+json and signed as above.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vault.crypto.serverkey import ServerSigningKey
from vault.server.signing_keys import ActiveSigningKey
from vault.wire import httpsig_response
from vault.wire.backupstream import MEDIA_TYPE as STREAMED

_REPLACED = {b"content-digest", b"signature-input", b"signature"}


class ResponseSigner:
    """Sign each answer to a signed POST with ``key`` (``created`` read from ``clock``)."""

    def __init__(
        self, app: ASGIApp, *, key: ServerSigningKey | ActiveSigningKey, clock: Callable[[], float] = time.time
    ) -> None:
        self.app, self.key, self.clock = app, key, clock

    async def signing_key(self) -> ServerSigningKey:
        """The key this answer is signed with (the current choice, read again once stale)."""
        if not isinstance(self.key, ActiveSigningKey):
            return self.key
        if self.key.stale():
            await run_in_threadpool(self.key.refresh)
        return self.key.current()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        request_sig = httpsig_response.request_signature(headers)
        if request_sig is None:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []
        streamed = False

        async def signed(message: Message) -> None:
            nonlocal start, streamed
            if message["type"] == "http.response.start":
                streamed = (b"content-type", STREAMED.encode("ascii")) in [
                    (name.lower(), value) for name, value in message.get("headers", [])
                ]
                if streamed:  # a stream of lines signs its own end line (wire/backupstream.py): not buffered
                    await send(message)
                    return
                start = message
                return
            if streamed:
                await send(message)
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            key = await self.signing_key()
            added = httpsig_response.sign_response(start["status"], body, request_sig, key, int(self.clock()))
            kept = [(name, value) for name, value in start.get("headers", []) if name.lower() not in _REPLACED]
            kept += [(name.lower().encode("ascii"), value.encode("ascii")) for name, value in added.items()]
            await send({**start, "headers": kept})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, signed)
