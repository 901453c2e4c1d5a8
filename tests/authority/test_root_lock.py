"""The active recovery key's row as a lock between a root rotation and what seals to it (``root_lock.py``).

The race it closes, on PostgreSQL: a client added while a root rotation's unit walks the clients,
committed after the walk passed it, kept a recovery copy sealed to the old key, which the rotation
then deleted with the rest (helper C's reading, session 15). Here a second connection stands in for
the rotation: it holds the active ``root_keys`` row as ``take_root`` does, and the client add must
wait for it, then seal to no destroyed key.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from vault.authority.root_lock import hold_root, take_root
from vault.errors import ConcurrentChange, UntrustedRecord, VaultError
from vault.storage import models as m
from vault.storage.engine import Store


def test_only_the_active_root_key_is_held(team) -> None:  # type: ignore[no-untyped-def]
    store = Store(team.url)
    try:
        with store.transaction() as s:
            assert take_root(s).version == 1
            assert hold_root(s, 1) == 1
            with pytest.raises(UntrustedRecord):
                hold_root(s, None)
            with pytest.raises(ConcurrentChange, match="rotated"):
                hold_root(s, 2)  # no such version
            s.execute(text("UPDATE root_keys SET state = 'destroyed' WHERE version = 1"))
            with pytest.raises(ConcurrentChange, match="rotated"):
                hold_root(s, 1)
            with pytest.raises(UntrustedRecord, match="no active recovery key"):
                take_root(s)
            s.rollback()
    finally:
        store.close()


def test_a_client_added_during_a_root_rotation_waits_and_seals_to_no_destroyed_key(team) -> None:  # type: ignore[no-untyped-def]
    if not team.url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: the race needs PostgreSQL's concurrent units")
    rotation = create_engine(team.url, poolclass=NullPool)
    outcome: list[object] = []
    with rotation.connect() as conn:
        conn.execute(text("SELECT version FROM root_keys WHERE state = 'active' FOR UPDATE"))  # take_root's lock

        def add() -> None:
            try:
                outcome.append(team.admin.clients.add("late", "Late Ltd"))
            except VaultError as error:
                outcome.append(error)

        adding = threading.Thread(target=add)
        adding.start()
        time.sleep(1.5)
        assert adding.is_alive(), "the client add did not wait for the rotation's lock"
        conn.execute(text("UPDATE root_keys SET state = 'destroyed' WHERE version = 1"))  # the rotation's end
        conn.commit()
        adding.join(timeout=60)
    rotation.dispose()
    assert not adding.is_alive() and len(outcome) == 1
    assert isinstance(outcome[0], (ConcurrentChange, UntrustedRecord))  # no active key left to seal to
    store = Store(team.url)
    try:
        with store.read() as s:
            assert s.scalars(select(m.Client)).all() == []
            assert s.scalars(select(m.ClientKeySeal)).all() == []  # nothing sealed to the destroyed key
    finally:
        store.close()
