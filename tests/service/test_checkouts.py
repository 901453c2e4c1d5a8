"""Checkout and check-in (issue 3): nothing is revealed before its audit event is durable.

Every test runs on SQLite and PostgreSQL (the ``team`` fixture). Sessions last 15
minutes by default, so a test that moves the clock by hours unlocks again first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from served import ServedTeam, only_local
from sqlalchemy import event, func, select

from vault import Vault
from vault.authority import checkout_events
from vault.authority.checkouts import CheckoutAuthority
from vault.errors import (
    AccessDenied,
    AuditUnavailable,
    CheckoutConflict,
    GrantExpired,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)
from vault.storage import models as m

REF, PW = "acme/fw01", "acme-pw-1"
OTHER_REF, OTHER_PW = "acme/sw01", "acme-pw-2"
REASON = "T-1234 reset VPN"


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def acme(team3):  # type: ignore[no-untyped-def]
    """acme with two secrets (default policy: reason required, not exclusive), in each of ``team3``'s modes."""
    team = team3
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add(REF, password=PW, kind="equipment", username="fw-admin", host="10.0.0.1")
    team.admin.secrets.add(OTHER_REF, password=OTHER_PW, kind="equipment")
    return team


def _granted(team, name: str, **grant: Any) -> Vault:  # type: ignore[no-untyped-def]
    vault = team.engineer(name)
    team.admin.grants.grant(name, "acme", **grant)
    return vault


def _unlock_again(team, *vaults: Vault, ttl: dt.timedelta | None = None) -> None:  # type: ignore[no-untyped-def]
    """Unlock after the clock moved past the session's expiry."""
    for vault in vaults:
        name = vault.engineer_name
        assert name is not None
        if ttl is None:
            vault.engineers.unlock(name, team.passphrases[name])
        else:
            vault.engineers.unlock(name, team.passphrases[name], ttl=ttl)


def _scalar(team, statement: Any) -> Any:  # type: ignore[no-untyped-def]
    with team.admin.store.transaction() as s:
        return s.scalar(statement)


def _secret_row(team, ref: str = REF) -> m.Secret:  # type: ignore[no-untyped-def]
    """The secret's row, read through SQLAlchemy (the name is only known to the service)."""
    with team.admin.store.transaction() as s:
        _client, secret, _slug = team.admin.secrets.secret(s, ref)
        s.expunge(secret)
        return secret


def _open_checkouts(team) -> int:  # type: ignore[no-untyped-def]
    return int(_scalar(team, select(func.count()).select_from(m.Checkout).where(m.Checkout.released_at.is_(None))))


def _all_checkouts(team) -> int:  # type: ignore[no-untyped-def]
    return int(_scalar(team, select(func.count()).select_from(m.Checkout)))


def _newest_event(team) -> m.AuditEvent:  # type: ignore[no-untyped-def]
    with team.admin.store.transaction() as s:
        row = s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq.desc()).limit(1)).one()
        s.expunge(row)
        return row


def _actions_since(team, seq: int) -> list[str]:  # type: ignore[no-untyped-def]
    with team.admin.store.transaction() as s:
        return list(s.scalars(select(m.AuditEvent.action).where(m.AuditEvent.seq > seq).order_by(m.AuditEvent.seq)))


def _engineer_id(team, name: str) -> int:  # type: ignore[no-untyped-def]
    return int(_scalar(team, select(m.Engineer.id).where(m.Engineer.name == name)))


# -- reasons and the event before the value -----------------------------------------------------


def test_checkout_without_a_reason_is_refused_and_appends_no_event(acme):
    alice = _granted(acme, "alice")
    head = acme.admin.audit.head()
    for reason in (None, "", "   "):
        with pytest.raises(InvalidInput) as caught:
            alice.checkouts.checkout(REF, reason=reason)
        assert PW not in str(caught.value)
        with pytest.raises(InvalidInput):
            alice.checkouts.reveal(REF, reason=reason)
    assert acme.admin.audit.head() == head  # no checkout/reveal (or any other) event
    assert _all_checkouts(acme) == 0


