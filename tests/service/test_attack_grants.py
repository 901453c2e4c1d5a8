"""Issue 12, items 4 and 7: grants and offboarding against a writer of the database.

The attacker is an engineer (or a DBA) who writes the ``grants`` table directly: they
clear a revocation, revive a superseded grant, delete the newer grant or their own rows,
backdate their revocation, or plant one bad row. An honest admin then runs the public
API (``rotate client``, ``engineer remove``, the sweep); the attack must not get a key
sealed to a revoked engineer, must not hide a client from the rotation at removal, and
one bad row must not stop either operation.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import delete, func, insert, select, update

from vault import Vault
from vault.errors import IntegrityError, NotFound, VaultError
from vault.storage import models as m

REASON = "T-12 grant attack"
# Every column a revocation may live in (the ones this version of the schema has).
REVOCATION_COLUMNS = [c for c in ("revoked_at", "revoked_by", "revocation") if hasattr(m.Grant, c)]


def _id(db, name: str) -> int:  # type: ignore[no-untyped-def]
    return db.engineer_id(name)


def _client_id(team, slug: str) -> int:  # type: ignore[no-untyped-def]
    with team.admin.store.transaction() as s:
        return int(team.admin.clients.client(s, slug).id)


def _seals(db, engineer_id: int, client_id: int, version: int | None = None) -> int:  # type: ignore[no-untyped-def]
    where = [
        m.ClientKeySeal.recipient_kind == "engineer",
        m.ClientKeySeal.recipient_id == engineer_id,
        m.ClientKeySeal.client_id == client_id,
    ]
    if version is not None:
        where.append(m.ClientKeySeal.version == version)
    return int(db.scalar(select(func.count()).select_from(m.ClientKeySeal).where(*where)))


def _unrevoke(db, *where) -> None:  # type: ignore[no-untyped-def]
    """What a database writer does to undo a revocation: clear every column that records it."""
    db.run(update(m.Grant).where(*where).values(**{c: None for c in REVOCATION_COLUMNS}))


def _current_version(team, slug: str) -> int:  # type: ignore[no-untyped-def]
    return max(v for v, state in team.admin.keys.versions(slug) if state == "active")


def _cannot_read(vault: Vault, ref: str) -> None:
    with pytest.raises(VaultError):
        vault.checkouts.reveal(ref, reason=REASON)


@pytest.fixture
def acme(team):  # type: ignore[no-untyped-def]
    team.admin.clients.add("acme", "Acme")
    team.admin.secrets.add("acme/fw01", password="acme-pw")
    return team


# -- item 4: revocation and supersession ------------------------------------------------------------


def test_a_revocation_cleared_in_the_database_gets_no_key_at_the_next_rotation(acme, db):
    team = acme
    alice = team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    assert alice.checkouts.reveal("acme/fw01", reason=REASON) == "acme-pw"
    team.admin.grants.revoke("alice", "acme")
    alice_id, client_id = _id(db, "alice"), _client_id(team, "acme")

    _unrevoke(db, m.Grant.engineer_id == alice_id)  # the attack
    team.admin.keys.rotate_client("acme")

    assert _seals(db, alice_id, client_id) == 0  # the new key was not sealed to her
    _cannot_read(team.open("alice"), "acme/fw01")
    fresh = team.open("alice")
    fresh.engineers.unlock("alice", team.passphrases["alice"])
    _cannot_read(fresh, "acme/fw01")
    assert "active" not in {g.state for g in team.admin.grants.list(engineer="alice")}


def test_a_superseded_grant_is_not_revived_after_the_newer_one_expires(acme, db):
    team = acme
    alice = team.engineer("alice")
    team.admin.grants.grant("alice", "acme")  # open-ended
    team.admin.grants.grant("alice", "acme", until=team.clock() + dt.timedelta(minutes=5))  # replaces it
    alice_id, client_id = _id(db, "alice"), _client_id(team, "acme")
    first = db.scalar(select(func.min(m.Grant.id)).where(m.Grant.engineer_id == alice_id))
    team.clock.advance(minutes=6)

    _unrevoke(db, m.Grant.id == first)  # the attack: the open-ended grant is back
    with pytest.raises(VaultError):
        alice.checkouts.reveal("acme/fw01", reason=REASON)
    team.admin.keys.rotate_client("acme")
    assert _seals(db, alice_id, client_id, _current_version(team, "acme")) == 0
    _cannot_read(alice, "acme/fw01")
    assert "active" not in {g.state for g in team.admin.grants.list(engineer="alice")}


def test_deleting_the_newer_grant_does_not_revive_the_older_one_at_rotation(acme, db):
    team = acme
    alice = team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    team.admin.grants.grant("alice", "acme", until=team.clock() + dt.timedelta(minutes=5))
    alice_id, client_id = _id(db, "alice"), _client_id(team, "acme")
    first, second = sorted(db.all(select(m.Grant.id).where(m.Grant.engineer_id == alice_id)))
    team.clock.advance(minutes=6)
    team.admin.grants.maintain()  # the sweep: the expired grant's key copies go

    db.run(delete(m.Grant).where(m.Grant.id == second[0]))  # the attack: the newer entry is gone
    _unrevoke(db, m.Grant.id == first[0])  # and the older one un-revoked
    team.admin.keys.rotate_client("acme")

    assert _seals(db, alice_id, client_id) == 0
    _cannot_read(alice, "acme/fw01")


def test_deleting_the_revoked_grant_and_planting_a_copy_of_an_old_one_gets_no_key(acme, db):
    """A grant row copied back from an old snapshot (validly signed, unrevoked) after revocation."""
    team = acme
    team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    alice_id, client_id = _id(db, "alice"), _client_id(team, "acme")
    snapshot = db.all(select(*m.Grant.__table__.columns).where(m.Grant.engineer_id == alice_id))
    assert len(snapshot) == 1
    saved = dict(snapshot[0]._mapping)
    team.admin.grants.revoke("alice", "acme")

    db.run(delete(m.Grant).where(m.Grant.engineer_id == alice_id))
    db.run(insert(m.Grant).values(**saved))  # the attack: the pre-revocation row is back
    team.admin.keys.rotate_client("acme")

    assert _seals(db, alice_id, client_id) == 0


# -- item 7: exposure at removal comes from signed history ---------------------------------------------


def test_a_leaver_who_deletes_his_grant_rows_still_has_his_clients_rotated(acme, db):
    team = acme
    team.admin.clients.add("globex", "Globex")
    leaver = team.engineer("leaver")
    team.admin.grants.grant("leaver", "acme")
    team.admin.grants.grant("leaver", "globex")
    assert leaver.checkouts.reveal("acme/fw01", reason=REASON) == "acme-pw"
    leaver_id = _id(db, "leaver")

    db.run(delete(m.Grant).where(m.Grant.engineer_id == leaver_id))  # the attack
    _, rotations = team.admin.engineers.remove("leaver")

    assert sorted(r.client for r in rotations) == ["acme", "globex"]
    assert _current_version(team, "acme") == 2 and _current_version(team, "globex") == 2
    assert [(r.client, r.secret) for r in team.admin.reports.at_risk("leaver")] == [("acme", "fw01")]


def test_a_leaver_who_backdates_his_revocation_still_has_the_client_rotated(acme, db):
    team = acme
    team.engineer("leaver")
    team.admin.grants.grant("leaver", "acme")
    leaver_id = _id(db, "leaver")
    team.clock.advance(minutes=6)
    long_ago = team.clock() - dt.timedelta(days=3650)

    db.run(update(m.Grant).where(m.Grant.engineer_id == leaver_id).values(revoked_at=long_ago))  # the attack
    _, rotations = team.admin.engineers.remove("leaver")

    assert [r.client for r in rotations] == ["acme"]


def test_a_client_rotated_after_the_revocation_is_not_rotated_again_at_removal(acme):
    """The audit log proves the leaver's access ended before the current key: no rotation needed."""
    team = acme
    team.admin.clients.add("globex", "Globex")
    team.engineer("leaver")
    team.admin.grants.grant("leaver", "acme")
    team.admin.grants.grant("leaver", "globex")
    team.admin.grants.revoke("leaver", "acme")
    team.admin.keys.rotate_client("acme")

    _, rotations = team.admin.engineers.remove("leaver")

    assert [r.client for r in rotations] == ["globex"]


