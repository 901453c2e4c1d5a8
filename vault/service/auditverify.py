"""One range of the audit chain read from the store on a DB-API cursor and checked.

The checks themselves are the keyholder's (``keyholder/auditchain.py``: hashes, links,
signatures within their keys' lifetimes, formats and times); ``audit verify`` and ``report
at-risk`` hand them the rows the audit authority streams (``keyholder/auditverify.py``).
What is left here is the short in-process reading for callers that check one event or a
few inside a unit of their own (the anchor of an incremental check in ``Signers``, a root
rotation's signers, the grant ledger's events): the names they import stay here.

Rows are read as plain DB-API tuples: events are never ORM objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Dialect

from vault.crypto import chain
from vault.keyholder.auditchain import COLUMNS, NEVER, Keys, Problems, RangeResult, check_rows
from vault.storage import models as m

__all__ = ["NEVER", "Keys", "Problems", "RangeResult", "check_range"]

FETCH = 2_000

_T = m.AuditEvent.__table__
_COLUMNS = [_T.c[name] for name in COLUMNS]
_check = check_rows  # the grant ledger checks one event with it


def _sql(dialect: Dialect, statement: Any) -> str:
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def check_range(
    dbapi_connection: Any,
    dialect: Dialect,
    vault_id: bytes,
    keys: Keys,
    lo: int,
    hi: int,
    problems: Problems | None = None,
) -> RangeResult:
    """Check events ``lo``..``hi`` (all but the first one's link) on a DB-API connection."""
    cursor = dbapi_connection.cursor()
    try:
        seq = _T.c.seq
        cursor.execute(_sql(dialect, select(*_COLUMNS).where(seq >= lo, seq <= hi).order_by(seq)))
        marked = {k: v for k, v in (problems or {}).items() if lo <= k <= hi}
        result = check_rows(_fetched(cursor), chain.EventCodec(vault_id), keys, lo, marked)
        missing = lo + result.good
        if result.problem is None and missing <= hi:  # the rows stop before hi: what comes next?
            cursor.execute(_sql(dialect, select(func.min(seq)).where(seq > missing)))
            row = cursor.fetchone()
            if row is not None and row[0] is not None:
                result = result._replace(bad_seq=missing, problem=f"event {missing} is missing (next is {row[0]})")
        return result
    finally:
        cursor.close()


def _fetched(cursor: Any) -> Iterator[tuple[Any, ...]]:
    while rows := cursor.fetchmany(FETCH):
        yield from rows
