"""Helpers of the server tests (their fixtures are in conftest.py): the test CA's files, uvicorn
on a pre-bound loopback socket in a thread, a running server and its engineers, raw requests
signed as an insider would sign them, and "nothing written" (every row count, the audit head).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import MetaData, create_engine, func, select
from sqlalchemy.pool import NullPool

from vault import Vault
from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.keyholder.checkouts import CheckoutKeyholder
from vault.server.running import ServeOptions, uvicorn_config
from vault.service.checkouts import https_checkout_keyholder
from vault.storage.engine import Store
from vault.transport.https import HttpsTransport
from vault.wire import httpsig
from vault.wire.httpsig import MemoryNonceStore

JSON = "application/json"


@dataclass(frozen=True)
class CertificateFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY on TCP only
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def running(app: object, options: ServeOptions, sock: socket.socket) -> Iterator[None]:
    """``app`` under uvicorn (configured as ``credvault serve`` configures it) in a thread, on ``sock``."""
    server = uvicorn.Server(uvicorn_config(app, options))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


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
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.ca.ca_file)))


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