def test_one_bad_grant_row_does_not_block_rotate_client_and_loses_its_seals(acme, db):
    team = acme
    alice, bob = team.engineer("alice"), team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    team.admin.grants.grant("bob", "acme")
    assert bob.checkouts.reveal("acme/fw01", reason=REASON) == "acme-pw"
    alice_id, bob_id, client_id = _id(db, "alice"), _id(db, "bob"), _client_id(team, "acme")

    db.run(update(m.Grant).where(m.Grant.engineer_id == bob_id).values(until=None, signature=b"\0" * 64))  # bad row
    info = team.admin.keys.rotate_client("acme")

    assert info.state == "done" and _current_version(team, "acme") == 2
    assert _seals(db, alice_id, client_id, 2) == 1  # the good grantee got the new key
    assert _seals(db, bob_id, client_id) == 0  # the bad row's copies are gone
    assert alice.checkouts.reveal("acme/fw01", reason=REASON) == "acme-pw"
    refused = [e for e in team.admin.audit.log(client="acme") if e.action == "grant-refused"]
    assert refused and refused[-1].details is not None and refused[-1].details.get("engineer") == "bob"


def test_one_bad_grant_row_does_not_block_engineer_remove(acme, db):
    team = acme
    team.engineer("alice")
    team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    team.admin.grants.grant("bob", "acme")
    bob_id = _id(db, "bob")
    db.run(update(m.Grant).where(m.Grant.engineer_id == bob_id).values(signature=b"\0" * 64))

    _, rotations = team.admin.engineers.remove("alice")  # another engineer's bad row
    assert [r.client for r in rotations] == ["acme"]
    _, rotations = team.admin.engineers.remove("bob")  # the bad row is the leaver's own
    assert [r.client for r in rotations] == ["acme"]
    assert _current_version(team, "acme") == 3


