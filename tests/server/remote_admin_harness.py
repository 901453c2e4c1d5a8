"""Helpers of the tests of an admin's writes through the team server (``RemoteVault`` with no database):
pin the server, copy a key record once and unlock; post a raw signed body as an insider would; and
what "nothing written" means for rows an update changes in place (``row_values``)."""

from __future__ import annotations

import os
from typing import Any

from server_harness import Keyed, signed_post, ticking
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from vault import Vault
from vault.authority.requests import Caller
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.service.serverpins import ServerPin
from vault.service.sessions import MemorySessionStore
from vault.wire import codec


class Stop(Exception):
    """Raised by a capturing transport once the commit is made: nothing is sent."""


def pinned(keyed: Keyed) -> ServerPin:
    served = keyed.served
    identity = serverjoin.trust(served.url, str(served.ca.ca_file))
    return serverjoin.pin(served.url, identity, str(served.ca.ca_file))


def remote(keyed: Keyed, vault: Vault, name: str, passphrase: str) -> RemoteVault:
    """``name`` on a machine with no database: their record copied once, then unlocked."""
    pin = pinned(keyed)
    serverjoin.join(pin, vault, name, passphrase)
    mine = RemoteVault(pin, engineer=name, sessions=MemorySessionStore(), clock=ticking(keyed.served.alice.clock))
    mine.engineers.unlock(name, passphrase)
    return mine


def post(keyed: Keyed, name: str, body: object, signer: Vault, request_id: bytes | None = None) -> Any:
    """``body`` as operation ``name``, signed by ``signer``'s engineer (a fresh request id unless given)."""
    path = "/v1/" + name.replace(".", "/")
    data = codec.envelope(name, body, request_id or os.urandom(codec.REQUEST_ID_BYTES))
    return signed_post(keyed.served, path, data, signer)


def caller(vault: Vault) -> Caller:
    me = vault.keyholder.me()
    return Caller(me.engineer_id, me.key_generation)


def row_values(url: str, table: str) -> list[tuple[object, ...]]:
    """Every row of ``table`` as stored, in key order: what an update in place would change."""
    from sqlalchemy import MetaData

    engine = create_engine(url, poolclass=NullPool)
    try:
        meta = MetaData()
        meta.reflect(engine, only=[table])
        found = meta.tables[table]
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(found).order_by(*found.primary_key.columns))]
    finally:
        engine.dispose()


_REFLECTED: dict[str, Any] = {}


def stored_state(url: str, in_place: tuple[str, ...]) -> dict[str, object]:
    """``database_state`` without the request nonces, and every row of the tables ``in_place`` (an update
    in place changes them), read on one connection with the schema reflected once per database: "nothing
    written" in one cheap call (``database_state`` and ``row_values`` reflect on every call)."""
    from sqlalchemy import MetaData, func

    engine = create_engine(url, poolclass=NullPool)
    try:
        meta = _REFLECTED.get(url)
        if meta is None:
            meta = _REFLECTED[url] = MetaData()
            meta.reflect(engine)
        with engine.connect() as conn:
            state: dict[str, object] = {
                name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in sorted(meta.tables.items())
                if name != "request_nonces"
            }
            for name in (*in_place, "audit_head"):
                table = meta.tables[name]
                state[f"{name} rows"] = [
                    tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns))
                ]
            return state
    finally:
        engine.dispose()
