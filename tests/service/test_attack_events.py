"""Issue 12, item 11: audit events a database writer forges must not verify.

The insider holds a certified key (or an old one they kept: a destroyed generation, the key
of a removed engineer) and writes rows straight into ``audit_events``: an event at the tail
of the chain, correctly linked, hashed in the current format and signed with the key they
hold. ``audit verify --full`` (``Vault.verify_audit``) must refuse each forgery and name its
sequence number. Every test runs on SQLite and PostgreSQL (the ``team`` fixture).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from vault.crypto import chain
from vault.errors import ConcurrentChange
from vault.keyholder import auditverify as verify_module
from vault.storage import models as m


def _engineer_id(team, name: str) -> int:  # type: ignore[no-untyped-def]
    with team.admin.store.transaction() as s:
        return int(s.scalar(select(m.Engineer.id).where(m.Engineer.name == name)))


def _forge(  # type: ignore[no-untyped-def]
    team,
    action: str,
    *,
    engineer_id: int | None,
    key_generation: int,
    seed: bytes | None = None,
    public: dict[str, Any] | None = None,
    at_us: int | None = None,
    legacy: bool = False,
) -> int:
    """Append one event at the tail, linked and hashed as the writer would; signed with ``seed``."""
    vault_id = team.admin.vault_id()
    hash_of = getattr(chain, "event_hash_v1") if legacy else chain.event_hash
    with team.admin.store.transaction() as s:
        head = s.get(m.AuditHead, 1)
        assert head is not None
        last = s.get(m.AuditEvent, head.seq)
        assert last is not None
        seq, at = head.seq + 1, last.at_us if at_us is None else at_us
        details_json = json.dumps(public, sort_keys=True) if public else None
        fields = (at, engineer_id, key_generation, action, None, None, None, None, details_json)
        digest = hash_of(vault_id, seq, *fields, prev_hash=head.hash)
        s.add(
            m.AuditEvent(
                seq=seq,
                at_us=at,
                engineer_id=engineer_id,
                key_generation=key_generation,
                action=action,
                client_id=None,
                secret_id=None,
                key_version=None,
                details_blob=None,
                details_json=details_json,
                prev_hash=head.hash,
                hash=digest,
                signature=chain.sign_event(seed, vault_id, seq, digest) if seed is not None else None,
            )
        )
        head.seq, head.hash = seq, digest
    return seq


def _refused_at(team, seq: int) -> str:  # type: ignore[no-untyped-def]
    result = team.admin.audit.verify()
    assert not result.ok, "the forged event verified"
    assert result.first_bad_seq == seq, result.problem
    assert result.problem is not None and result.problem.startswith(f"event {seq}:")
    return result.problem


# -- keys outside their certified lifetime -------------------------------------------------------


def test_event_signed_by_a_destroyed_key_after_its_destruction_is_refused(team):
    alice = team.engineer("alice")
    old_seed = alice.keyholder.me().signing_seed  # what a departing engineer keeps
    alice_id = _engineer_id(team, "alice")
    team.admin.engineers.rotate("alice")  # destroys generation 1
    assert team.admin.audit.verify().ok
    seq = _forge(team, "client-list", engineer_id=alice_id, key_generation=1, seed=old_seed, public={"count": 0})
    assert "lifetime" in _refused_at(team, seq)


def test_event_signed_by_a_removed_engineer_after_removal_is_refused(team):
    alice = team.engineer("alice")
    old_seed = alice.keyholder.me().signing_seed
    alice_id = _engineer_id(team, "alice")
    team.admin.engineers.remove("alice")
    assert team.admin.audit.verify().ok
    seq = _forge(team, "client-list", engineer_id=alice_id, key_generation=1, seed=old_seed, public={"count": 0})
    assert "lifetime" in _refused_at(team, seq)


def test_key_certification_signed_by_a_non_admin_is_refused(team):
    """A lifetime starts only at a confirmation signed by an admin the chain itself made admin:
    otherwise an engineer could re-open a destroyed generation by appending an "engineer-confirm"."""
    alice = team.engineer("alice")
    bob = team.engineer("bob")
    bob_id = _engineer_id(team, "bob")
    # bob (a plain engineer) certifies in the chain a generation of his own that no admin confirmed
    seq = _forge(
        team,
        "engineer-confirm",
        engineer_id=bob_id,
        key_generation=1,
        seed=bob.keyholder.me().signing_seed,
        public={"engineer": "alice", "key_generation": 1, "role": "admin"},
    )
    assert alice is not None
    assert "admin" in _refused_at(team, seq)


# -- time goes forward ------------------------------------------------------------------------------


def test_key_certification_signed_by_a_non_admin_is_refused_as_the_anchor_of_an_incremental_verify(team):
    """A machine that last verified with the code before key lifetimes remembered such an
    event as verified: the incremental verify re-checks its anchor by today's rules, the
    problems of the key-event pass included (before the fix: only hash, link and signature)."""
    team.engineer("alice")
    bob = team.engineer("bob")
    seq = _forge(
        team,
        "engineer-confirm",
        engineer_id=_engineer_id(team, "bob"),
        key_generation=1,
        seed=bob.keyholder.me().signing_seed,
        public={"engineer": "alice", "key_generation": 1, "role": "admin"},
    )
    since = team.admin.audit.head()
    assert since[0] == seq
    team.admin.clients.list()
    result = team.admin.audit.verify(since=since)
    assert (result.ok, result.first_bad_seq) == (False, seq), result.problem
    assert result.problem is not None and "admin" in result.problem and "(the anchor)" in result.problem


def test_backdated_event_is_refused(team):
    alice = team.engineer("alice")
    alice.clients.list()
    with team.admin.store.transaction() as s:
        last_at = s.scalar(select(m.AuditEvent.at_us).order_by(m.AuditEvent.seq.desc()).limit(1))
    seq = _forge(
        team,
        "client-list",
        engineer_id=_engineer_id(team, "alice"),
        key_generation=1,
        seed=alice.keyholder.me().signing_seed,
        public={"count": 0},
        at_us=last_at - 86_400_000_000,  # a day before its predecessor
    )
    assert "before" in _refused_at(team, seq)


def test_events_written_while_the_clock_goes_back_still_verify(team):
    """An honest writer whose clock is behind the last event's never makes a backdated event."""
    alice = team.engineer("alice")
    alice.clients.list()
    team.clock.advance(hours=-2)
    alice.clients.list()
    team.admin.clients.list()
    assert team.admin.audit.verify().ok