def test_a_leaver_who_deletes_his_reveal_events_makes_the_at_risk_report_fail_loudly(acme, db):
    team = acme
    leaver = team.engineer("leaver")
    team.admin.grants.grant("leaver", "acme")
    leaver.checkouts.reveal("acme/fw01", reason=REASON)
    team.admin.secrets.add("acme/other", password="x")  # an event after the reveal
    leaver_id = _id(db, "leaver")

    reveals = m.AuditEvent.action.in_(["reveal", "checkout"])
    db.run(delete(m.AuditEvent).where(m.AuditEvent.engineer_id == leaver_id, reveals))
    with pytest.raises(IntegrityError):
        team.admin.reports.at_risk("leaver")
    with pytest.raises(IntegrityError):
        team.admin.engineers.remove("leaver")  # the removal itself is done, the report refuses
    assert _current_version(team, "acme") == 2
    assert "disabled" in {e.status for e in team.admin.engineers.list() if e.name == "leaver"}


# -- rows from before the ledger (revision 0006) ---------------------------------------------------


def _as_before_the_ledger(team) -> None:  # type: ignore[no-untyped-def]
    """Take the vault back to revision 0006 (the ledger's columns go) and sign every grant
    the way that version did, as an admin of that time would have."""
    import sqlalchemy as sa
    from alembic import command

    from vault.crypto.labels import LABEL_SIG_GRANT
    from vault.storage import engine as storage

    command.downgrade(storage._alembic_config(team.admin.store.engine), "0006")
    grants = sa.table(
        "grants", *(sa.column(c) for c in ("id", "engineer_id", "client_id", "signed_at", "until", "signature"))
    )
    engineers = sa.table("engineers", sa.column("id"), sa.column("sealing_public"))
    key, vault_id = team.admin.keyholder.my_signing_key(), team.admin.vault_id()
    with team.admin.store.engine.begin() as conn:
        for g in conn.execute(sa.select(grants)).all():
            public = conn.execute(sa.select(engineers.c.sealing_public).where(engineers.c.id == g.engineer_id)).scalar()
            fields = (vault_id, g.id, g.engineer_id, public, g.client_id, g.signed_at, g.until or 0)
            conn.execute(
                sa.update(grants).where(grants.c.id == g.id).values(signature=key.sign(LABEL_SIG_GRANT, *fields))
            )
    command.upgrade(storage._alembic_config(team.admin.store.engine), "head")


def test_grants_from_before_the_ledger_keep_working_and_old_revocations_stay(acme, db):
    team = acme
    alice, bob = team.engineer("alice"), team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    team.admin.grants.grant("bob", "acme")
    team.admin.grants.revoke("bob", "acme")
    _as_before_the_ledger(team)
    assert db.scalar(select(func.count()).select_from(m.Grant).where(m.Grant.seq.is_not(None))) == 0
    alice_id, bob_id, client_id = _id(db, "alice"), _id(db, "bob"), _client_id(team, "acme")

    assert alice.checkouts.reveal("acme/fw01", reason=REASON) == "acme-pw"  # an old live grant still works
    _cannot_read(bob, "acme/fw01")  # an old revocation (no signature) still holds
    assert {(g.engineer, g.state) for g in team.admin.grants.list()} == {("alice", "active"), ("bob", "revoked")}

    _unrevoke(db, m.Grant.engineer_id == bob_id)  # the attack on an old row
    team.admin.keys.rotate_client("acme")
    assert _seals(db, alice_id, client_id, 2) == 1 and _seals(db, bob_id, client_id) == 0
    assert alice.checkouts.reveal("acme/fw01", reason=REASON) == "acme-pw"

    team.admin.grants.grant("alice", "acme", until=team.clock() + dt.timedelta(minutes=5))  # a ledger entry replaces it
    states = sorted((g.state, g.until is None) for g in team.admin.grants.list(engineer="alice"))
    assert states == [("active", False), ("revoked", True)]
    team.clock.advance(minutes=6)
    _unrevoke(db, m.Grant.engineer_id == alice_id, m.Grant.seq.is_(None))  # revive the old open-ended one
    with pytest.raises(VaultError):
        alice.checkouts.reveal("acme/fw01", reason=REASON)


