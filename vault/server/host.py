"""The team server's own pipeline, in-process, for an admin on the server's host.

An admin who works where the database is, with the server's key file (``credvault --server-key
FILE``, docs/server.md "Status"), records their changes as format-3 ``local.record`` events
(``authority/local_events.py``). A checkout, a reveal, a check-in or a break is not such a change:
only the server's routes append those (``eventrequest.SERVED_ONLY``), because the server is what
makes "no log, no key" true: the event is committed before the layer comes off the one data key
the request asked for. On the host the admin holds the key file, so the host *is* a server: there
the admin's keyholder signs its requests exactly as over HTTPS (``HttpsTransport``, built by
``service/checkouts.py``) and sends them to the server's app (``build_app``) running in this
process (``InProcessAsgi``), which authenticates them, appends the format-3 event, commits, removes
the layer (``Unlayer``) and signs its answer, which the keyholder checks against the key the vault
holds active (``HostServer.pinned``). Nothing is new about the trust: the same routes, the same
checks, the same events; only the socket is missing. The requests are signed for the authority
``local`` (``HOST_URL``), as the admin's other host events are.

``on_host(vault, keys)`` equips a ``Vault`` on the host: the server keys and layer on its ``Core``
(what ``local_events`` and ``hostlayer`` use) and ``Core.host_server``, this in-process server
(``service/checkouts.py`` takes it instead of the embedded transport).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import httpx

from vault.authority.serverjournal import active_key
from vault.crypto.serverkey import SigningKeys as ServerKeys
from vault.crypto.serverkey import keyring_of
from vault.errors import ConfigurationError
from vault.server.app import build_app
from vault.server.keyfile import ServerKeyFile
from vault.server.layer import ServerLayer
from vault.server.readiness import key_problems
from vault.storage.engine import Store
from vault.wire.eventrequest import LOCAL_AUTHORITY
from vault.wire.nonces import DbNonceStore

HOST_URL = f"https://{LOCAL_AUTHORITY}"


class InProcessAsgi(httpx.BaseTransport):
    """An httpx transport that answers each request with an ASGI app in this process (no socket,
    no TLS: nothing leaves the process). Each request runs on an event loop of its own, in a
    worker thread when the calling thread already runs one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __repr__(self) -> str:
        return "InProcessAsgi()"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def answer() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=HOST_URL) as client:
                got = await client.request(request.method, request.url.path, content=body, headers=request.headers)
                return httpx.Response(got.status_code, headers=got.headers.multi_items(), content=got.content)

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(answer())
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
            return worker.submit(asyncio.run, answer()).result()


class HostServer:
    """The server's app over the host's database, with the key file's keys: ``transport`` reaches it
    in this process, ``pinned()`` is the key its answers are checked against (``service/checkouts.py``
    signs requests to it as ``HttpsTransport`` does to a server over the network)."""

    def __init__(
        self, store: Store, signing: ServerKeys, layer: ServerLayer | None, clock: Callable[[], float] = time.time
    ) -> None:
        self.store, self.signing, self.layer, self.clock = store, keyring_of(signing), layer, clock
        self.url = HOST_URL
        self.app = build_app(
            store,
            public_url=HOST_URL,
            nonce_store=DbNonceStore(store),
            server_key=signing,
            layer=layer,
            clock=clock,
        )
        self.transport = InProcessAsgi(self.app)

    def __repr__(self) -> str:
        return f"HostServer({self.signing!r})"

    def pinned(self) -> tuple[int, bytes]:
        """The server key version its answers are signed with, and its public key, to pin; refused
        (``ConfigurationError``) when the key file and the database disagree, before any request: a
        checkout would be recorded and then fail (``readiness.key_problems``)."""
        problems = key_problems(self.store, self.signing, self.layer)
        if problems:
            raise ConfigurationError(
                f"the server key file does not match this vault ({', '.join(problems)})",
                hint="use the key file the running server uses; an admin certifies a new key with "
                "`credvault server certify FILE`",
            )
        with self.store.read() as s:
            active = active_key(s, self.signing)  # the version the server signs with (there is one: no problem)
        assert active is not None
        return active.version, active.public


def on_host(vault: Any, keys: ServerKeyFile) -> None:
    """Equip ``vault`` (a ``Vault`` on the server's host) with the key file's ``keys`` (module docstring)."""
    core = vault.core
    core.server_key = keys.signing_keys  # a rotation: the version the vault holds active signs
    core.host_layer = ServerLayer(keys.master, keys.previous) if keys.master is not None else None
    core.host_server = HostServer(core.store, keys.signing_keys, core.host_layer, lambda: core.clock().timestamp())
