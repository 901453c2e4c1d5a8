"""Secrets: each secret with its current version, a page of them per statement.

A listing reads the secrets of a set of clients (all of them, for an admin) joined with
their current version, in pages keyed by the secret's id: one statement per page,
whatever the number of secrets, and the memory of one page. ``secret list`` reads with
an outer join, so that a secret whose current version row was deleted is seen (and
reported as damaged), not skipped.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, select
from sqlalchemy.engine import Connection

from vault.storage import models as m
from vault.storage.repositories import paging

SECRETS, VERSIONS = m.Secret.__table__, m.SecretVersion.__table__


class ListedSecret(NamedTuple):
    """A secret's row and its current version's: what a listing decrypts and shows."""

    id: int
    client_id: int
    kind: str
    current_version: int
    must_change: bool
    created_at: Any
    updated_at: Any
    version: int
    key_version: int
    wrapped_dek: bytes
    password_blob: bytes
    metadata_blob: bytes


def _current_versions(outer: bool = False) -> Select[Any]:
    s, v = SECRETS.c, VERSIONS.c
    on = and_(v.secret_id == s.id, v.version == s.current_version)
    return select(
        s.id,
        s.client_id,
        s.kind,
        s.current_version,
        s.must_change,
        s.created_at,
        s.updated_at,
        v.version,
        v.key_version,
        v.wrapped_dek,
        v.password_blob,
        v.metadata_blob,
    ).select_from(SECRETS.outerjoin(VERSIONS, on) if outer else SECRETS.join(VERSIONS, on))


def current(
    conn: Connection, client_ids: Collection[int] | None, *, page: int = paging.PAGE, missing: bool = False
) -> Iterator[ListedSecret]:
    """Every secret of ``client_ids`` (None: of every client) with its current version, by id.
    A secret whose current version row is missing comes with None in the version's columns
    when ``missing`` (a listing reports it as damaged); else it is not listed."""
    query = _current_versions(outer=missing)
    if client_ids is not None:
        if not client_ids:
            return
        query = query.where(SECRETS.c.client_id.in_(sorted(client_ids)))
    for row in paging.rows(conn, query, SECRETS.c.id, size=page):
        yield ListedSecret._make(row)


def current_pages(
    conn: Connection,
    client_ids: Collection[int] | None,
    *,
    page: int = paging.PAGE,
    missing: bool = False,
    after: int = 0,
) -> Iterator[list[ListedSecret]]:
    """``current`` a page at a time (one statement each): what a listing hands on page by page;
    ``after``: only the secrets with a greater id (a listing resumed at its cursor)."""
    query = _current_versions(outer=missing)
    if after:
        query = query.where(SECRETS.c.id > after)
    if client_ids is not None:
        if not client_ids:
            return
        query = query.where(SECRETS.c.client_id.in_(sorted(client_ids)))
    for rows in paging.pages(conn, query, SECRETS.c.id, size=page):
        yield [ListedSecret._make(row) for row in rows]


def flagged(conn: Connection, *, page: int = paging.PAGE) -> Iterator[ListedSecret]:
    """The secrets that must be changed (after a checkout), with their current version."""
    query = _current_versions().where(SECRETS.c.must_change.is_(True))
    for row in paging.rows(conn, query, SECRETS.c.id, size=page):
        yield ListedSecret._make(row)


def by_ids(conn: Connection, secret_ids: Collection[int]) -> list[ListedSecret]:
    """The secrets of ``secret_ids`` that exist, with their current version (one statement);
    a secret whose current version row is missing comes with None in the version's columns."""
    if not secret_ids:
        return []
    query = _current_versions(outer=True).where(SECRETS.c.id.in_(sorted(secret_ids)))
    return [ListedSecret._make(row) for row in conn.execute(query)]