def test_only_audited_live_heads_are_offered_for_carrying_over_to_new_keys(acme, db):
    """``_grants_to_carry`` is what ``engineer confirm`` re-seals after ``rotate engineer``
    (issue 12, item 1 calls it): a cleared revocation and a deleted newer grant carry nothing."""
    team = acme
    team.admin.clients.add("globex", "Globex")
    team.admin.clients.add("initech", "Initech")
    team.engineer("alice")
    for slug in ("acme", "globex", "initech"):
        team.admin.grants.grant("alice", slug)
    team.admin.grants.revoke("alice", "acme")
    team.admin.grants.grant("alice", "initech", until=team.clock() + dt.timedelta(minutes=5))
    alice_id = _id(db, "alice")
    acme_id, globex_id, initech_id = (_client_id(team, c) for c in ("acme", "globex", "initech"))
    newest = db.scalar(select(func.max(m.Grant.id)).where(m.Grant.client_id == initech_id))
    team.clock.advance(minutes=6)

    _unrevoke(db, m.Grant.engineer_id == alice_id)  # the attacks: every revocation cleared,
    db.run(delete(m.Grant).where(m.Grant.id == newest))  # and the newer initech grant deleted
    with team.admin.store.transaction() as s:
        row = s.get(m.Engineer, alice_id)
        carried, refused = team.admin.ledger.grants_to_carry(s, row)
        carried_clients = sorted(g.client_id for g in carried)
        refused_clients = sorted(g.client_id for g, _ in refused)

    assert carried_clients == [globex_id]
    assert refused_clients == sorted([acme_id, initech_id])


def test_removal_with_an_audit_log_that_does_not_verify_rotates_every_client(acme, db):
    """When the signed history cannot be trusted, exposure cannot be worked out: rotate all."""
    team = acme
    team.admin.clients.add("globex", "Globex")
    team.engineer("leaver")
    team.admin.grants.grant("leaver", "acme")
    first_event = db.scalar(select(func.min(m.AuditEvent.seq)).where(m.AuditEvent.action == "client-create"))
    db.run(update(m.AuditEvent).where(m.AuditEvent.seq == first_event).values(at_us=1))  # any event altered

    with pytest.raises(IntegrityError, match="removed"):
        team.admin.engineers.remove("leaver")

    assert _current_version(team, "acme") == 2 and _current_version(team, "globex") == 2
    assert {e.name: e.status for e in team.admin.engineers.list()}["leaver"] == "disabled"


def test_a_grant_revoked_by_an_admin_who_left_stays_plainly_revoked(acme, db):
    team = acme
    alice, other = team.engineer("alice"), team.engineer("other-admin", role="admin")
    other.grants.grant("alice", "acme")
    assert alice.checkouts.reveal("acme/fw01", reason=REASON) == "acme-pw"
    other.grants.revoke("alice", "acme")
    team.admin.engineers.remove("other-admin")

    with pytest.raises(NotFound):
        alice.checkouts.reveal("acme/fw01", reason=REASON)
    assert [g.state for g in team.admin.grants.list(engineer="alice")] == ["revoked"]
    team.admin.grants.grant("alice", "acme")
    assert alice.checkouts.reveal("acme/fw01", reason=REASON) == "acme-pw"


