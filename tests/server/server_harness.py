"""Helpers of the server tests (their fixtures are in conftest.py): the test CA's files, uvicorn
on a pre-bound loopback socket in a thread, a running server and its engineers, raw requests
signed as an insider would sign them, and "nothing written" (every row count, the audit head).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from served import CertificateFiles, loopback_socket, running
from sqlalchemy import MetaData, create_engine, func, select
from sqlalchemy.pool import NullPool

from vault import Vault
from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.keyholder.checkouts import CheckoutKeyholder
from vault.server.app import build_app
from vault.server.layer import ServerLayer
from vault.server.running import ServeOptions
from vault.service.checkouts import https_checkout_keyholder
from vault.storage import models as m
from vault.storage.engine import Store
from vault.transport.https import HttpsTransport
from vault.wire import httpsig
from vault.wire.authlimits import AuthenticationLimits
from vault.wire.httpsig import MemoryNonceStore
from vault.wire.nonces import DbNonceStore

JSON = "application/json"

# What the body scan (test_body_scan.py) looks for besides the passwords: never in a body.
KEYED_METADATA = {
    "acme/fw01": {"username": "fw-admin-7731", "url": "https://fw01.acme-internal.example", "note": "rack 4 shelf 2"},
    "excl/sw01": {"host": "sw01.excl-lan.example", "username": "netops-4410"},
}


@dataclass
class Served:
    """A running server over a team's database, and its engineers."""

    url: str
    port: int
    ca: CertificateFiles
    db_url: str
    nonces: MemoryNonceStore
    admin: Vault
    alice: Vault
    bob: Vault

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        # 30 s, not httpx's 5: a raw request on a loaded 2-core CI machine is slow, not hung
        return httpx.Client(
            base_url=self.url, verify=ssl.create_default_context(cafile=str(self.ca.ca_file)), timeout=30.0
        )


def ticking(clock: Callable[[], dt.datetime]) -> Callable[[], dt.datetime]:
    """A machine's clock for signing requests to a server on the wall clock (``keyed``, ``served``):
    the module's clock, or the wall's once that is later. The module's clock stands still, and a
    request signed more than ``httpsig.WINDOW`` (60 s) after it was made is refused as stale: under
    load a module's later requests were (``Unauthenticated: stale``)."""
    return lambda: max(clock(), dt.datetime.now(dt.UTC))


# -- signing raw requests as an insider would ------------------------------------------------------


def keyid_of(vault: Vault, generation: int | None = None) -> str:
    me = vault.keyholder.me()
    return f"e:{me.engineer_id}:{me.key_generation if generation is None else generation}"


def signing_key(vault: Vault) -> SigningKey:
    return vault.keyholder.my_signing_key()


def signed_headers(
    served: Served,
    path: str,
    body: bytes,
    *,
    key: SigningKey,
    keyid: str,
    created: int | None = None,
    nonce: str | None = None,
    authority: str | None = None,
) -> dict[str, str]:
    signed = httpsig.sign_request(
        "POST", authority or served.authority, path, JSON, body, key, keyid, created=created, nonce=nonce
    )
    return {"Content-Type": JSON, **signed}


def signed_post(served: Served, path: str, body: bytes, vault: Vault, **changes: object) -> httpx.Response:
    """POST ``body`` to ``path`` signed by ``vault``'s engineer (``changes``: the signature's parts)."""
    key = changes.pop("key", None) or signing_key(vault)
    keyid = changes.pop("keyid", None) or keyid_of(vault)
    headers = signed_headers(served, path, body, key=key, keyid=keyid, **changes)  # type: ignore[arg-type]
    with served.client() as client:
        return client.post(path, content=body, headers=headers)


# -- what "nothing written" means ----------------------------------------------------------------


def database_state(url: str) -> dict[str, object]:
    """Every table's row count, and the audit head's row."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            state: dict[str, object] = {
                name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in sorted(meta.tables.items())
            }
            head = meta.tables.get("audit_head")
            if head is not None:
                state["audit_head"] = tuple(tuple(r) for r in conn.execute(select(head)))
        return state
    finally:
        engine.dispose()


# -- a team with something to read, for the read routes' tests ------------------------------------------


@dataclass
class ReadWorld:
    """``served`` with acme (alice granted; stale after a day) and beta (bob granted), a secret each,
    each checked out by its grantee, acme's key rotated once, and carol (no grant)."""

    served: Served
    carol: Vault
    acme: int  # client ids
    beta: int

    def https(self, vault: Vault) -> Any:
        """An ``HttpsTransport`` signing as ``vault``'s engineer, pinned to the test CA."""
        from vault.transport.https import HttpsTransport

        vault.keyholder.me()
        return HttpsTransport(self.served.url, vault.keyholder, ca_file=str(self.served.ca.ca_file))


