"""Issue 12, item 12: policies, vault settings and exclusive holds against a database writer.

The attacker is an engineer with a certified key, a grant for the client, and write
access to the database (or a DBA). They relax a client's policy, plant or edit holds, and
change the vault's settings with SQL; honest users then use the public ``Vault`` API.
Nothing they wrote may take effect: a policy is used only through an admin's signature
(else the strict policy applies), a hold only through the checkout event it names, and
the settings only through an admin's signature and within their bounds.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from vault.crypto import chain
from vault.errors import CheckoutConflict, InvalidInput, NotFound
from vault.keyholder.settings import signed_settings
from vault.storage import models as m

REASON = "T-77 attack test"


@pytest.fixture
def acme(shared):  # type: ignore[no-untyped-def]
    """A fresh client with one secret, two engineers holding grants, and handles to it all."""
    slug = shared.client()
    ref = f"{slug}/fw01"
    shared.admin.secrets.add(ref, password="pw-1", kind="equipment")
    alice, mallory = shared.engineer("alice"), shared.engineer("mallory")
    for vault in (alice, mallory):
        shared.admin.grants.grant(vault.engineer_name, slug)
    client_id = shared.db.newest_client_id()
    return shared, slug, ref, client_id, alice, mallory


def _policy_row(shared, client_id: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    row = shared.db.all(select(m.ClientPolicy.__table__).where(m.ClientPolicy.client_id == client_id))[0]
    return dict(row._mapping)


def _set_policy_row(shared, client_id: int, **values: Any) -> None:  # type: ignore[no-untyped-def]
    shared.db.run(update(m.ClientPolicy).where(m.ClientPolicy.client_id == client_id).values(**values))


def _open_holds(shared, secret_id: int) -> list[Any]:  # type: ignore[no-untyped-def]
    return shared.db.all(
        select(m.Checkout.__table__).where(m.Checkout.secret_id == secret_id, m.Checkout.released_at.is_(None))
    )


# -- the policy row --------------------------------------------------------------------------


@pytest.mark.parametrize("warm", [False, True], ids=["general-path", "fast-path"])
def test_switching_off_reason_required_in_the_row_does_not_waive_the_reason(acme, warm):
    shared, _slug, ref, client_id, _alice, mallory = acme
    if warm:  # the checkout's one-statement path is used from the second checkout on
        mallory.checkouts.checkout(ref, reason=REASON, hold=False)
    _set_policy_row(shared, client_id, reason_required=False)
    with pytest.raises(InvalidInput, match="requires a reason"):
        mallory.checkouts.checkout(ref, hold=False)


def test_switching_off_exclusivity_in_the_rows_does_not_let_a_second_engineer_in(acme):
    shared, slug, ref, client_id, alice, mallory = acme
    shared.admin.policies.set(slug, exclusive=True)
    alice.checkouts.checkout(ref, reason=REASON)
    secret_id = shared.db.secret_ids(client_id)[0]
    _set_policy_row(shared, client_id, exclusive=False)
    shared.db.run(update(m.Checkout).where(m.Checkout.secret_id == secret_id).values(exclusive=False))
    with pytest.raises(CheckoutConflict, match="alice"):
        mallory.checkouts.checkout(ref, reason=REASON)
    with pytest.raises(CheckoutConflict):
        mallory.secrets.update(ref, note="mine now")


def test_switching_off_rotate_after_checkout_still_flags_the_password(acme):
    shared, slug, ref, client_id, _alice, mallory = acme
    shared.admin.policies.set(slug, rotate_after_checkout=True)
    _set_policy_row(shared, client_id, rotate_after_checkout=False)
    assert mallory.checkouts.checkout(ref, reason=REASON, hold=False).must_change


def test_a_policy_signed_by_an_engineer_is_not_an_admins(acme):
    from vault.crypto.labels import LABEL_SIG_POLICY
    from vault.service import policies

    shared, _slug, ref, client_id, _alice, mallory = acme
    row = _policy_row(shared, client_id)
    me = shared.db.engineer_id(mallory.engineer_name)
    forged = {**row, "reason_required": False, "signed_by": me}
    with mallory.store.transaction() as s:
        vid = mallory.core.vid(s)
    fields = policies.policy_fields(vid, client_id, _Row(**forged))
    _set_policy_row(
        shared,
        client_id,
        reason_required=False,
        signed_by=me,
        signature=mallory.keyholder.my_signing_key().sign(LABEL_SIG_POLICY, *fields),
    )
    with pytest.raises(InvalidInput, match="requires a reason"):
        mallory.checkouts.checkout(ref, hold=False)
    assert shared.admin.policies.get(_slug).signed is False


def test_an_admins_relaxed_policy_copied_to_another_client_does_not_apply(acme):
    shared, _slug, ref, client_id, _alice, mallory = acme
    lax = shared.client("lax")
    shared.admin.policies.set(lax, reason_required=False)
    lax_row = _policy_row(shared, shared.db.newest_client_id())
    _set_policy_row(
        shared,
        client_id,
        **{k: lax_row[k] for k in ("reason_required", "signed_by", "signed_at", "signature")},
    )
    with pytest.raises(InvalidInput, match="requires a reason"):
        mallory.checkouts.checkout(ref, hold=False)


def test_a_deleted_policy_row_reads_as_the_strict_policy(acme):
    shared, slug, ref, client_id, alice, mallory = acme
    shared.admin.policies.set(slug, exclusive=True)
    shared.db.run(m.ClientPolicy.__table__.delete().where(m.ClientPolicy.client_id == client_id))
    alice.checkouts.checkout(ref, reason=REASON)
    with pytest.raises(CheckoutConflict):
        mallory.checkouts.checkout(ref, reason=REASON)
    info = shared.admin.policies.get(slug)
    assert (info.reason_required, info.exclusive, info.rotate_after_checkout, info.signed) == (True, True, True, False)


def test_an_admin_re_signs_an_unverified_policy_starting_from_the_strict_one(acme):
    shared, slug, ref, client_id, _alice, mallory = acme
    _set_policy_row(shared, client_id, signature=None, reason_required=False)
    info = shared.admin.policies.set(slug, exclusive=False, rotate_after_checkout=False)
    assert (info.reason_required, info.exclusive, info.rotate_after_checkout, info.signed) == (True, False, False, True)
    assert shared.admin.policies.get(slug) == info
    with pytest.raises(InvalidInput, match="requires a reason"):
        mallory.checkouts.checkout(ref, hold=False)
    shared.admin.policies.set(slug, reason_required=False)
    assert mallory.checkouts.checkout(ref, hold=False).value == "pw-1"  # an admin's relaxation applies


def test_a_policy_and_settings_signed_by_a_removed_admin_are_adopted_by_the_remover(acme):
    shared, slug, ref, _client_id, _alice, mallory = acme
    other = shared.engineer("admin", role="admin")
    other.policies.set(slug, reason_required=False)
    other.keys.set_retention(12)
    shared.admin.engineers.remove(other.engineer_name)
    assert shared.admin.policies.get(slug).signed
    with shared.admin.store.transaction() as s:
        assert (shared.admin.policy_check.settings_signed(s), shared.admin.policy_check.retention(s)) == (True, 12)
    shared.admin.keys.set_retention(10)
    mallory.engineers.unlock(mallory.engineer_name, shared.passphrases[mallory.engineer_name])  # keys rotated
    assert mallory.checkouts.checkout(ref, hold=False).value == "pw-1"


class _Row:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


# -- holds -----------------------------------------------------------------------------------


def _plant(shared, secret_id: int, client_id: int, engineer_id: int, event_seq: int, **extra: Any) -> None:  # type: ignore[no-untyped-def]
    now = shared.now
    values = {
        "secret_id": secret_id,
        "client_id": client_id,
        "engineer_id": engineer_id,
        "exclusive": True,
        "event_seq": event_seq,
        "started_at": now,
        "expires_at": now + dt.timedelta(hours=8),
        **extra,
    }
    shared.db.run(insert(m.Checkout).values(**values))


def test_a_planted_exclusive_hold_blocks_nobody(acme):
    shared, _slug, ref, client_id, alice, mallory = acme
    secret_id = shared.db.secret_ids(client_id)[0]
    head = shared.db.scalar(select(m.AuditHead.seq))
    _plant(shared, secret_id, client_id, shared.db.engineer_id(mallory.engineer_name), head)
    _plant(shared, secret_id, client_id, shared.db.engineer_id(alice.engineer_name), 10**9)
    assert alice.checkouts.checkout(ref, reason=REASON).value == "pw-1"
    assert shared.admin.checkouts.checkout(ref, reason=REASON).value == "pw-1"
    assert shared.admin.secrets.update(ref, note="still ours").version == 2


def test_a_hold_made_exclusive_after_a_shared_checkout_blocks_nobody(acme):
    shared, _slug, ref, client_id, alice, mallory = acme
    mallory.checkouts.checkout(ref, reason=REASON)  # the policy is not exclusive: a shared hold
    secret_id = shared.db.secret_ids(client_id)[0]
    far = shared.now + dt.timedelta(days=6)
    shared.db.run(update(m.Checkout).where(m.Checkout.secret_id == secret_id).values(exclusive=True))
    assert alice.checkouts.checkout(ref, reason=REASON).value == "pw-1"
    shared.db.run(update(m.Checkout).where(m.Checkout.secret_id == secret_id).values(expires_at=far))
    assert shared.admin.secrets.update(ref, note="not blocked").version == 2


def test_a_genuine_exclusive_hold_still_blocks_and_its_copy_in_another_name_does_not(acme):
    shared, slug, ref, client_id, alice, mallory = acme
    shared.admin.policies.set(slug, exclusive=True)
    mallory.checkouts.checkout(ref, reason=REASON)
    secret_id = shared.db.secret_ids(client_id)[0]
    hold = _open_holds(shared, secret_id)[0]
    with pytest.raises(CheckoutConflict, match="mallory"):
        alice.checkouts.checkout(ref, reason=REASON)
    mallory.checkouts.checkin(ref)
    # Mallory re-plants her released event's hold in Alice's name, to block Alice's colleague.
    _plant(
        shared,
        secret_id,
        client_id,
        shared.db.engineer_id(alice.engineer_name),
        hold.event_seq,
        expires_at=hold.expires_at,
    )
    assert shared.admin.checkouts.checkout(ref, reason=REASON).value == "pw-1"


def _rehash_in_format_1(shared, start: int, seed: bytes) -> None:  # type: ignore[no-untyped-def]
    """Events from ``start`` re-hashed in format 1 and re-signed with ``seed`` (one signer), as a
    credvault from before format 2 wrote them."""
    vault_id = shared.admin.vault_id()
    with shared.admin.store.transaction() as s:
        prev = s.scalar(select(m.AuditEvent.hash).where(m.AuditEvent.seq == start - 1))
        events = list(s.scalars(select(m.AuditEvent).where(m.AuditEvent.seq >= start).order_by(m.AuditEvent.seq)))
        for e in events:
            fields = (e.at_us, e.engineer_id, e.key_generation, e.action, e.client_id, e.secret_id, e.key_version)
            e.prev_hash = prev
            e.hash = chain.event_hash_v1(vault_id, e.seq, *fields, e.details_blob, e.details_json, prev_hash=prev)
            e.signature = chain.sign_event(seed, vault_id, e.seq, e.hash)
            prev = e.hash
        head = s.get(m.AuditHead, 1)
        assert head is not None
        head.seq, head.hash = events[-1].seq, prev


def test_an_exclusive_hold_taken_before_the_upgrade_to_event_format_2_still_blocks(acme):
    shared, slug, ref, client_id, alice, mallory = acme
    shared.admin.policies.set(slug, exclusive=True)
    mallory.checkouts.checkout(ref, reason=REASON)
    hold = _open_holds(shared, shared.db.secret_ids(client_id)[0])[0]
    _rehash_in_format_1(shared, hold.event_seq, mallory.keyholder.me().signing_seed)  # the checkout is the last event
    with pytest.raises(CheckoutConflict, match="mallory"):
        alice.checkouts.checkout(ref, reason=REASON)
    with pytest.raises(CheckoutConflict, match="mallory"):
        shared.admin.secrets.update(ref, note="blocked")


# -- vault settings ---------------------------------------------------------------------------


def test_retention_zero_in_the_row_does_not_destroy_the_password_just_checked_in(acme):
    shared, _slug, ref, _client_id, _alice, mallory = acme
    shared.db.run(update(m.VaultInfo).values(retention_versions=0))
    try:
        mallory.checkouts.checkout(ref, reason=REASON)
        mallory.checkouts.checkin(ref, new_password="pw-new")
        assert shared.admin.checkouts.reveal(ref, reason=REASON) == "pw-new"
    finally:
        shared.db.run(update(m.VaultInfo).values(retention_versions=10))


def test_an_unsigned_lower_retention_keeps_the_default_number_of_versions(acme):
    shared, _slug, ref, _client_id, _alice, _mallory = acme
    shared.db.run(update(m.VaultInfo).values(retention_versions=1))
    try:
        for n in range(3):
            shared.admin.secrets.update(ref, note=f"v{n}")
        assert [v.version for v in shared.admin.secrets.history(ref)] == [1, 2, 3, 4]
        assert shared.admin.checkouts.reveal(ref, reason=REASON, version=1) == "pw-1"
    finally:
        shared.db.run(update(m.VaultInfo).values(retention_versions=10))


def test_a_signed_retention_applies_and_a_tampered_one_falls_back(team):  # type: ignore[no-untyped-def]
    admin = team.admin
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="p0", kind="equipment")
    admin.keys.set_retention(2)
    for n in range(3):
        admin.secrets.update("acme/fw", note=f"v{n}")
    assert [v.version for v in admin.secrets.history("acme/fw")] == [3, 4]
    with admin.store.transaction() as s:
        s.execute(update(m.VaultInfo).values(retention_versions=1))  # the signature no longer matches
    for n in range(3):
        admin.secrets.update("acme/fw", note=f"w{n}")
    assert [v.version for v in admin.secrets.history("acme/fw")] == [3, 4, 5, 6, 7]  # default 10 applies


def test_a_longer_cryptoperiod_in_the_row_does_not_silence_old_key_warnings(team):  # type: ignore[no-untyped-def]
    admin = team.admin
    admin.keys.set_cryptoperiod(30)
    with admin.store.transaction() as s:
        s.execute(update(m.VaultInfo).values(cryptoperiod_days=3650))
    team.clock.advance(days=400)
    admin.engineers.unlock(admin.engineer_name, team.passphrases[admin.engineer_name])
    warnings = admin.reports.status().warnings
    assert any("older than 365 days" in w for w in warnings)


def test_a_retention_of_1_an_engineer_signed_with_her_own_key_prunes_nothing(team):  # type: ignore[no-untyped-def]
    """Mallory has a certified key and database access: she signs retention 1 herself."""
    admin = team.admin
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="p0", kind="equipment")
    mallory = team.engineer("mallory")
    with admin.store.transaction() as s:
        mallory_id = s.scalars(select(m.Engineer.id).where(m.Engineer.name == "mallory")).one()
    vault_id = admin.core.vault_id()
    forged = signed_settings(mallory.keys.keys.my_signing_key().sign, vault_id, 1, 3650, mallory_id, 1_700_000_000)
    with admin.store.transaction() as s:
        s.execute(
            update(m.VaultInfo).values(
                retention_versions=1,
                cryptoperiod_days=3650,
                settings_signed_by=mallory_id,
                settings_signed_at=forged.signed_at,
                settings_signature=forged.signature,
            )
        )
    for n in range(3):
        admin.secrets.update("acme/fw", note=f"v{n}")
    assert [v.version for v in admin.secrets.history("acme/fw")] == [1, 2, 3, 4]
    assert any("the vault settings do not verify, so 10 versions" in w for w in admin.reports.status().warnings)


def test_a_century_long_cryptoperiod_written_in_the_row_still_warns_after_365_days(team):  # type: ignore[no-untyped-def]
    admin = team.admin
    with admin.store.transaction() as s:
        s.execute(update(m.VaultInfo).values(cryptoperiod_days=36500))
    team.clock.advance(days=400)
    admin.engineers.unlock(admin.engineer_name, team.passphrases[admin.engineer_name])
    assert any("older than 365 days" in w for w in admin.reports.status().warnings)


def test_an_admins_retention_change_does_not_sign_a_cryptoperiod_a_dba_raised(team):  # type: ignore[no-untyped-def]
    admin = team.admin
    admin.keys.set_cryptoperiod(30)
    with admin.store.transaction() as s:
        s.execute(update(m.VaultInfo).values(cryptoperiod_days=3650))  # no longer verifies
    admin.keys.set_retention(5)  # signs the cryptoperiod as it applies: 30 falls back to the default
    with admin.store.read() as s:
        info = s.get(m.VaultInfo, 1)
        assert (info.retention_versions, info.cryptoperiod_days) == (5, 365)
        assert admin.policy_check.settings(s) == (5, 365, True)


def test_settings_out_of_range_are_refused_by_the_setters(team):  # type: ignore[no-untyped-def]
    for bad in (0, -1, 1001):
        with pytest.raises(InvalidInput):
            team.admin.keys.set_retention(bad)
    for bad in (0, 3651):
        with pytest.raises(InvalidInput):
            team.admin.keys.set_cryptoperiod(bad)


def test_no_hold_no_policy_row_needed_for_an_old_client(acme):
    """A client whose policy row was lost reads as strict, but still works."""
    shared, _slug, ref, client_id, _alice, mallory = acme
    shared.db.run(m.ClientPolicy.__table__.delete().where(m.ClientPolicy.client_id == client_id))
    with pytest.raises(NotFound):
        mallory.checkouts.checkin(ref)
    revealed = mallory.checkouts.checkout(ref, reason=REASON)
    assert revealed.value == "pw-1" and revealed.must_change


def test_status_names_a_policy_and_settings_that_do_not_verify(acme):
    shared, slug, _ref, client_id, _alice, _mallory = acme
    assert not any(slug in w for w in shared.admin.reports.status().warnings)
    _set_policy_row(shared, client_id, exclusive=True)
    shared.db.run(update(m.VaultInfo).values(retention_versions=2))
    try:
        warnings = shared.admin.reports.status().warnings
        assert any(f"client {slug}: its policy does not verify" in w for w in warnings)
        assert any("the vault settings do not verify, so 10 versions are kept" in w for w in warnings)
    finally:
        shared.db.run(update(m.VaultInfo).values(retention_versions=10))
    shared.admin.policies.set(slug, exclusive=False, rotate_after_checkout=False)
    assert not any(slug in w for w in shared.admin.reports.status().warnings)