# -- unsigned kinds -------------------------------------------------------------------------------------


def test_unsigned_enroll_in_another_engineers_name_is_refused(team):
    team.engineer("alice")
    alice_id = _engineer_id(team, "alice")
    seq = _forge(team, "enroll", engineer_id=alice_id, key_generation=2, public={"engineer": "alice"})
    _refused_at(team, seq)


def test_unsigned_enroll_in_the_old_format_after_new_events_is_refused(team):
    team.engineer("alice")
    alice_id = _engineer_id(team, "alice")
    seq = _forge(team, "enroll", engineer_id=alice_id, key_generation=2, public={"engineer": "alice"}, legacy=True)
    assert "format" in _refused_at(team, seq)


def test_enroll_is_signed_by_the_new_key_and_verifies(team):
    team.engineer("alice")
    alice_id = _engineer_id(team, "alice")
    with team.admin.store.transaction() as s:
        enroll = s.scalars(select(m.AuditEvent).where(m.AuditEvent.action == "enroll")).one()
        assert enroll.signature is not None
        assert enroll.engineer_id == alice_id and enroll.key_generation == 1
    assert team.admin.audit.verify().ok


def test_unsigned_unlock_failed_cannot_frame_an_engineer_silently(team):
    team.engineer("alice")
    alice_id = _engineer_id(team, "alice")
    seq = _forge(team, "unlock-failed", engineer_id=alice_id, key_generation=1, public={"engineer": "alice"})
    entry = next(e for e in team.admin.audit.log() if e.seq == seq)
    assert entry.details is not None and entry.details.get("unauthenticated") is True
    signed = [e for e in team.admin.audit.log() if e.action == "unlock"]
    assert signed and all("unauthenticated" not in (e.details or {}) for e in signed)


# -- the encoding of empty values ----------------------------------------------------------------------


