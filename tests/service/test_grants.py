"""Grants: without one an engineer sees nothing of a client; with one they read it."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select

from vault import Vault
from vault.errors import AccessDenied, GrantExpired, InvalidInput, NotFound
from vault.storage import models as m


@pytest.fixture
def shared(shared3):  # type: ignore[no-untyped-def]
    """The module's vault in each of ``shared3``'s modes (SQLite, PostgreSQL, through a team server)."""
    return shared3


@dataclass
class World:
    acme: str
    globex: str
    alice: Vault

    @property
    def name(self) -> str:
        assert self.alice.engineer_name is not None
        return self.alice.engineer_name


def _populate(admin: Vault, acme: str, globex: str) -> None:
    admin.clients.add(acme, "Acme Ltd")
    admin.clients.add(globex, "Globex Corp")
    admin.secrets.add(f"{acme}/fw01", password="acme-pw", host="10.0.0.1")
    admin.secrets.add(f"{globex}/sw01", password="globex-pw")


@pytest.fixture
def world(shared) -> World:  # type: ignore[no-untyped-def]
    """Two clients with a secret each, and an engineer with no grant yet (shared vault)."""
    acme, globex = shared.name("acme"), shared.name("globex")
    _populate(shared.admin, acme, globex)
    return World(acme, globex, shared.engineer("alice"))


def _seals_of(db, engineer_id: int) -> int:  # type: ignore[no-untyped-def]
    return int(
        db.scalar(
            select(func.count())
            .select_from(m.ClientKeySeal)
            .where(m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == engineer_id)
        )
    )


def _assert_hidden(vault: Vault, slug: str, reveal) -> None:  # type: ignore[no-untyped-def]
    assert slug not in [c.slug for c in vault.clients.list()]
    assert all(s.client != slug for s in vault.secrets.list())
    for call in (
        lambda: vault.clients.show(slug),
        lambda: vault.secrets.list(slug),
        lambda: vault.secrets.show(f"{slug}/fw01"),
        lambda: reveal(vault, f"{slug}/fw01"),
    ):
        with pytest.raises(NotFound) as caught:
            call()
        assert not isinstance(caught.value, AccessDenied)


def test_without_a_grant_an_engineer_sees_no_client_and_cannot_tell_it_exists(world, reveal):
    alice = world.alice
    assert alice.clients.list() == []
    assert alice.secrets.list() == []
    _assert_hidden(alice, world.acme, reveal)
    with pytest.raises(NotFound) as existing:
        alice.clients.show(world.acme)
    with pytest.raises(NotFound) as missing:
        alice.clients.show("nosuch")
    assert str(existing.value).replace(world.acme, "X") == str(missing.value).replace("nosuch", "X")
    assert existing.value.hint == missing.value.hint


def test_a_grant_lets_the_engineer_read_that_client_only(shared, world, reveal, reopen):
    granted = shared.admin.grants.grant(world.name, world.acme, reason="ticket 1")
    assert (granted.engineer, granted.client, granted.granted_by, granted.state) == (
        world.name,
        world.acme,
        "root-admin",
        "active",
    )
    for vault in (world.alice, reopen(world.alice)):
        assert [c.slug for c in vault.clients.list()] == [world.acme]
        assert vault.clients.show(world.acme).name == "Acme Ltd"
        assert [s.ref for s in vault.secrets.list()] == [f"{world.acme}/fw01"]
        assert reveal(vault, f"{world.acme}/fw01") == "acme-pw"
        _assert_hidden(vault, world.globex, reveal)


def test_revoke_hides_the_client_again_and_deletes_the_sealed_copy(shared, world, reveal, reopen):
    db, admin = shared.db, shared.admin
    admin.grants.grant(world.name, world.acme)
    admin.grants.grant(world.name, world.globex)
    assert reveal(world.alice, f"{world.acme}/fw01") == "acme-pw"
    alice_id = db.engineer_id(world.name)
    assert _seals_of(db, alice_id) == 2
    assert admin.grants.revoke(world.name, world.acme) == 1
    assert _seals_of(db, alice_id) == 1  # only globex's copy is left
    for vault in (world.alice, reopen(world.alice)):  # the same object (with its caches) and a fresh one
        _assert_hidden(vault, world.acme, reveal)
        assert reveal(vault, f"{world.globex}/sw01") == "globex-pw"
    with pytest.raises(NotFound):
        admin.grants.revoke(world.name, world.acme)
    states = {(g.client, g.state) for g in admin.grants.list(engineer=world.name)}
    assert states == {(world.acme, "revoked"), (world.globex, "active")}


def test_a_new_grant_replaces_the_old_one(shared, world):
    shared.admin.grants.grant(world.name, world.acme, until=shared.clock() + dt.timedelta(minutes=5))
    shared.admin.grants.grant(world.name, world.acme)
    grants = shared.admin.grants.list(engineer=world.name)
    assert sorted((g.state, g.until is None) for g in grants) == [("active", True), ("revoked", False)]


def test_until_in_the_past_or_now_is_refused(shared, world):
    before = shared.db.counts()
    for until in (shared.clock() - dt.timedelta(seconds=1), shared.clock()):
        with pytest.raises(InvalidInput):
            shared.admin.grants.grant(world.name, world.acme, until=until)
    assert shared.db.counts() == before


def test_a_naive_until_is_taken_as_utc(shared, world):
    naive = (shared.clock() + dt.timedelta(hours=1)).replace(tzinfo=None)
    granted = shared.admin.grants.grant(world.name, world.acme, until=naive)
    assert granted.until == naive.replace(tzinfo=dt.UTC)
    with pytest.raises(InvalidInput):
        shared.admin.grants.grant(world.name, world.acme, until=naive - dt.timedelta(hours=2))


def test_a_grant_past_its_until_hides_the_client(shared, world, reveal, reopen):
    admin, alice, a, acme, globex = shared.admin, world.alice, world.name, world.acme, world.globex
    admin.grants.grant(a, acme, until=shared.clock() + dt.timedelta(minutes=10))
    admin.grants.grant(a, globex)
    assert reveal(alice, f"{acme}/fw01") == "acme-pw"
    with shared.later(minutes=11):
        for vault in (alice, reopen(alice)):
            assert [c.slug for c in vault.clients.list()] == [globex]
            assert [s.ref for s in vault.secrets.list()] == [f"{globex}/sw01"]
            with pytest.raises((NotFound, GrantExpired)):  # never a value
                reveal(vault, f"{acme}/fw01")
        states = {(g.client, g.state) for g in admin.grants.list(engineer=a)}
        assert states == {(acme, "expired"), (globex, "active")}


def test_a_grant_past_its_until_raises_grant_expired(shared, world, reveal, reopen):
    shared.admin.grants.grant(world.name, world.acme, until=shared.clock() + dt.timedelta(minutes=10))
    # through a team server the engineer's machine learns no client of an expired grant, not even its slug
    expired = (NotFound, "1 of your grants expired") if getattr(shared, "served", False) else (GrantExpired, None)
    with shared.later(minutes=11):
        for vault in (world.alice, reopen(world.alice)):
            with pytest.raises(expired[0], match=expired[1]) as caught:
                reveal(vault, f"{world.acme}/fw01")
            assert "acme-pw" not in str(caught.value)
            with pytest.raises(expired[0], match=expired[1]):
                vault.clients.show(world.acme)


def test_only_an_admin_grants_revokes_invites_and_adds_clients(shared, world):
    alice, admin = world.alice, shared.admin
    admin.grants.grant(world.name, world.acme)
    bob = shared.engineer("bob").engineer_name
    before = shared.db.counts()
    calls = [
        lambda: alice.grants.grant(bob, world.acme),
        lambda: alice.grants.grant(world.name, world.globex),
        lambda: alice.grants.revoke(world.name, world.acme),
        lambda: alice.clients.add(shared.name("initech"), "Initech"),
        lambda: alice.engineers.invite(shared.name("mallory")),  # served since session 13 (refused there too)
        lambda: alice.engineers.invite(shared.name("mallory"), role="admin"),
    ]
    for call in calls:
        with pytest.raises(AccessDenied):
            call()
    after = shared.db.counts()
    after.pop("audit_events", None), before.pop("audit_events", None)  # a refusal may be audited
    after.pop("audit_head", None), before.pop("audit_head", None)
    # through a server a refused request's nonce is kept (replay defence) before the refusal
    after.pop("request_nonces", None), before.pop("request_nonces", None)
    assert after == before


def test_grants_to_unknown_engineers_or_clients_or_admins_are_refused(shared, world):
    carol = shared.engineer("carol", role="admin").engineer_name
    before = shared.db.counts()
    with pytest.raises(NotFound):
        shared.admin.grants.grant("nobody", world.acme)
    with pytest.raises(NotFound):
        shared.admin.grants.grant(world.name, "nosuch")
    with pytest.raises(InvalidInput):
        shared.admin.grants.grant(carol, world.acme)
    assert shared.db.counts() == before


def test_list_grants_filters_by_engineer_and_client_and_shows_an_engineer_only_theirs(shared, world):
    admin, alice, a, acme, globex = shared.admin, world.alice, world.name, world.acme, world.globex
    bob_vault = shared.engineer("bob")
    b = bob_vault.engineer_name
    admin.grants.grant(a, acme)
    admin.grants.grant(a, globex)
    admin.grants.grant(b, acme)
    admin.grants.revoke(a, globex)

    def pairs(grants):  # type: ignore[no-untyped-def]
        return sorted((g.engineer, g.client, g.state) for g in grants)

    ours = {a, b}
    assert pairs(g for g in admin.grants.list() if g.engineer in ours) == [
        (a, acme, "active"),
        (a, globex, "revoked"),
        (b, acme, "active"),
    ]
    assert pairs(admin.grants.list(engineer=a)) == [(a, acme, "active"), (a, globex, "revoked")]
    assert pairs(admin.grants.list(client=acme)) == [(a, acme, "active"), (b, acme, "active")]
    assert pairs(admin.grants.list(engineer=b, client=acme)) == [(b, acme, "active")]
    assert pairs(admin.grants.list(engineer=b, client=globex)) == []
    assert pairs(bob_vault.grants.list()) == [(b, acme, "active")]
    assert pairs(bob_vault.grants.list(engineer=a)) == []
    assert all(g.engineer == a for g in alice.grants.list())
    assert (a, acme, "active") in pairs(alice.grants.list())
    with pytest.raises(NotFound):
        bob_vault.grants.list(client=globex)


def test_access_follows_every_sequence_of_grants_revocations_and_expiries(shared, reveal):
    """State machine: at every step an engineer reads the client exactly while they hold
    an unexpired, unrevoked grant, even through a Vault object that read before."""
    admin, c = shared.admin, shared.client()
    admin.secrets.add(f"{c}/fw01", password="seq-pw")
    engineers = [shared.engineer("eve"), shared.engineer("frank")]
    start = shared.now

    class Grants(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.until: dict[str, dt.datetime | None] = {}  # engineer -> expiry; absent: no grant

        @rule(who=st.sampled_from(engineers), minutes=st.sampled_from([None, 5, 20]))
        def grant(self, who: Vault, minutes: int | None) -> None:
            until = None if minutes is None else shared.now + dt.timedelta(minutes=minutes)
            admin.grants.grant(who.engineer_name, c, until=until)
            self.until[who.engineer_name] = until

        @rule(who=st.sampled_from(engineers))
        def revoke(self, who: Vault) -> None:
            if who.engineer_name in self.until:
                self._revoke(who.engineer_name)
            else:
                with pytest.raises(NotFound):
                    admin.grants.revoke(who.engineer_name, c)

        def _revoke(self, name: str) -> None:
            until = self.until.pop(name)
            if until is not None and until <= shared.now:
                with contextlib.suppress(NotFound):  # an expired grant may already have been swept away
                    admin.grants.revoke(name, c)
            else:
                assert admin.grants.revoke(name, c) == 1

        @rule()
        def time_passes(self) -> None:
            shared.now += dt.timedelta(minutes=6)

        @invariant()
        def only_current_grants_read(self) -> None:
            for who in engineers:
                holds, until = who.engineer_name in self.until, self.until.get(who.engineer_name)
                if holds and (until is None or until > shared.now):
                    assert reveal(who, f"{c}/fw01") == "seq-pw"
                else:
                    with pytest.raises((NotFound, GrantExpired)):
                        reveal(who, f"{c}/fw01")

        def teardown(self) -> None:
            for name in list(self.until):
                self._revoke(name)
            if not getattr(shared, "served", False):  # a served vault's events are never dated back
                shared.now = start

    run_state_machine_as_test(Grants, settings=settings(max_examples=5, stateful_step_count=6, deadline=None))
