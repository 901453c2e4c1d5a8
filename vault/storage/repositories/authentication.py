"""The team server's shared authentication state: request nonces and failure counts.

``request_nonces`` holds the (keyid, nonce) of every request a server accepted, for as long
as a copy of it could still pass the time check (docs/server.md §3); ``auth_failures`` the
failed authentications of each engineer per fixed window. Both are written by one statement
that cannot lose a race: a nonce is inserted with ``ON CONFLICT DO NOTHING … RETURNING``
and the row returned says whether it was new (on PostgreSQL a second copy, in flight in another
transaction, waits on the key until the first commits or rolls back, then is answered
by what the first did); a failure is counted with an upsert that returns the new count.
Neither table holds a secret: ids, a random nonce, times and counts. The functions take an
open Core ``Connection`` (the caller's unit of work) and decide nothing.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from vault.storage import models as m
from vault.storage.prepared import Prepared

NONCES = cast(Table, m.RequestNonce.__table__)
FAILURES = cast(Table, m.AuthFailure.__table__)


def _insert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing`` / ``_do_update``: only the
    key's own conflict is absorbed (unlike SQLite's ``INSERT OR IGNORE``, which would also
    swallow a NOT NULL or CHECK failure and answer "replayed" for a bug)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _insert_nonce(insert: Any) -> Prepared:
    statement = (
        insert(NONCES)
        .values(keyid=bindparam("keyid"), nonce=bindparam("nonce"), created_at=bindparam("created_at"))
        .on_conflict_do_nothing(index_elements=[NONCES.c.keyid, NONCES.c.nonce])
        .returning(NONCES.c.created_at)  # a row only if inserted (rowcount is not kept for an INSERT)
    )
    return Prepared(statement)


# every writing request's: compiled once per dialect (``Prepared``), not built per call
_INSERT_NONCE = {"postgresql": _insert_nonce(postgresql.insert), "sqlite": _insert_nonce(sqlite.insert)}
_FAILURES_IN = Prepared(
    select(FAILURES.c["count"]).where(
        FAILURES.c.engineer_id == bindparam("engineer_id"), FAILURES.c.window_start == bindparam("window_start")
    )
)


def insert_nonce(conn: Connection, keyid: str, nonce: str, created: int) -> bool:
    """Store (keyid, nonce) in the connection's transaction: True if it is new, False if a
    row with that key exists (committed, or committed meanwhile by the transaction that
    held it)."""
    statement = _INSERT_NONCE["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
    return bool(statement.all(conn, {"keyid": keyid, "nonce": nonce, "created_at": created}))


def delete_nonces_before(conn: Connection, cutoff: int) -> int:
    """Delete the nonces of requests created before ``cutoff`` (seconds); how many went."""
    return int(conn.execute(delete(NONCES).where(NONCES.c.created_at < cutoff)).rowcount)


def failures_in(conn: Connection, engineer_id: int, window_start: int) -> int:
    """The failed authentications counted for ``engineer_id`` in the window starting then."""
    found = _FAILURES_IN.all(conn, {"engineer_id": engineer_id, "window_start": window_start})
    return int(found[0][0] or 0) if found else 0


def add_failure(conn: Connection, engineer_id: int, window_start: int) -> int:
    """Count one more failure of ``engineer_id`` in the window starting at ``window_start``;
    the count after it (concurrent failures each see their own number, none is lost)."""
    statement = _insert(conn, FAILURES).values(engineer_id=engineer_id, window_start=window_start, count=1)
    statement = statement.on_conflict_do_update(
        index_elements=[FAILURES.c.engineer_id, FAILURES.c.window_start],
        set_={"count": FAILURES.c["count"] + 1},
    ).returning(FAILURES.c["count"])
    return int(conn.execute(statement).scalar_one())


def delete_failures_before(conn: Connection, window_start: int) -> int:
    """Delete the counts of windows that started before ``window_start``; how many went."""
    return int(conn.execute(delete(FAILURES).where(FAILURES.c.window_start < window_start)).rowcount)