def test_null_and_empty_details_do_not_collide(team):
    team.admin.engineers.list()  # an event without public details: details_json is NULL
    with team.admin.store.transaction() as s:
        seq = s.scalar(
            select(m.AuditEvent.seq).where(m.AuditEvent.action == "engineer-list").order_by(m.AuditEvent.seq.desc())
        )
        assert s.scalar(select(m.AuditEvent.details_json).where(m.AuditEvent.seq == seq)) is None
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == seq).values(details_json=""))
    _refused_at(team, seq)


def test_null_and_empty_blob_do_not_collide(team):
    team.admin.engineers.list()
    with team.admin.store.transaction() as s:
        seq = s.scalar(
            select(m.AuditEvent.seq).where(m.AuditEvent.action == "engineer-list").order_by(m.AuditEvent.seq.desc())
        )
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == seq).values(details_blob=b""))
    _refused_at(team, seq)


# -- old events still verify; ranges checked in parallel agree ------------------------------------------


def _rewrite(team, start: int, seeds: dict[int, bytes], *, legacy: bool = False, edit=None) -> None:  # type: ignore[no-untyped-def]
    """Re-hash (format 1 or 2) and re-sign every event from ``start`` with its signer's seed, as an
    honest writer of that format would have written them (format 1 left ``enroll`` unsigned)."""
    vault_id = team.admin.vault_id()
    hash_of = chain.event_hash_v1 if legacy else chain.event_hash
    with team.admin.store.transaction() as s:
        prev = s.scalar(select(m.AuditEvent.hash).where(m.AuditEvent.seq == start - 1)) if start > 1 else chain.GENESIS
        rows = list(s.scalars(select(m.AuditEvent).where(m.AuditEvent.seq >= start).order_by(m.AuditEvent.seq)))
        for e in rows:
            if edit is not None:
                edit(e)
            if legacy and e.action == "enroll":
                e.details_json, e.signature = json.dumps({"engineer": json.loads(e.details_json)["engineer"]}), None
            fields = (e.at_us, e.engineer_id, e.key_generation, e.action, e.client_id, e.secret_id, e.key_version)
            e.prev_hash, e.hash = (
                prev,
                hash_of(vault_id, e.seq, *fields, e.details_blob, e.details_json, prev_hash=prev),
            )
            if e.signature is not None:
                e.signature = chain.sign_event(seeds[e.engineer_id], vault_id, e.seq, e.hash)
            prev = e.hash
        head = s.get(m.AuditHead, 1)
        assert head is not None
        head.seq, head.hash = rows[-1].seq, prev


def _seeds(team, *vaults) -> dict[int, bytes]:  # type: ignore[no-untyped-def]
    return {v.keyholder.me().engineer_id: v.keyholder.me().signing_seed for v in (team.admin, *vaults)}


def test_a_chain_written_in_the_old_format_still_verifies_and_new_events_follow_it(team):
    alice = team.engineer("alice")
    alice.clients.list()
    team.admin.engineers.list()
    seeds = _seeds(team, alice)
    _rewrite(team, 1, seeds, legacy=True)  # as written before format 2: enroll unsigned
    assert team.admin.audit.verify().ok
    entry = next(e for e in team.admin.audit.log() if e.action == "enroll")
    assert entry.details is not None and entry.details["unauthenticated"] is True
    alice.clients.list()  # the first format-2 event, after format-1 ones
    assert team.admin.audit.verify().ok
    assert team.admin.audit.verify(workers=2).ok


def test_an_old_format_event_with_an_empty_value_where_null_was_stored_is_refused(team):
    team.admin.engineers.list()
    _rewrite(team, 1, _seeds(team), legacy=True)
    with team.admin.store.transaction() as s:
        seq = s.scalar(select(m.AuditEvent.seq).where(m.AuditEvent.action == "engineer-list"))
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == seq).values(details_json=""))
    assert team.admin.audit.verify().ok is False
    _refused_at(team, seq)


class _CountingPool(verify_module.ProcessPoolExecutor):  # type: ignore[misc]
    submitted = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        type(self).submitted += 1
        return super().submit(*args, **kwargs)


