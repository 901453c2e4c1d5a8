"""Grants: an engineer's whole ledger with each entry's signer, in one statement.

What the grant checks (``Trust.first_valid_grant``) read per client, read here for
every client at once: an engineer's grant rows (revoked ones too: the newest signed
entry of each ledger decides), newest first within each client, each with its signer's
row, so that finding an engineer's clients costs one statement with 10 grants or 1,000.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from vault.storage import models as m

GRANTS, ENGINEERS = m.Grant.__table__, m.Engineer.__table__
_SIGNER = ENGINEERS.alias("signer")
# Newest first: by the signed ledger position, rows from before it (NULL) after every other
# (the order of ``rows.GRANT_ORDER``).
GRANT_ORDER = (func.coalesce(GRANTS.c.seq, 0).desc(), GRANTS.c.id.desc())


class Ledger(NamedTuple):
    """The grants of one (engineer, client), newest first, each with its signer's columns
    (None: no such engineer), as the column names asked for."""

    client_id: int
    grants: list[tuple[Any, ...]]
    signers: list[tuple[Any, ...] | None]


def ledgers(
    conn: Connection, engineer_id: int, grant_fields: Sequence[str], signer_fields: Sequence[str]
) -> Iterator[Ledger]:
    """Every ledger of ``engineer_id`` (one per client they were ever granted), by client id,
    in one statement: the grants' ``grant_fields`` and their signers' ``signer_fields``."""
    grant_columns = [GRANTS.c[name] for name in grant_fields]
    signer_columns = [_SIGNER.c[name] for name in signer_fields]
    client_at = list(grant_fields).index("client_id")
    query = (
        select(*grant_columns, *signer_columns)
        .select_from(GRANTS.outerjoin(_SIGNER, _SIGNER.c.id == GRANTS.c.granted_by))
        .where(GRANTS.c.engineer_id == engineer_id)
        .order_by(GRANTS.c.client_id, *GRANT_ORDER)
    )
    n = len(grant_columns)
    current: Ledger | None = None
    for row in conn.execute(query):
        grant = tuple(row[:n])
        signer = None if row[n] is None else tuple(row[n:])
        if current is None or current.client_id != grant[client_at]:
            if current is not None:
                yield current
            current = Ledger(grant[client_at], [], [])
        current.grants.append(grant)
        current.signers.append(signer)
    if current is not None:
        yield current