def test_checkout_with_a_reason_returns_the_value_after_a_signed_checkout_event(acme):
    alice = _granted(acme, "alice")
    revealed = alice.checkouts.checkout(REF, reason=REASON)
    assert (revealed.value, revealed.field, revealed.version) == (PW, "password", 1)
    assert revealed.expires_at == acme.clock() + dt.timedelta(hours=2)  # the default hold
    assert PW not in repr(revealed) and PW not in str(revealed)

    newest = _newest_event(acme)
    assert (newest.seq, newest.hash) == acme.admin.audit.head()
    assert newest.action == "checkout"
    assert newest.engineer_id == _engineer_id(acme, "alice")
    assert newest.signature is not None
    entry = acme.admin.audit.log()[-1]
    assert (entry.seq, entry.action, entry.engineer, entry.client, entry.readable) == (
        newest.seq,
        "checkout",
        "alice",
        "acme",
        True,
    )
    assert entry.details is not None
    assert (entry.details["reason"], entry.details["field"], entry.details["version"]) == (REASON, "password", 1)

    username = alice.checkouts.checkout(REF, reason="T-2 check the login", field="username")
    assert username.value == "fw-admin"
    details = acme.admin.audit.log()[-1].details
    assert details is not None
    assert (details["field"], details["reason"]) == ("username", "T-2 check the login")
    assert acme.admin.audit.verify().ok


def test_a_plain_reveal_is_audited_as_reveal_and_holds_nothing(acme):
    alice = _granted(acme, "alice")
    assert alice.checkouts.reveal(REF, reason=REASON) == PW
    newest = _newest_event(acme)
    assert (newest.action, newest.signature is not None) == ("reveal", True)
    assert _all_checkouts(acme) == 0
    assert alice.checkouts.list() == []


# -- fail closed ------------------------------------------------------------------------------------


def test_when_the_audit_event_cannot_be_written_nothing_is_revealed(acme, monkeypatch):
    alice = _granted(acme, "alice")
    acme.admin.policies.set("acme", exclusive=True, rotate_after_checkout=True)
    head = acme.admin.audit.head()
    real = CheckoutAuthority._append

    def append(self, conn, sqlite, caller, request, *rest):  # type: ignore[no-untyped-def]
        if request.action in ("checkout", "reveal"):  # the checkout's event, appended by its authority
            raise StoreUnavailable("disk full")
        return real(self, conn, sqlite, caller, request, *rest)

    monkeypatch.setattr(CheckoutAuthority, "_append", append)
    real_served = checkout_events.append

    def served_append(s, event, clock, request, *rest, **kwargs):  # type: ignore[no-untyped-def]
        if request.action in ("checkout", "reveal"):  # through the server (team3's HTTPS mode)
            raise StoreUnavailable("disk full")
        return real_served(s, event, clock, request, *rest, **kwargs)

    monkeypatch.setattr(checkout_events, "append", served_append)
    outcomes = []
    for call in (
        lambda: alice.checkouts.checkout(REF, reason=REASON),
        lambda: alice.checkouts.reveal(REF, reason=REASON),
        lambda: acme.admin.checkouts.checkout(REF, reason=REASON, field="username"),
    ):
        with pytest.raises(AuditUnavailable) as caught:
            outcomes.append(call())
        assert PW not in str(caught.value) and "fw-admin" not in str(caught.value)
        assert caught.value.hint  # tells the user what to do
    assert outcomes == []
    assert acme.admin.audit.head() == head
    assert _all_checkouts(acme) == 0
    secret = _secret_row(acme)
    assert secret.must_change is False and secret.last_used_at is None  # the whole transaction rolled back