def caller_of(vault: Vault) -> Any:
    from vault.authority.requests import Caller

    me = vault.keyholder.me()
    return Caller(me.engineer_id, me.key_generation)


def envelope(name: str, body: object) -> bytes:
    """``body``'s canonical envelope as operation ``name``, under a fresh request id."""
    from vault.wire import codec

    return codec.envelope(name, body, os.urandom(codec.REQUEST_ID_BYTES))


def with_extra_field(data: bytes) -> bytes:
    """``data`` (an envelope) with a field its body's value does not have (still canonical JSON)."""
    document = json.loads(data)
    document["body"]["zzz_extra"] = 1
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def asgi_call(
    app: object, method: str, path: str, content: bytes | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    """One request to ``app`` in this process (no server, no TLS): for apps over databases of their own."""

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8443") as client:
            return await client.request(method, path, content=content, headers=headers)

    return asyncio.run(call())


@dataclass
class Keyed:
    """A server running with a certified server key (``keyed`` in conftest.py), carol granted nothing."""

    served: Served
    carol: Any
    key: ServerSigningKey
    store: Store


class Sent:
    """What an ``HttpsTransport`` sent: each request's path, headers and body (an insider's capture)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)


def keyholder(served: Served, vault: Any, url: str | None = None) -> tuple[CheckoutKeyholder, Sent]:
    https = HttpsTransport(url or served.url, vault.keyholder, ca_file=str(served.ca.ca_file))
    sent = Sent()
    https.client.event_hooks["request"].append(sent)
    vault.keyholder.me()
    return https_checkout_keyholder(vault.checkouts, https), sent


@contextlib.contextmanager
def server_with(
    keyed: Keyed,
    test_ca: CertificateFiles,
    layer: ServerLayer | None,
    *,
    keyless: bool = False,
    key: ServerSigningKey | None = None,
    limits: Callable[[Store], AuthenticationLimits] | None = None,
) -> Iterator[Served]:
    """Another server on ``keyed``'s database, signing with its key (``key`` if given; none if
    ``keyless``), with ``layer`` (the server layer) and the limits ``limits`` makes over its store."""
    served, store, sock = keyed.served, Store(keyed.served.db_url), loopback_socket()
    port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    signing = None if keyless else key or keyed.key
    app = build_app(
        store,
        public_url=url,
        nonce_store=DbNonceStore(store),
        server_key=signing,
        layer=layer,
        limits=limits(store) if limits is not None else None,
    )
    options = ServeOptions(
        served.db_url, bind=f"127.0.0.1:{port}", tls_cert=str(test_ca.cert_file), tls_key=str(test_ca.key_file)
    )
    try:
        with running(app, options, sock):
            yield dataclasses.replace(served, url=url, port=port)
    finally:
        store.close()


def events(served: Served) -> list[m.AuditEvent]:
    """Every audit event of ``served``'s database, in order (read on a store of its own)."""
    store = Store(served.db_url)
    try:
        with store.read() as s:
            return list(s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq)))
    finally:
        store.close()


def without_nonces(state: dict[str, object]) -> dict[str, object]:
    """``database_state`` without the request nonces (what a read writes)."""
    return {name: count for name, count in state.items() if name != "request_nonces"}


def mid_window() -> Callable[[], float]:
    """A clock for the authentication limits: real time from the middle of the current window, so that
    a test counting failures never straddles a window's real end (where counting starts afresh)."""
    from vault.wire.authlimits import PERIOD

    now = time.time()
    offset = (now // PERIOD) * PERIOD + PERIOD / 2 - now
    return lambda: time.time() + offset


def remote_engineer(keyed: Keyed, vault: Vault, name: str, passphrase: str) -> Any:
    """``name`` on a machine with no database (``RemoteVault``): the server pinned, their key record
    copied once from ``vault``'s database (``serverjoin.join``), then unlocked. ``CREDVAULT_HOME``
    must be a folder of the test's own."""
    from vault.service import serverjoin
    from vault.service.remote import RemoteVault
    from vault.service.sessions import MemorySessionStore

    served = keyed.served
    pin = serverjoin.pin(served.url, serverjoin.trust(served.url, str(served.ca.ca_file)), str(served.ca.ca_file))
    serverjoin.join(pin, vault, name, passphrase)
    mine = RemoteVault(pin, engineer=name, sessions=MemorySessionStore(), clock=ticking(served.alice.clock))
    mine.engineers.unlock(name, passphrase)
    return mine