def test_a_grant_event_signed_by_a_removed_admin_after_removal_is_not_the_logs_last_word(acme, db):
    """The grant-history check (``rotate client``, confirmation, removal) reads the log's
    signatures with the keys' certified lifetimes: a removed admin who kept his signing key
    and writes the database appends a ``grant`` event after his removal, correctly linked,
    hashed and signed; it must count as a doubt, not as an admin's word."""
    team = acme
    carol = team.engineer("carol", role="admin")
    carol_seed, carol_id = carol.keyholder.me().signing_seed, _id(db, "carol")
    team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    team.admin.grants.revoke("alice", "acme")
    team.admin.engineers.remove("carol")
    acme_id = _client_id(team, "acme")
    with team.admin.store.transaction() as s:  # the attack: a forged grant event at the tail
        head = s.get(m.AuditHead, 1)
        carol_row = s.get(m.Engineer, carol_id)
        values = team.admin.journal._event_values(
            team.admin.core.vid(s),
            head.seq + 1,
            head.hash,
            "grant",
            carol_row,
            acme_id,
            None,
            {"engineer": "alice", "until": None, "grant": None},
            team.admin.journal.audit_keys.current_audit_key(s, s.get(m.Client, acme_id)),
            None,
            carol_seed,
            s.get(m.AuditEvent, head.seq).at_us,
        )
        s.add(m.AuditEvent(**values))
        head.seq, head.hash = values["seq"], values["hash"]
    assert not team.admin.audit.verify().ok  # the full verification refuses it

    with team.admin.store.transaction() as s:
        history = team.admin.ledger.grant_history(s, [acme_id])
    last = history.last("alice", acme_id)
    assert last is not None and last.action == "revoke"
    assert history.doubted_after(acme_id, last.seq)


def test_a_revocation_cleared_with_its_audit_event_deleted_gets_no_key_at_the_next_rotation(acme, db):
    """The writer clears the revocation and deletes its ``revoke`` event from the middle of the
    log: the grant event is then the last word the log still holds. The gap in the chain's
    sequence numbers is a doubt: ``rotate client`` seals nothing to her."""
    team = acme
    team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    team.admin.grants.revoke("alice", "acme")
    team.admin.clients.list()  # an event after the revocation: it is not the head
    alice_id, client_id = _id(db, "alice"), _client_id(team, "acme")
    revoke_seq = db.scalar(select(func.max(m.AuditEvent.seq)).where(m.AuditEvent.action == "revoke"))

    _unrevoke(db, m.Grant.engineer_id == alice_id)  # the attack
    db.run(delete(m.AuditEvent).where(m.AuditEvent.seq == revoke_seq))
    team.admin.keys.rotate_client("acme")

    assert _seals(db, alice_id, client_id) == 0  # the new key was not sealed to her
    assert "active" not in {g.state for g in team.admin.grants.list(engineer="alice")}


def test_an_end_forged_in_the_database_gets_no_signed_revocation_from_the_sweep(acme, db):
    """The DBA moves alice's open-ended grant's end into the past and waits for an admin's
    sweep (``grants.maintain``, or the one before ``clients.add``): the admin's keyholder
    verifies the grant (its signature covers the end) before it signs a revocation, so no
    revocation in the admin's name is recorded for a grant that never ended."""
    team = acme
    team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    alice_id = _id(db, "alice")
    db.run(update(m.Grant).where(m.Grant.engineer_id == alice_id).values(until=int(team.clock().timestamp()) - 60))
    team.admin.grants.maintain()
    team.admin.clients.add("globex", "Globex")  # the sweep before an admin's operation, too
    columns = (m.Grant.revoked_at, m.Grant.revoked_by, m.Grant.revocation)
    (row,) = db.all(select(*columns).where(m.Grant.engineer_id == alice_id))
    assert tuple(row) == (None, None, None)
    assert "active" not in {g.state for g in team.admin.grants.list(engineer="alice")}


def test_public_details_count_only_for_a_client_key_rotation_through_the_server() -> None:
    """A rotation through the server keeps its details public (format 3: a request id, the details
    covered by the event's hash and the server key's signature): they count. A grant or revoke
    event's details are always sealed, so public ones on such an event (or on a rotation event that
    is not format 3) are a doubt about the client, never a word of the ledger."""
    from vault.service.grantledger import GrantHistory, public_rotation

    request_id = bytes(16)
    assert public_rotation("client-key-rotate", request_id, '{"to_version": 2}') == {"to_version": 2}
    assert public_rotation("client-key-rotate", None, '{"to_version": 2}') is None  # not format 3
    assert public_rotation("client-key-rotate", request_id, "[2]") is None
    forged = public_rotation("grant", request_id, '{"engineer": "bob", "grant": 1}')
    assert forged is None
    history = GrantHistory()
    history.add(5, 0, 1, "grant", True, forged)
    history.add(
        6, 0, 1, "client-key-rotate", True, public_rotation("client-key-rotate", request_id, '{"to_version": 3}')
    )
    assert history.doubts == {1: [5]} and history.words == {} and history.rotations == {1: {3: (6, 0)}}