@contextlib.contextmanager
def _refuse_the_audit_write(store, statement_prefix: str = "INSERT INTO AUDIT_EVENTS") -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Make the database itself refuse the audit event's INSERT, mid-transaction.

    Just before the INSERT reaches the driver, the connection is switched to read-only:
    ``PRAGMA query_only`` on SQLite (SQLITE_READONLY, as for a file or disk that turned
    read-only) and ``SET TRANSACTION READ ONLY`` on PostgreSQL (SQLSTATE 25006, what a
    server that failed over to a hot standby answers). The value has been decrypted by
    then; the only thing missing is the durable write of the event. (Opening the file
    read-only from the start cannot show this: SQLite's BEGIN IMMEDIATE fails first.)
    """
    sqlite = store.engine.dialect.name == "sqlite"

    def before(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(statement_prefix):
            cursor.execute("PRAGMA query_only = ON" if sqlite else "SET TRANSACTION READ ONLY")

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        yield
    finally:
        event.remove(store.engine, "before_cursor_execute", before)
        store.engine.dispose()  # no connection stays read-only


def test_a_write_refused_by_the_database_reveals_nothing_and_says_audit_unavailable(acme):
    alice = _granted(acme, "alice")
    acme.admin.policies.set("acme", exclusive=True, rotate_after_checkout=True)
    head = acme.admin.audit.head()
    outcomes = []
    store = acme.server_store if isinstance(acme, ServedTeam) else alice.store  # the server's, over HTTPS
    with _refuse_the_audit_write(store):
        with pytest.raises(AuditUnavailable) as caught:
            outcomes.append(alice.checkouts.checkout(REF, reason=REASON))
        assert PW not in str(caught.value)
        with pytest.raises(AuditUnavailable):
            outcomes.append(alice.checkouts.reveal(REF, reason=REASON))
    assert outcomes == []
    assert acme.admin.audit.head() == head
    assert _all_checkouts(acme) == 0
    assert _secret_row(acme).must_change is False
    assert alice.checkouts.checkout(REF, reason=REASON).value == PW  # and it works again once the database does


# -- exclusive checkout -----------------------------------------------------------------------------


def test_exclusive_checkout_refuses_a_second_engineer_naming_the_holder_until_check_in(acme):
    acme.admin.policies.set("acme", exclusive=True)
    alice, bob = _granted(acme, "alice"), _granted(acme, "bob")
    held = alice.checkouts.checkout(REF, reason=REASON)
    assert held.expires_at is not None
    head = acme.admin.audit.head()
    with pytest.raises(CheckoutConflict) as caught:
        bob.checkouts.checkout(REF, reason="T-2 also needs it")
    message = str(caught.value)
    assert "alice" in message
    assert held.expires_at.isoformat(timespec="minutes") in message
    assert PW not in message
    with pytest.raises(CheckoutConflict):
        bob.checkouts.reveal(REF, reason="T-2 just a peek")  # a plain reveal does not get around it
    assert acme.admin.audit.head() == head  # refusals append nothing
    assert alice.checkouts.checkout(REF, reason="T-1 again").value == PW  # the holder may renew
    assert bob.checkouts.checkout(OTHER_REF, reason="T-3").value == OTHER_PW  # other secrets are free

    assert alice.checkouts.checkin(REF) is None
    assert _newest_event(acme).action == "checkin"
    assert bob.checkouts.checkout(REF, reason="T-2 also needs it").value == PW
    with pytest.raises(CheckoutConflict) as caught:
        alice.checkouts.checkout(REF, reason="T-4")
    assert "bob" in str(caught.value)
    assert acme.admin.audit.verify().ok


def test_exclusive_checkout_lapses_after_the_default_two_hours_without_check_in(acme):
    acme.admin.policies.set("acme", exclusive=True)
    alice, bob = _granted(acme, "alice"), _granted(acme, "bob")
    alice.checkouts.checkout(REF, reason=REASON)
    acme.clock.advance(hours=1, minutes=59)
    _unlock_again(acme, alice, bob, acme.admin)
    with pytest.raises(CheckoutConflict):
        bob.checkouts.checkout(REF, reason="T-2")
    acme.clock.advance(minutes=2)
    _unlock_again(acme, bob, acme.admin)
    assert bob.checkouts.checkout(REF, reason="T-2").value == PW
    assert [(c.engineer, c.secret) for c in acme.admin.checkouts.list()] == [("bob", "fw01")]


def test_exclusive_checkout_respects_hold_for(acme):
    acme.admin.policies.set("acme", exclusive=True)
    alice, bob = _granted(acme, "alice"), _granted(acme, "bob")
    held = alice.checkouts.checkout(REF, reason=REASON, hold_for=dt.timedelta(minutes=30))
    assert held.expires_at == acme.clock() + dt.timedelta(minutes=30)
    details = acme.admin.audit.log()[-1].details
    assert details is not None and details["until"] == int(held.expires_at.timestamp())
    acme.clock.advance(minutes=29)
    _unlock_again(acme, bob)
    with pytest.raises(CheckoutConflict):
        bob.checkouts.checkout(REF, reason="T-2")
    acme.clock.advance(minutes=2)
    _unlock_again(acme, bob)
    assert bob.checkouts.checkout(REF, reason="T-2").value == PW


def test_a_policy_hold_length_is_the_default_and_bad_lengths_are_refused(acme):
    acme.admin.policies.set("acme", exclusive=True, checkout_for=dt.timedelta(minutes=45))
    alice = _granted(acme, "alice")
    head = acme.admin.audit.head()
    for bad in (dt.timedelta(seconds=30), dt.timedelta(days=8), dt.timedelta(minutes=-5)):
        with pytest.raises(InvalidInput):
            alice.checkouts.checkout(REF, reason=REASON, hold_for=bad)
    assert acme.admin.audit.head() == head
    assert alice.checkouts.checkout(REF, reason=REASON).expires_at == acme.clock() + dt.timedelta(minutes=45)
    with pytest.raises(InvalidInput):
        acme.admin.policies.set("acme", checkout_for=dt.timedelta(days=8))


def test_a_zero_hold_is_refused_not_replaced_by_the_default(acme):
    alice = _granted(acme, "alice")
    with pytest.raises(InvalidInput):
        alice.checkouts.checkout(REF, reason=REASON, hold_for=dt.timedelta(0))


def test_an_admin_breaks_an_exclusive_checkout_and_it_is_logged(acme):
    acme.admin.policies.set("acme", exclusive=True)
    alice, bob = _granted(acme, "alice"), _granted(acme, "bob")
    alice.checkouts.checkout(REF, reason=REASON)
    with pytest.raises(AccessDenied):
        bob.checkouts.break_checkout(REF)
    assert acme.admin.checkouts.break_checkout(REF) == "alice"
    newest = acme.admin.audit.log()[-1]
    assert (newest.action, newest.engineer) == ("checkout-break", "root-admin")
    assert newest.details is not None and newest.details["holders"] == ["alice"]
    assert _open_checkouts(acme) == 0
    assert bob.checkouts.checkout(REF, reason="T-2").value == PW
    with pytest.raises(NotFound):
        alice.checkouts.checkin(REF)  # hers was broken: nothing left to check in
    with pytest.raises(NotFound):
        acme.admin.checkouts.break_checkout(OTHER_REF)  # not checked out


def test_non_exclusive_checkouts_can_overlap(acme):
    alice, bob = _granted(acme, "alice"), _granted(acme, "bob")
    assert alice.checkouts.checkout(REF, reason=REASON).value == PW
    assert bob.checkouts.checkout(REF, reason="T-2").value == PW
    assert sorted(c.engineer for c in acme.admin.checkouts.list()) == ["alice", "bob"]


# -- rotate after checkout ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["generate", "new_password"])
def test_rotate_after_checkout_flags_the_secret_until_check_in_stores_a_new_value(acme, how):
    acme.admin.policies.set("acme", rotate_after_checkout=True)
    alice = _granted(acme, "alice")
    assert _secret_row(acme).must_change is False
    revealed = alice.checkouts.checkout(REF, reason=REASON)
    assert revealed.must_change is True
    assert _secret_row(acme).must_change is True
    assert alice.checkouts.checkout(REF, reason=REASON, field="username").value == "fw-admin"

    result = (
        alice.checkouts.checkin(REF, generate=True)
        if how == "generate"
        else alice.checkouts.checkin(REF, new_password="brand-new pw 2")
    )
    assert result is None or result.must_change is False
    secret = _secret_row(acme)
    assert (secret.must_change, secret.current_version) == (False, 2)
    new = acme.admin.checkouts.reveal(REF, reason="T-check")
    assert new != PW
    if how == "new_password":
        assert new == "brand-new pw 2"
    else:
        assert len(new) >= 16
    assert acme.admin.checkouts.reveal(REF, reason="T-check", version=1) == PW  # the old version is kept
    assert _open_checkouts(acme) == 0
    entry = acme.admin.audit.log()[-3]  # checkin, then the admin's two reveals
    assert entry.action == "checkin" and entry.details is not None and entry.details["new_version"] is True


def test_check_in_without_a_new_value_releases_but_keeps_the_flag(acme):
    acme.admin.policies.set("acme", rotate_after_checkout=True)
    alice = _granted(acme, "alice")
    alice.checkouts.checkout(REF, reason=REASON)
    result = alice.checkouts.checkin(REF)
    assert result is not None and result.must_change is True
    assert _secret_row(acme).must_change is True
    assert _open_checkouts(acme) == 0
    alice.checkouts.checkin(REF, new_password="rotated on the device")
    assert _secret_row(acme).must_change is False


def test_check_in_refuses_conflicting_options_and_nothing_to_release(acme):
    alice = _granted(acme, "alice")
    with pytest.raises(InvalidInput):
        alice.checkouts.checkin(REF, new_password="x-new-1", generate=True)
    with pytest.raises(NotFound):
        alice.checkouts.checkin(REF)
    assert _secret_row(acme).current_version == 1


def test_without_the_policy_a_checkout_does_not_flag_the_secret(acme):
    alice = _granted(acme, "alice")
    assert alice.checkouts.checkout(REF, reason=REASON).must_change is False
    assert _secret_row(acme).must_change is False


def test_rotate_after_checkout_also_flags_a_plain_reveal_of_the_password(acme):
    acme.admin.policies.set("acme", rotate_after_checkout=True)
    alice = _granted(acme, "alice")
    assert alice.checkouts.reveal(REF, reason=REASON) == PW
    assert _secret_row(acme).must_change is True


# -- listing open checkouts --------------------------------------------------------------------------


def test_list_checkouts_shows_all_to_an_admin_and_own_to_an_engineer(acme):
    alice, bob, carol = _granted(acme, "alice"), _granted(acme, "bob"), _granted(acme, "carol")
    alice.checkouts.checkout(REF, reason=REASON)
    acme.clock.advance(seconds=5)
    bob.checkouts.checkout(OTHER_REF, reason="T-2", hold_for=dt.timedelta(hours=1))
    before = _all_checkouts(acme)
    assert carol.checkouts.reveal(REF, reason="T-3 a look") == PW
    assert _all_checkouts(acme) == before  # a reveal holds nothing
    assert carol.checkouts.list() == []

    everything = acme.admin.checkouts.list()
    assert [(c.client, c.secret, c.engineer, c.exclusive) for c in everything] == [
        ("acme", "fw01", "alice", False),
        ("acme", "sw01", "bob", False),
    ]
    assert everything[1].expires_at - everything[1].started_at == dt.timedelta(hours=1)
    assert [(c.secret, c.engineer) for c in alice.checkouts.list()] == [("fw01", "alice")]
    assert [(c.secret, c.engineer) for c in bob.checkouts.list()] == [("sw01", "bob")]

    alice.checkouts.checkin(REF)
    assert [c.engineer for c in acme.admin.checkouts.list()] == ["bob"]
    acme.clock.advance(hours=1, minutes=1)
    _unlock_again(acme, acme.admin)
    assert acme.admin.checkouts.list() == []  # lapsed holds are not open


# -- expired grants ----------------------------------------------------------------------------------


def _engineer_seals(team, name: str) -> int:  # type: ignore[no-untyped-def]
    return int(
        _scalar(
            team,
            select(func.count())
            .select_from(m.ClientKeySeal)
            .where(
                m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == _engineer_id(team, name)
            ),
        )
    )


def test_an_expired_grant_stops_working_at_once_and_maintain_deletes_its_key_copies(acme):
    alice = acme.engineer("alice")
    alice.engineers.unlock("alice", acme.passphrases["alice"], ttl=dt.timedelta(hours=12))  # keeps its cached keys
    acme.admin.grants.grant("alice", "acme", until=acme.clock() + dt.timedelta(hours=1))
    assert alice.checkouts.checkout(REF, reason=REASON).value == PW
    assert _engineer_seals(acme, "alice") == 1

    acme.clock.advance(hours=2)
    head = acme.admin.audit.head()
    for call in (
        lambda: alice.checkouts.checkout(REF, reason="T-late"),
        lambda: alice.checkouts.reveal(OTHER_REF, reason="T-late"),
    ):
        with pytest.raises((AccessDenied, NotFound)) as caught:
            call()
        assert PW not in str(caught.value)
    assert acme.admin.audit.head() == head
    assert _engineer_seals(acme, "alice") == 1  # still there until an admin operation sweeps

    _unlock_again(acme, acme.admin)
    head = acme.admin.audit.head()
    assert acme.admin.grants.maintain() == 1
    assert _engineer_seals(acme, "alice") == 0
    assert _actions_since(acme, head[0]) == ["grants-expired"]
    newest = acme.admin.audit.log()[-1]
    assert newest.details is not None and newest.details["sealed_copies_deleted"] == 1
    assert acme.admin.grants.maintain() == 0  # nothing left to sweep
    assert acme.admin.grants.list(engineer="alice")[0].state in ("expired", "revoked")


def test_the_next_admin_operation_also_sweeps_expired_grants(acme):
    _granted(acme, "alice", until=acme.clock() + dt.timedelta(hours=1))
    acme.clock.advance(hours=2)
    _unlock_again(acme, acme.admin)
    head = acme.admin.audit.head()
    acme.admin.clients.add("globex", "Globex Corp")
    assert _engineer_seals(acme, "alice") == 0
    assert _actions_since(acme, head[0]) == ["grants-expired", "client-create"]


def test_checkout_on_an_expired_grant_raises_grant_expired(acme):
    alice = _granted(acme, "alice", until=acme.clock() + dt.timedelta(hours=1))
    acme.clock.advance(hours=2)
    _unlock_again(acme, alice)
    if isinstance(acme, ServedTeam):  # the server releases nothing of that client, so its slug cannot be read
        with pytest.raises(NotFound, match="1 of your grants expired"):
            alice.checkouts.checkout(REF, reason="T-late")
        return
    with pytest.raises(GrantExpired):
        alice.checkouts.checkout(REF, reason="T-late")


# -- what the keyholder remembers ----------------------------------------------------------------


@pytest.mark.parametrize("who", ["admin", "engineer"])
def test_a_client_made_again_under_the_same_slug_is_checked_out_with_its_new_lookup_key(team, who):
    # Found in review: a name tag remembered per (slug, name) was sent again after the client
    # was purged and made again (a new lookup key), so the secret read as missing until unlock.
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add(REF, password="first-pw")
    vault = admin if who == "admin" else team.engineer("bob")
    if who == "engineer":
        admin.grants.grant("bob", "acme", reason="on call")
    assert vault.checkouts.checkout(REF, reason=REASON).value == "first-pw"
    vault.checkouts.checkin(REF)
    admin.purge.client("acme", request="DSR-1")
    admin.clients.add("acme", "Acme Ltd, again")
    admin.secrets.add(REF, password="second-pw")
    if who == "engineer":
        admin.grants.grant("bob", "acme", reason="on call")
        assert vault.secrets.show(REF).name == "fw01"  # the engineer's client index learns the new client
    assert vault.checkouts.checkout(REF, reason=REASON).value == "second-pw"


def test_the_authority_learns_only_whether_a_hold_is_exclusive_never_its_reason(acme, monkeypatch):
    # Found in review: the hold check handed the authority the whole opened details (the reason).
    only_local(acme, "the in-process authority's hold check: the server verifies a hold from its event itself")
    acme.admin.policies.set("acme", exclusive=True)
    alice, bob = _granted(acme, "alice"), _granted(acme, "bob")
    alice.checkouts.checkout(REF, reason="INC-42 alice's private reason")
    from vault.keyholder import checkouts as keyholder

    answers: list[object] = []
    real = keyholder._EventSeal.hold_claim

    def spy(self, *args):  # type: ignore[no-untyped-def]
        answers.append(real(self, *args))
        return answers[-1]

    monkeypatch.setattr(keyholder._EventSeal, "hold_claim", spy)
    with pytest.raises(CheckoutConflict):
        bob.checkouts.checkout(REF, reason="T-2")
    assert answers == [True]
