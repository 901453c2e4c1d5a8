"""An append that waited for the audit head's lock reads what was committed when it got it.

On PostgreSQL (read committed) a ``SELECT … FOR UPDATE`` that waited for a lock re-checks the
locked row only: rows joined to it are the ones read before waiting. Joined to the head's
lock, the head event's time read as missing (so a writer whose clock is behind the chain
dated its event before its predecessor: ``audit verify`` then refused the chain as
backdated) and the engineer as they were before an admin removed them. Found by the
two-server concurrency test (``tests/server/test_server_concurrency.py``, slow), where the
engineers' local ``unlock`` events raced the server's checkouts.

Each case holds the head's lock in a transaction of its own that appends an event dated an
hour ahead (a writer whose clock is ahead) and, for the removal, marks the engineer removed,
then commits while the append under test waits for the lock. On SQLite the writer lock is
taken at ``BEGIN IMMEDIATE``, before anything is read: the same cases pass there too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from vault.errors import ConcurrentChange, UntrustedRecord
from vault.storage import models as m

HOUR_US = 3_600_000_000


@contextmanager
def head_held(url: str, *, remove: int | None = None) -> Iterator[Callable[[], int]]:
    """Hold the head's lock with an event dated an hour ahead appended (and engineer ``remove``
    removed); yields the function that commits, returning that event's time."""
    engine = create_engine(url, poolclass=NullPool)
    conn: Connection = engine.connect()
    if url.startswith("sqlite"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.begin()
    head = conn.execute(select(m.AuditHead).where(m.AuditHead.id == 1).with_for_update()).one()
    event = dict(conn.execute(select(m.AuditEvent.__table__).where(m.AuditEvent.seq == head.seq)).mappings().one())
    ahead = event["at_us"] + HOUR_US
    digest = os.urandom(32)
    conn.execute(
        m.AuditEvent.__table__.insert().values(
            event | {"seq": head.seq + 1, "at_us": ahead, "prev_hash": head.hash, "hash": digest}
        )
    )
    conn.execute(update(m.AuditHead).where(m.AuditHead.id == 1).values(seq=head.seq + 1, hash=digest))
    if remove is not None:
        conn.execute(update(m.Engineer).where(m.Engineer.id == remove).values(status="removed"))

    def commit() -> int:
        conn.exec_driver_sql("COMMIT") if url.startswith("sqlite") else conn.commit()
        return ahead

    try:
        yield commit
    finally:
        conn.close()
        engine.dispose()


def waiting(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """``call`` in a thread (it will wait for the head's lock); its outcome lands in the dict."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.5)  # it reached the lock (and, on PostgreSQL, read the rows it joins)
    return thread, outcome


def last_event(url: str) -> dict[str, Any]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return dict(
                conn.execute(select(m.AuditEvent.__table__).order_by(m.AuditEvent.seq.desc())).mappings().first() or {}
            )
    finally:
        engine.dispose()


@pytest.fixture
def granted(team):  # type: ignore[no-untyped-def]
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add("acme/fw01", password="pw")
    alice = team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    alice.checkouts.checkout("acme/fw01", reason="T-1 warm")  # contexts read: the next one goes to the lock
    return team, alice


def test_a_checkout_that_waited_for_the_head_is_not_dated_before_the_event_it_follows(granted) -> None:  # type: ignore[no-untyped-def]
    team, alice = granted
    with head_held(team.url) as commit:
        thread, outcome = waiting(lambda: alice.checkouts.checkout("acme/fw01", reason="T-2 after a writer ahead"))
        ahead = commit()
        thread.join(20)
    assert "error" not in outcome, outcome
    event = last_event(team.url)
    assert event["action"] == "checkout" and event["at_us"] >= ahead


def test_an_unlock_that_waited_for_the_head_is_not_dated_before_the_event_it_follows(granted) -> None:  # type: ignore[no-untyped-def]
    team, _ = granted
    bob = team.engineer("bob")
    bob.close()
    with head_held(team.url) as commit:
        thread, outcome = waiting(lambda: team.unlocked("bob"))
        ahead = commit()
        thread.join(20)
    assert "error" not in outcome, outcome
    outcome["value"].close()
    event = last_event(team.url)
    assert event["action"] == "unlock" and event["at_us"] >= ahead


def test_a_checkout_by_an_engineer_removed_while_it_waited_for_the_head_writes_nothing(granted) -> None:  # type: ignore[no-untyped-def]
    team, alice = granted
    me = alice.keyholder.me().engineer_id
    with head_held(team.url, remove=me) as commit:
        thread, outcome = waiting(lambda: alice.checkouts.checkout("acme/fw01", reason="T-3 racing a removal"))
        commit()
        thread.join(20)
    assert isinstance(outcome.get("error"), ConcurrentChange | UntrustedRecord), outcome
    engine = create_engine(team.url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            assert (
                conn.execute(text("SELECT count(*) FROM audit_events WHERE action = 'checkout'")).scalar_one() == 2
            )  # the warm-up's, and its copy the lock holder appended
    finally:
        engine.dispose()
