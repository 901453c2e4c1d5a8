"""Lookup tags are only a hint (issue 12, item 5).

``clients.slug_tag`` and ``secrets.name_tag`` are plain columns: a writer of the
database who is not an admin (an engineer with the team's database URL, a DBA) can
swap them between rows. Every lookup by tag must then open the row's encrypted slug or
secret name (bound to its row by its associated data) and compare it with the name
asked for, so that an admin's ``grant``, ``secret add``, ``checkout`` or ``purge`` never
acts on another client or secret than the one named: the swap is an ``IntegrityError``
(``LookupMismatch``), and nothing is granted, written, revealed or destroyed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, update

from vault import Vault
from vault.errors import IntegrityError, LookupMismatch
from vault.storage import models as m

REASON = "T-5 lookup"
PLACEHOLDER = b"\x00" * 32  # a tag no row has, for the middle step of a swap (tags are unique)


@contextlib.contextmanager
def swapped(db: Any, column: Any, key: Any, first: int, second: int) -> Iterator[None]:
    """Swap ``column`` between the rows ``key == first`` and ``key == second``; swap back after."""
    table = column.class_

    def swap() -> None:
        a = db.scalar(select(column).where(key == first))
        b = db.scalar(select(column).where(key == second))
        db.run(
            update(table).where(key == first).values({column.key: PLACEHOLDER}),
            update(table).where(key == second).values({column.key: a}),
            update(table).where(key == first).values({column.key: b}),
        )

    swap()
    try:
        yield
    finally:
        swap()


def fresh(vault: Vault) -> Vault:
    """A new Vault object for the same engineer and session: nothing cached (the general path)."""
    return Vault(vault.store, engineer=vault.engineer_name, sessions=vault.sessions, clock=vault.clock)


def count(db: Any, model: Any, *where: Any) -> int:
    return int(db.scalar(select(func.count()).select_from(model).where(*where)))


def events(db: Any, action: str) -> int:
    return count(db, m.AuditEvent, m.AuditEvent.action == action)


def two_clients(shared: Any) -> tuple[str, int, str, int]:
    first = shared.client("mine")
    first_id = shared.db.newest_client_id()
    second = shared.client("victim")
    second_id = shared.db.newest_client_id()
    return first, first_id, second, second_id


# -- admins: the organisation lookup key finds a client by slug tag ----------------------------------


def test_grant_on_swapped_slug_tags_is_refused(shared: Any) -> None:
    admin, db = shared.admin, shared.db
    mine, mine_id, _victim, victim_id = two_clients(shared)
    alice = shared.engineer("alice")
    alice_id = db.engineer_id(alice.engineer_name)
    with swapped(db, m.Client.slug_tag, m.Client.id, mine_id, victim_id), pytest.raises(LookupMismatch):
        admin.grants.grant(alice.engineer_name, mine)  # the admin means "mine"; the row found is the victim's
    assert count(db, m.Grant, m.Grant.engineer_id == alice_id) == 0
    assert (
        count(
            db, m.ClientKeySeal, m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == alice_id
        )
        == 0
    )
    admin.grants.grant(alice.engineer_name, mine)  # the tags back in place: the grant goes where it was meant
    assert [g.client for g in admin.grants.list(engineer=alice.engineer_name)] == [mine]


def test_secret_add_on_swapped_slug_tags_is_refused(shared: Any) -> None:
    admin, db = shared.admin, shared.db
    mine, mine_id, victim, victim_id = two_clients(shared)
    alice = shared.engineer("alice")
    admin.grants.grant(alice.engineer_name, mine)  # alice reads "mine"; the new secret is for the victim
    with swapped(db, m.Client.slug_tag, m.Client.id, mine_id, victim_id), pytest.raises(LookupMismatch):
        admin.secrets.add(f"{victim}/vpn", password="victim-vpn-Pw-1")
    assert count(db, m.Secret, m.Secret.client_id.in_([mine_id, victim_id])) == 0
    assert [s.name for s in fresh(alice).secrets.list(mine)] == []


@pytest.mark.parametrize("warm", [False, True], ids=["general-path", "fast-path"])
def test_admin_checkout_on_swapped_slug_tags_is_refused(shared: Any, warm: bool) -> None:
    db = shared.db
    mine, mine_id, victim, victim_id = two_clients(shared)
    shared.admin.secrets.add(f"{mine}/fw", password="mine-fw-Pw-1")
    shared.admin.secrets.add(f"{victim}/fw", password="victim-fw-Pw-1")
    admin = fresh(shared.admin)
    if warm:  # the admin's Vault has checked this secret out before: the one-statement fast path
        assert admin.checkouts.reveal(f"{mine}/fw", reason=REASON) == "mine-fw-Pw-1"
    before = (events(db, "checkout"), count(db, m.Checkout))
    with swapped(db, m.Client.slug_tag, m.Client.id, mine_id, victim_id), pytest.raises(LookupMismatch):
        admin.checkouts.checkout(f"{mine}/fw", reason=REASON)
    assert (events(db, "checkout"), count(db, m.Checkout)) == before
    assert admin.checkouts.checkout(f"{mine}/fw", reason=REASON).value == "mine-fw-Pw-1"


def _client_with_two_secrets(shared: Any) -> tuple[str, int, int]:
    c = shared.client("acme")
    cid = shared.db.newest_client_id()
    shared.admin.secrets.add(f"{c}/one", password="one-Pw-1", username="user-one")
    shared.admin.secrets.add(f"{c}/two", password="two-Pw-2", username="user-two")
    one, two = shared.db.secret_ids(cid)
    return c, one, two


@pytest.mark.parametrize("warm", [False, True], ids=["general-path", "fast-path"])
@pytest.mark.parametrize("role", ["admin", "engineer"])
def test_checkout_on_swapped_name_tags_is_refused(shared: Any, role: str, warm: bool) -> None:
    db = shared.db
    c, one, two = _client_with_two_secrets(shared)
    if role == "admin":
        who = fresh(shared.admin)
    else:
        who = shared.engineer("bob")
        shared.admin.grants.grant(who.engineer_name, c)
        who = fresh(who)
    if warm:
        assert who.checkouts.reveal(f"{c}/one", reason=REASON) == "one-Pw-1"
    before = (events(db, "checkout"), events(db, "reveal"), count(db, m.Checkout))
    with swapped(db, m.Secret.name_tag, m.Secret.id, one, two):
        with pytest.raises(LookupMismatch):
            who.checkouts.checkout(f"{c}/one", reason=REASON)
        with pytest.raises(LookupMismatch):
            who.checkouts.reveal(f"{c}/one", "username", reason=REASON)
    assert (events(db, "checkout"), events(db, "reveal"), count(db, m.Checkout)) == before
    assert who.checkouts.reveal(f"{c}/one", reason=REASON) == "one-Pw-1"


def test_secret_update_and_show_on_swapped_name_tags_are_refused(shared: Any) -> None:
    admin, db = fresh(shared.admin), shared.db
    c, one, two = _client_with_two_secrets(shared)
    with swapped(db, m.Secret.name_tag, m.Secret.id, one, two):
        with pytest.raises(LookupMismatch):
            admin.secrets.update(f"{c}/one", password="written-to-the-wrong-secret")
        with pytest.raises(LookupMismatch):
            admin.secrets.show(f"{c}/one")
    assert count(db, m.SecretVersion, m.SecretVersion.secret_id.in_([one, two])) == 2
    assert admin.checkouts.reveal(f"{c}/two", reason=REASON) == "two-Pw-2"


def test_purge_client_on_swapped_slug_tags_is_refused(shared: Any) -> None:
    db = shared.db
    keep, keep_id, gone, gone_id = two_clients(shared)
    shared.admin.secrets.add(f"{keep}/fw", password="keep-fw-Pw-1")
    admin = fresh(shared.admin)
    with swapped(db, m.Client.slug_tag, m.Client.id, keep_id, gone_id):
        with pytest.raises(LookupMismatch):
            admin.purge.preview(gone)
        with pytest.raises(LookupMismatch):
            admin.purge.client(gone, request="DSR-5")
    assert count(db, m.Client, m.Client.id.in_([keep_id, gone_id])) == 2
    assert count(db, m.PurgeReceipt, m.PurgeReceipt.client_id.in_([keep_id, gone_id])) == 0
    assert admin.checkouts.reveal(f"{keep}/fw", reason=REASON) == "keep-fw-Pw-1"


def test_purge_secret_on_swapped_name_tags_is_refused(shared: Any) -> None:
    db = shared.db
    c, one, two = _client_with_two_secrets(shared)
    admin = fresh(shared.admin)
    with swapped(db, m.Secret.name_tag, m.Secret.id, one, two), pytest.raises(LookupMismatch):
        admin.purge.secret(f"{c}/two", request="DSR-5b")
    assert count(db, m.Secret, m.Secret.id.in_([one, two])) == 2
    assert admin.checkouts.reveal(f"{c}/one", reason=REASON) == "one-Pw-1"


def test_a_lookup_mismatch_is_an_integrity_error() -> None:
    assert issubclass(LookupMismatch, IntegrityError)
    assert "restore" in LookupMismatch("x").hint or "admin" in LookupMismatch("x").hint


# -- engineers: the slug cache is a hint, checked against the row it names ------------------------------


@pytest.mark.parametrize("warm", [False, True], ids=["general-path", "fast-path"])
def test_an_engineer_s_stale_slug_cache_does_not_redirect(shared: Any, warm: bool) -> None:
    mine, mine_id, victim, victim_id = two_clients(shared)
    shared.admin.secrets.add(f"{mine}/fw", password="mine-fw-Pw-1")
    shared.admin.secrets.add(f"{victim}/fw", password="victim-fw-Pw-1")
    carol = shared.engineer("carol")
    shared.admin.grants.grant(carol.engineer_name, mine)
    shared.admin.grants.grant(carol.engineer_name, victim)
    carol = fresh(carol)
    if warm:
        assert carol.checkouts.reveal(f"{mine}/fw", reason=REASON) == "mine-fw-Pw-1"
    carol.keyholder.slugs[mine] = victim_id  # a cache entry naming another row (as an id reused after a purge would)
    assert carol.checkouts.reveal(f"{mine}/fw", reason=REASON) == "mine-fw-Pw-1"
    assert carol.keyholder.slugs[mine] == mine_id
