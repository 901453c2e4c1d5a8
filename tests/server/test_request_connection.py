"""A request through the team server takes one connection from the pool (``Store.request``,
``vault/storage/held.py``): the authentication's lookup and the checkout's unit of work share it,
so it is pinged once; each unit keeps its own transaction (the checkout's event is committed
and its nonce with it, the lookup writes nothing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_harness import Keyed, events, keyholder
from sqlalchemy import event, func, select

from vault.storage import models as m
from vault.storage.engine import Store

REASON = "T-1234 reset VPN"


@pytest.fixture
def taken(keyed: Keyed) -> Iterator[list[int]]:
    """One entry per connection the server's store takes from its pool while the test runs."""
    seen: list[int] = []

    def listener(*_: object) -> None:
        seen.append(1)

    event.listen(keyed.store.engine, "checkout", listener)
    yield seen
    event.remove(keyed.store.engine, "checkout", listener)


def test_a_checkout_through_the_server_takes_one_connection_from_the_pool(keyed: Keyed, taken: list[int]) -> None:
    holder, _ = keyholder(keyed.served, keyed.served.alice)
    holder.checkout("acme/fw01", reason=REASON, field="password", version=None, hold=True, hold_for=None)
    before, nonces = len(events(keyed.served)), _nonces(keyed.store)
    taken.clear()  # the client's context read and its connection are behind it now
    found = holder.checkout("acme/fw01", reason=REASON, field="password", version=None, hold=True, hold_for=None)
    assert found.value == "pw of acme/fw01"
    assert len(taken) == 1  # the lookup (the limit, the caller) and the unit: one checkout, one pre-ping
    assert len(events(keyed.served)) == before + 1 and _nonces(keyed.store) == nonces + 1


def _nonces(store: Store) -> int:
    with store.read() as s:
        return int(s.scalar(select(func.count()).select_from(m.RequestNonce)) or 0)
