"""Clients: their rows by page or by id, and per-client counts in one statement."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, func, select
from sqlalchemy.engine import Connection

from vault.storage import models as m
from vault.storage.repositories import paging

CLIENTS, KEYS, SECRETS = m.Client.__table__, m.ClientKey.__table__, m.Secret.__table__


class ClientRow(NamedTuple):
    """A client's row with its current client-key record (state, age, encryptions), if any."""

    id: int
    slug_blob: bytes
    name_blob: bytes
    lookup_key_blob: bytes
    audit_keys_blob: bytes | None
    current_key_version: int
    created_at: Any
    key_state: str | None
    key_created_at: Any
    key_encryptions: int | None


def _clients() -> Select[Any]:
    c, k = CLIENTS.c, KEYS.c
    return select(
        c.id,
        c.slug_blob,
        c.name_blob,
        c.lookup_key_blob,
        c.audit_keys_blob,
        c.current_key_version,
        c.created_at,
        k.state,
        k.created_at,
        k.encryptions,
    ).select_from(CLIENTS.outerjoin(KEYS, and_(k.client_id == c.id, k.version == c.current_key_version)))


def every(conn: Connection, *, page: int = paging.PAGE) -> Iterator[ClientRow]:
    """Every client, by id, one page per statement."""
    for found in pages(conn, page=page):
        yield from found


def pages(conn: Connection, *, page: int = paging.PAGE) -> Iterator[list[ClientRow]]:
    """Every client, by id, in pages of ``page`` (one statement each)."""
    for found in paging.pages(conn, _clients(), CLIENTS.c.id, size=page):
        yield [ClientRow._make(row) for row in found]


def by_ids(conn: Connection, client_ids: Collection[int]) -> dict[int, ClientRow]:
    """The clients of ``client_ids`` that exist, by id (one statement)."""
    if not client_ids:
        return {}
    found = conn.execute(_clients().where(CLIENTS.c.id.in_(sorted(client_ids))))
    return {row[0]: ClientRow._make(row) for row in found}


def secret_counts(conn: Connection, client_ids: Collection[int] | None = None) -> dict[int, int]:
    """How many secrets each client holds (clients without any are absent), in one statement."""
    query = select(SECRETS.c.client_id, func.count()).group_by(SECRETS.c.client_id)
    if client_ids is not None:
        if not client_ids:
            return {}
        query = query.where(SECRETS.c.client_id.in_(sorted(client_ids)))
    return {int(client_id): int(count) for client_id, count in conn.execute(query)}


def count(conn: Connection, model: type[m.Base]) -> int:
    return int(conn.execute(select(func.count()).select_from(model.__table__)).scalar() or 0)
