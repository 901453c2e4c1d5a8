"""A checkout does not slow down with history (issue 7, workload W1).

Finding a secret's open checkouts used to read every checkout the secret ever had, and
an engineer's grant for a client read all of that engineer's grants, so a checkout grew
slower the more the secret had been used and the more clients the engineer held. These
tests give a secret hundreds of past checkouts (released and expired) and an engineer
many grants, then ask the database how it runs the very statements a checkout, a
check-in and an update send: each must seek its index (``ix_checkouts_open``, partial on
``released_at IS NULL``, over ``(secret_id, expires_at)``; ``ix_grants_engineer_client``),
not scan. Plans, not times: these machines are shared and noisy. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from vault import Vault
from vault.errors import CheckoutConflict
from vault.storage import models as m

REF, PW, REASON = "acme/fw01", "acme-pw-1", "T-9 history"
PAST = 300  # past checkouts of each kind: released, and expired without a check-in


@contextlib.contextmanager
def _statements(vault: Vault) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        seen.append((statement, parameters))

    event.listen(vault.store.engine, "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        event.remove(vault.store.engine, "before_cursor_execute", keep)


def _plan(vault: Vault, statement: str, parameters: Any) -> str:
    """The database's plan of one statement as sent, as text."""
    with vault.store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return "\n".join(str(r[-1]) for r in rows)
        # Tables this small fit in a page, where a sequential scan is always cheapest: ask
        # which index the planner takes when it must take one.
        conn.exec_driver_sql("SET enable_seqscan = off")
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        conn.rollback()
        return "\n".join(str(r[0]) for r in rows)


def _reads(seen: list[tuple[str, Any]], table: str) -> list[tuple[str, Any]]:
    """The SELECTs among ``seen`` that read ``table``."""
    out = []
    for sql, params in seen:
        words = " ".join(sql.split())
        if words.upper().startswith("SELECT") and (f"FROM {table} " in words or f"JOIN {table} " in words):
            out.append((sql, params))
    return out


def _seeks_open_checkouts(plan: str, engine: str) -> bool:
    if engine == "sqlite":
        return "USING INDEX ix_checkouts_open (secret_id=? AND expires_at>?)" in plan
    return "ix_checkouts_open" in plan and "Seq Scan on checkouts" not in plan


def _seeks_grant(plan: str, engine: str) -> bool:
    if engine == "sqlite":
        return "USING INDEX ix_grants_engineer_client (engineer_id=? AND client_id=?)" in plan
    return "ix_grants_engineer_client" in plan and "Seq Scan on grants" not in plan


@pytest.fixture
def busy(team):  # type: ignore[no-untyped-def]
    """acme/fw01 with PAST released and PAST expired checkouts; alice holds 40 grants."""
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add(REF, password=PW)
    alice = team.engineer("alice")
    for i in range(39):
        admin.clients.add(f"other{i}", f"Other {i}")
        admin.grants.grant("alice", f"other{i}")
    admin.grants.grant("alice", "acme")
    now = team.clock()
    with admin.store.transaction() as s:
        secret = s.scalar(select(m.Secret))  # the only secret
        me = s.scalar(select(m.Engineer.id).where(m.Engineer.name == "alice"))
        assert secret is not None and me is not None
        rows = []
        for i in range(2 * PAST):
            started = now - dt.timedelta(days=400) + dt.timedelta(hours=i)
            rows.append(
                {
                    "secret_id": secret.id,
                    "client_id": secret.client_id,
                    "engineer_id": me,
                    "exclusive": True,
                    "event_seq": 0,
                    "started_at": started,
                    "expires_at": started + dt.timedelta(hours=2),
                    "released_at": started + dt.timedelta(minutes=30) if i < PAST else None,
                }
            )
        s.execute(insert(m.Checkout), rows)
    return team, alice


def test_the_first_checkout_of_acme_is_the_first_secret(busy):
    """The fixture's history belongs to the secret the tests check out."""
    team, alice = busy
    assert alice.checkouts.checkout(REF, reason=REASON).value == PW
    with team.admin.store.transaction() as s:
        counted = s.scalars(select(m.Checkout.secret_id).where(m.Checkout.released_at.is_(None))).all()
    assert len(counted) == PAST + 1 and len(set(counted)) == 1


def test_a_checkout_seeks_the_open_checkouts_and_the_grant_however_long_the_history(busy):
    team, alice = busy
    engine = alice.store.engine.dialect.name
    for _ in range(2):  # warm: the next call takes the fast path
        assert alice.checkouts.checkout(REF, reason=REASON).value == PW
    with _statements(alice) as seen:
        revealed = alice.checkouts.checkout(REF, reason=REASON)
    assert revealed.value == PW
    holds, grants = _reads(seen, "checkouts"), _reads(seen, "grants")
    assert holds and grants, [sql for sql, _ in seen]
    for sql, params in holds:
        plan = _plan(alice, sql, params)
        assert _seeks_open_checkouts(plan, engine), plan
    for sql, params in grants:
        plan = _plan(alice, sql, params)
        assert _seeks_grant(plan, engine), plan
    # The expired and released rows are history, not holds: only alice's one checkout is open.
    assert [(c.engineer, c.secret) for c in team.admin.checkouts.list()] == [("alice", "fw01")]


def test_a_check_in_and_an_update_seek_the_open_checkouts(busy):
    _team, alice = busy
    engine = alice.store.engine.dialect.name
    alice.checkouts.checkout(REF, reason=REASON)
    with _statements(alice) as seen:
        alice.checkouts.checkin(REF, new_password="acme-pw-2")
    holds = _reads(seen, "checkouts")
    assert holds, [sql for sql, _ in seen]
    for sql, params in holds:
        plan = _plan(alice, sql, params)
        assert _seeks_open_checkouts(plan, engine), plan
    assert alice.checkouts.checkout(REF, reason=REASON).value == "acme-pw-2"


def test_expired_exclusive_history_does_not_block_and_a_live_hold_still_does(busy):
    team, alice = busy
    team.admin.policies.set("acme", exclusive=True)
    bob = team.engineer("bob")
    team.admin.grants.grant("bob", "acme")
    # alice's 300 expired exclusive checkouts are over: bob takes the secret.
    assert bob.checkouts.checkout(REF, reason=REASON).value == PW
    with pytest.raises(CheckoutConflict, match="bob"):
        alice.checkouts.checkout(REF, reason=REASON)
