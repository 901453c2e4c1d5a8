"""The re-wrap walk of a client-key rotation, as SQL over ids and ciphertext (no key).

``next_rows`` pages through a client's secret versions whose data key is not yet wrapped
by the new version, in key order from a cursor, each page bounded by a window of at most
``batch_size`` secrets (a batch costs the same at the start and at the end of a walk);
``write_rewrapped`` stores a page re-wrapped by the keyholder as one executemany;
``old_versions_in_use`` counts what each other version still wraps (the finish).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Connection, Table, bindparam, func, select, tuple_, update
from sqlalchemy.orm import Session

from vault.storage import models as m

_SECRETS, _VERSIONS = cast(Table, m.Secret.__table__), cast(Table, m.SecretVersion.__table__)

# The walk's statements, built once. A window is at most ``batch_size`` of the client's
# secrets from the ``(client_id, id)`` index: its last id, then its versions still to do.
_WINDOW_END = (
    select(_SECRETS.c.id)
    .where(_SECRETS.c.client_id == bindparam("client"), _SECRETS.c.id >= bindparam("from_id"))
    .order_by(_SECRETS.c.id)
    .offset(bindparam("skip"))
    .limit(1)
)
_TO_DO = (
    select(_VERSIONS.c.secret_id, _VERSIONS.c.version, _VERSIONS.c.key_version, _VERSIONS.c.wrapped_dek)
    .join(_SECRETS, _SECRETS.c.id == _VERSIONS.c.secret_id)
    .where(
        _SECRETS.c.client_id == bindparam("client"),
        _SECRETS.c.id >= bindparam("from_id"),
        _VERSIONS.c.key_version != bindparam("new_version"),
        tuple_(_VERSIONS.c.secret_id, _VERSIONS.c.version) > tuple_(bindparam("from_id"), bindparam("after")),
    )
    .order_by(_VERSIONS.c.secret_id, _VERSIONS.c.version)
    .limit(bindparam("rows"))
)
_TO_DO_IN_WINDOW = _TO_DO.where(_SECRETS.c.id <= bindparam("to_id"))
# One UPDATE by primary key, run as an executemany over the batch (Core: no ORM objects).
_REWRAP = (
    update(_VERSIONS)
    .where(_VERSIONS.c.secret_id == bindparam("sid"), _VERSIONS.c.version == bindparam("ver"))
    .values(key_version=bindparam("kv"), wrapped_dek=bindparam("dek"))
)
_REWRAP_SQL: dict[tuple[str, str], str] = {}  # (dialect, paramstyle) -> _REWRAP compiled, positional

Rows = Sequence[tuple[int, int, int, bytes]]  # (secret id, version, key version, wrapped data key)


def next_rows(
    s: Session, client_id: int, new_version: int, cursor: tuple[int, int], batch_size: int
) -> tuple[Rows, tuple[int, int]]:
    """The next (up to ``batch_size``) versions of the client's secrets after ``cursor`` whose
    data key is not yet under ``new_version``, in key order, and the cursor past them.

    Each query is bounded by a window of at most ``batch_size`` secrets, so a batch costs the
    same at the start and at the end of a walk over N secrets (no rescan, no sort of the rest)."""
    conn = s.connection()
    params = {"client": client_id, "new_version": new_version, "skip": batch_size - 1, "rows": batch_size}
    while True:
        params |= {"from_id": cursor[0], "after": cursor[1]}
        upper = conn.execute(_WINDOW_END, params).scalar()
        if upper is None:  # the last window: nothing after it
            rows = conn.execute(_TO_DO, params).all()
            return rows, (rows[-1][0], rows[-1][1]) if rows else cursor
        rows = conn.execute(_TO_DO_IN_WINDOW, params | {"to_id": upper}).all()
        if len(rows) == batch_size:
            return rows, (rows[-1][0], rows[-1][1])
        cursor = (int(upper) + 1, 0)  # this window is done: the next one starts after it
        if rows:
            return rows, cursor


def old_versions_in_use(s: Session, client_id: int, new_version: int) -> dict[int, int]:
    """How many of the client's data keys each version other than ``new_version`` wraps."""
    counts = s.execute(
        select(_VERSIONS.c.key_version, func.count())
        .join(_SECRETS, _SECRETS.c.id == _VERSIONS.c.secret_id)
        .where(_SECRETS.c.client_id == client_id, _VERSIONS.c.key_version != new_version)
        .group_by(_VERSIONS.c.key_version)
    )
    return {int(version): int(n) for version, n in counts}


def write_rewrapped(conn: Connection, new_version: int, rows: Rows, rewrapped: list[bytes]) -> None:
    """``_REWRAP`` for every row, as one executemany. Where the driver takes positional
    parameters (SQLite) the compiled statement goes to it with plain tuples: SQLAlchemy's
    per-row parameter processing would cost about as much as the cryptography."""
    dialect = conn.dialect
    if dialect.positional:
        sql = _REWRAP_SQL.get((dialect.name, dialect.paramstyle))
        if sql is None:
            compiled = _REWRAP.compile(dialect=dialect)
            assert compiled.positiontup == ["kv", "dek", "sid", "ver"], compiled.positiontup
            sql = _REWRAP_SQL[(dialect.name, dialect.paramstyle)] = compiled.string
        conn.exec_driver_sql(
            sql, [(new_version, dek, row[0], row[1]) for row, dek in zip(rows, rewrapped, strict=True)]
        )
    else:
        conn.execute(
            _REWRAP,
            [
                {"sid": row[0], "ver": row[1], "kv": new_version, "dek": dek}
                for row, dek in zip(rows, rewrapped, strict=True)
            ],
        )
