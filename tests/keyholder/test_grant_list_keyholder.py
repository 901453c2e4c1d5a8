"""The keyholder of ``grants.list`` against a DBA and a compromised authority.

An engineer or an admin lists through the real authority, or through a transport that
changes the answer. Every state is the keyholder's: a row a DBA rewrote (an end moved, a
signer swapped, a revocation cleared) is never shown ``active``; an answer showing an
engineer another engineer's grant, or rows not asked for, is refused whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from vault.authority.grant_requests import GrantListRows
from vault.errors import UntrustedRecord
from vault.service import clientparts
from vault.storage import models as m

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class TamperingTransport:
    def __init__(self, real: Any, answer: Callable[[GrantListRows], GrantListRows]) -> None:
        self.real, self.answer = real, answer

    def list(self, request: Any) -> GrantListRows:
        return self.answer(self.real.list(request))


def _use(vault: Any, answer: Callable[[GrantListRows], GrantListRows]) -> None:
    keyholder = clientparts.grant_list_keyholder(vault.grants)
    keyholder.transport = TamperingTransport(keyholder.transport, answer)
    vault.grants._list_keyholder = keyholder


def _id(team: Any, model: Any, **where: Any) -> int:
    with team.admin.store.read() as s:
        query = select(model.id)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return int(s.scalars(query).one())


@pytest.fixture
def scene(team: Any) -> tuple[Any, Any]:
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.clients.add("globex", "Globex Corp")
    alice = team.engineer("alice")
    team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    team.admin.grants.grant("alice", "globex")
    team.admin.grants.grant("bob", "acme")
    return team, alice


def _states(vault: Any, **kw: Any) -> list[tuple[str, str, str]]:
    return [(g.engineer, g.client, g.state) for g in vault.grants.list(**kw)]


def test_the_untampered_listing_is_the_control(scene: tuple[Any, Any]) -> None:
    team, alice = scene
    assert _states(alice) == [("alice", "acme", "active"), ("alice", "globex", "active")]
    assert _states(team.admin, client="acme") == [("alice", "acme", "active"), ("bob", "acme", "active")]
    assert [g.granted_by for g in alice.grants.list()] == [team.admin.engineer_name] * 2


def test_an_end_moved_by_a_dba_is_shown_unverified_never_active(scene: tuple[Any, Any]) -> None:
    """The DBA gives alice's acme grant another end (its signature covers the end)."""
    team, _alice = scene
    until = int(team.clock().timestamp()) + 30 * 86400
    with team.admin.store.transaction() as s:
        s.execute(update(m.Grant).where(m.Grant.engineer_id == _id(team, m.Engineer, name="alice")).values(until=until))
    assert {state for _, _, state in _states(team.admin, engineer="alice")} == {"unverified"}


def test_a_signer_swapped_by_a_dba_is_shown_unverified(scene: tuple[Any, Any]) -> None:
    """The DBA names bob (an engineer, not an admin) as the signer of alice's grants."""
    team, _alice = scene
    with team.admin.store.transaction() as s:
        s.execute(
            update(m.Grant)
            .where(m.Grant.engineer_id == _id(team, m.Engineer, name="alice"))
            .values(granted_by=_id(team, m.Engineer, name="bob"))
        )
    listed = team.admin.grants.list(engineer="alice")
    assert {g.state for g in listed} == {"unverified"} and {g.granted_by for g in listed} == {"bob"}


def test_names_swapped_by_a_dba_never_show_a_grant_active_under_the_other_name(scene: tuple[Any, Any]) -> None:
    """The DBA swaps the names of alice's and bob's rows: each certificate binds the old name to
    its key, so no grant is listed active under a name its grantee does not hold."""
    team, _alice = scene
    alice_id, bob_id = _id(team, m.Engineer, name="alice"), _id(team, m.Engineer, name="bob")
    with team.admin.store.transaction() as s:
        for who, name in ((alice_id, "swap-tmp"), (bob_id, "alice"), (alice_id, "bob")):
            s.execute(update(m.Engineer).where(m.Engineer.id == who).values(name=name))
    listed = _states(team.admin, client="acme")
    assert {name for name, _, _ in listed} == {"alice", "bob"}
    assert {state for _, _, state in listed} == {"unverified"}


def test_a_revocation_cleared_by_a_dba_is_not_shown_active_to_an_admin(scene: tuple[Any, Any]) -> None:
    """The DBA clears every mark of the revocation of bob's grant: the row verifies again, but
    the signed audit log records the revocation."""
    team, _alice = scene
    team.admin.grants.revoke("bob", "acme")
    assert _states(team.admin, engineer="bob") == [("bob", "acme", "revoked")]
    with team.admin.store.transaction() as s:
        s.execute(
            update(m.Grant)
            .where(m.Grant.engineer_id == _id(team, m.Engineer, name="bob"))
            .values(revoked_at=None, revoked_by=None, revocation=None)
        )
    assert _states(team.admin, engineer="bob") == [("bob", "acme", "unconfirmed")]


def _bobs_grant_to_alice(rows: GrantListRows) -> GrantListRows:
    """Another engineer's row in alice's answer (her own, relabelled as bob's)."""
    bob = next(e for e in rows.engineers if e.name != rows.me.name) if len(rows.engineers) > 1 else None
    first = rows.grants[0]
    other = first.row._replace(id=first.row.id + 1000, engineer_id=(bob.id if bob else rows.me.id + 1))
    return dataclasses.replace(rows, grants=(*rows.grants, dataclasses.replace(first, row=other)))


ANSWERS: dict[str, Callable[[GrantListRows], GrantListRows]] = {
    "another engineer's grant": _bobs_grant_to_alice,
    "a grant listed twice": lambda r: dataclasses.replace(r, grants=r.grants + r.grants[:1]),
    "another vault": lambda r: dataclasses.replace(r, vault_id=b"\x00" * 16),
}


@pytest.mark.parametrize("case", list(ANSWERS))
def test_an_untrue_answer_to_an_engineer_is_refused_whole(scene: tuple[Any, Any], case: str) -> None:
    _team, alice = scene
    _use(alice, ANSWERS[case])
    with pytest.raises(UntrustedRecord):
        alice.grants.list()


def test_rows_of_a_client_not_asked_for_are_refused(scene: tuple[Any, Any]) -> None:
    team, _alice = scene
    everything = team.admin.grants.list()
    assert len(everything) == 3

    keyholder = clientparts.grant_list_keyholder(team.admin.grants)
    real = keyholder.transport

    class Widening:
        def list(self, request: Any) -> GrantListRows:
            return real.list(dataclasses.replace(request, client_id=None))  # every client's rows

    keyholder.transport = Widening()  # type: ignore[assignment]
    team.admin.grants._list_keyholder = keyholder
    with pytest.raises(UntrustedRecord, match="another client"):
        team.admin.grants.list(client="acme")