def test_parallel_ranges_refuse_a_backdated_or_old_format_event_at_a_range_boundary(team, monkeypatch):
    for _ in range(40):
        team.admin.clients.list()
        team.clock.advance(seconds=1)
    monkeypatch.setattr(chain, "PARALLEL_THRESHOLD", 5)
    monkeypatch.setattr(verify_module, "ProcessPoolExecutor", _CountingPool)
    assert team.admin.audit.verify(workers=2).ok
    assert _CountingPool.submitted > 1  # the ranges really went to worker processes
    head = team.admin.audit.head()[0]
    for target in range(head - 12, head - 6):  # ranges of 3 events at 2 workers: every position in a range
        with team.admin.store.transaction() as s:
            original = {e.seq: (e.at_us, e.hash, e.prev_hash, e.signature) for e in s.scalars(select(m.AuditEvent))}
        _rewrite(team, target, _seeds(team), edit=lambda e, t=target: _backdate(e, t))
        serial, parallel = team.admin.audit.verify(workers=1), team.admin.audit.verify(workers=2)
        assert (serial.ok, serial.first_bad_seq) == (False, target), serial
        assert parallel == serial and "backdated" in str(serial.problem)
        _rewrite(team, target, _seeds(team), legacy=True)
        serial, parallel = team.admin.audit.verify(workers=1), team.admin.audit.verify(workers=2)
        assert (serial.ok, serial.first_bad_seq) == (False, target), serial
        assert parallel == serial and "format" in str(serial.problem)
        with team.admin.store.transaction() as s:  # put the chain back for the next position
            for e in s.scalars(select(m.AuditEvent).where(m.AuditEvent.seq >= target)):
                e.at_us, e.hash, e.prev_hash, e.signature = original[e.seq]
            head_row = s.get(m.AuditHead, 1)
            assert head_row is not None
            head_row.seq, head_row.hash = head, original[head][1]
        assert team.admin.audit.verify(workers=2).ok


def _backdate(e: m.AuditEvent, target: int) -> None:
    if e.seq == target:
        e.at_us -= 10_000_000


def test_an_event_racing_the_removal_of_its_engineer_is_not_written(team):
    """PostgreSQL runs read committed: a transaction that checked alice's certificate can reach
    the head lock after her removal committed. Its event would be signed outside her key's
    lifetime (and fail every later verification), so it is aborted instead."""
    if team.url.startswith("sqlite"):
        pytest.skip("SQLite's BEGIN IMMEDIATE serialises whole transactions: no such race")
    alice = team.engineer("alice")
    head = team.admin.audit.head()[0]
    with pytest.raises(ConcurrentChange), alice.store.transaction() as s:
        alice.trust.my_row(s)  # her certificate checks out…
        team.admin.engineers.remove("alice")  # …then an admin removes her (its own transaction, committed)
        alice.journal.append(s, "client-list", public={"count": 0})
    assert [e.action for e in team.admin.audit.log() if e.seq > head].count("client-list") == 0
    assert team.admin.audit.verify().ok


def test_a_vault_older_than_its_audit_chain_still_verifies(team):
    """Vaults made before migration 0002 had no chain: theirs begins after the keys were
    certified, without a vault-init. Their certified keys sign from event 1 (event 1 is signed,
    so a newer vault cannot be made to look like one); retirements still apply."""
    alice = team.engineer("alice")
    bob = team.engineer("bob")
    code = team.admin.engineers.invite("carol")  # invited before the chain began
    with team.admin.store.transaction() as s:
        s.execute(delete(m.AuditEvent))
        s.execute(delete(m.AuditHead))
    alice.clients.list()  # event 1: no vault-init before it
    team.admin.engineers.list()
    carol = team.open("carol")
    team.admin.engineers.confirm("carol", carol.engineers.enroll("carol", code, "pass of carol"))
    carol.engineers.unlock("carol", "pass of carol")
    carol.clients.list()
    bob_seed, bob_id = bob.keyholder.me().signing_seed, _engineer_id(team, "bob")
    team.admin.engineers.remove("bob")
    assert team.admin.audit.verify().ok
    seq = _forge(team, "client-list", engineer_id=bob_id, key_generation=1, seed=bob_seed, public={"count": 0})
    assert "lifetime" in _refused_at(team, seq)
