"""The access log (issue 3): every action is an event, chained, signed, and verified.

Tampering goes straight to the tables through SQLAlchemy, as someone with write access
to the database but no admin keys would; each kind must be reported at the exact
sequence number. Every test runs on SQLite and PostgreSQL (the ``team`` fixture).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from served import ServedTeam
from sqlalchemy import delete, func, select, update

from vault import Vault
from vault.authority.journal import UNSIGNED_ACTIONS
from vault.authority.secrets import VIEW_PUBLIC_ONLY
from vault.crypto import blobs, chain, signing
from vault.crypto.keyrecord import FLOOR
from vault.errors import (
    AuditUnavailable,
    DecryptionFailed,
    IntegrityError,
    InvalidInput,
    UntrustedRecord,
    WrongPassphrase,
)
from vault.keyholder import auditverify as verify_module
from vault.storage import models as m
from vault.transport.audit_verify import InProcessChainTransport


@pytest.fixture
def team(team3):  # type: ignore[no-untyped-def]
    """In each of ``team3``'s modes: SQLite, PostgreSQL, through a team server."""
    return team3


REF, PW = "acme/fw01", "acme-pw-1"
REASON = "T-5150 secret-reason-marker"


# -- helpers ---------------------------------------------------------------------------------


def _events(team) -> list[m.AuditEvent]:  # type: ignore[no-untyped-def]
    with team.admin.store.transaction() as s:
        rows = list(s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq)))
        s.expunge_all()
        return rows


def _actions_since(team, seq: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.action for e in _events(team) if e.seq > seq]


def _seq_of(team, action: str, nth: int = 0) -> int:  # type: ignore[no-untyped-def]
    return [e.seq for e in _events(team) if e.action == action][nth]


def _hash(vault_id: bytes, e: m.AuditEvent, prev: bytes) -> bytes:
    """An event's hash as docs/format.md defines it (the field order of journal.py); in format 3
    (appended by a team server: it names its server key) over its request's id and digest too."""
    fields = (e.seq, e.at_us, e.engineer_id, e.key_generation, e.action, e.client_id, e.secret_id)
    fields += (e.key_version, e.details_blob, e.details_json)  # type: ignore[assignment]
    if e.server_key_version is not None:
        return chain.event_hash_v3(
            vault_id, *fields, request_id=e.request_id, request_digest=e.request_digest, prev_hash=prev
        )
    return chain.event_hash(vault_id, *fields, prev_hash=prev)


def _as_format_2(e: m.AuditEvent) -> None:
    """An attacker's rewrite of a served event: without the server's key she cannot sign format 3."""
    e.server_key_version = e.request_id = e.request_digest = e.request_sig = e.request_body = None


def _rechain(
    team, start: int, *, sign_with: bytes | None = None, edit: Callable[[m.AuditEvent], None] | None = None
) -> None:  # type: ignore[no-untyped-def]
    """Recompute prev/hash from ``start`` to the end (and the head), optionally re-signing.

    What an attacker without the signers' keys can do: the chain links check out
    again; only the signatures can tell.
    """
    vault_id = team.admin.vault_id()
    with team.admin.store.transaction() as s:
        prev = chain.GENESIS
        if start > 1:
            prev = s.scalars(
                select(m.AuditEvent.hash).where(m.AuditEvent.seq < start).order_by(m.AuditEvent.seq.desc()).limit(1)
            ).one()
        rows = list(s.scalars(select(m.AuditEvent).where(m.AuditEvent.seq >= start).order_by(m.AuditEvent.seq)))
        for e in rows:
            if edit is not None:
                edit(e)
            e.prev_hash = prev
            e.hash = _hash(vault_id, e, prev)
            if sign_with is not None:
                e.signature = chain.sign_event(sign_with, vault_id, e.seq, e.hash)
            prev = e.hash
        head = s.get(m.AuditHead, 1)
        assert head is not None
        head.seq, head.hash = rows[-1].seq, prev


def _run(team, statement: Any) -> None:  # type: ignore[no-untyped-def]
    with team.admin.store.transaction() as s:
        s.execute(statement)


def _set(team, seq: int, **values: Any) -> None:  # type: ignore[no-untyped-def]
    _run(team, update(m.AuditEvent).where(m.AuditEvent.seq == seq).values(**values))


def _engineer_id(team, name: str) -> int:  # type: ignore[no-untyped-def]
    with team.admin.store.transaction() as s:
        return int(s.scalar(select(m.Engineer.id).where(m.Engineer.name == name)))


def _build(team) -> Vault:  # type: ignore[no-untyped-def]
    """A chain of 15 events by several engineers; returns alice's vault."""
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add(REF, password=PW, kind="equipment", username="fw-admin")
    alice = team.engineer("alice")
    team.admin.grants.grant("alice", "acme", reason="on call")
    for i in range(3):
        alice.checkouts.checkout(REF, reason=f"T-{i} {REASON}")
    for _ in range(3):
        alice.secrets.show(REF)
    assert team.admin.audit.head()[0] >= 12
    return alice


# -- every action is on the record ---------------------------------------------------------------


def test_every_action_family_appends_its_event(team):
    admin = team.admin
    signed: dict[str, bool] = {}

    def expect(actions: list[str], call: Callable[[], Any]) -> Any:
        head = admin.audit.head()[0]
        result = call()
        assert _actions_since(team, head) == actions, actions
        for e in _events(team)[head:]:
            signed[e.action] = e.signature is not None
        return result

    expect(["client-create"], lambda: admin.clients.add("acme", "Acme Ltd"))
    expect(["secret-create"], lambda: admin.secrets.add(REF, password=PW, username="fw-admin"))
    code = expect(["engineer-invite"], lambda: admin.engineers.invite("alice"))
    alice = team.open("alice")
    fingerprint = expect(["enroll"], lambda: alice.engineers.enroll("alice", code, "alice's passphrase"))
    expect(["engineer-confirm"], lambda: admin.engineers.confirm("alice", fingerprint))
    served = isinstance(team, ServedTeam)  # an unlock opens the key record on the engineer's machine
    expect([] if served else ["unlock"], lambda: alice.engineers.unlock("alice", "alice's passphrase"))
    with pytest.raises(WrongPassphrase):
        expect(
            [] if served else ["unlock-failed"],
            lambda: team.open("alice").engineers.unlock("alice", "not alice's passphrase"),
        )
    if not served:  # through a server a wrong passphrase never leaves the engineer's machine
        assert _actions_since(team, admin.audit.head()[0] - 1) == ["unlock-failed"]  # recorded although it raised
        assert _events(team)[-1].engineer_id == _engineer_id(team, "alice")
        signed["unlock-failed"] = _events(team)[-1].signature is not None
    expect(["grant"], lambda: admin.grants.grant("alice", "acme", reason="on call"))
    expect(["client-list"], alice.clients.list)
    expect(["client-view"], lambda: alice.clients.show("acme"))
    expect(["secret-list"], lambda: alice.secrets.list("acme"))
    expect(["secret-list"], alice.secrets.list)
    expect(["secret-view"], lambda: alice.secrets.show(REF))
    expect(["secret-history"], lambda: alice.secrets.history(REF))
    expect(["reveal"], lambda: alice.checkouts.reveal(REF, reason=REASON))
    expect(["checkout"], lambda: alice.checkouts.checkout(REF, reason=REASON))
    expect(["checkin"], lambda: alice.checkouts.checkin(REF))
    expect(["secret-update"], lambda: admin.secrets.update(REF, username="fw-root"))
    expect(["policy-set"], lambda: admin.policies.set("acme", exclusive=True))
    expect(["report-access"], lambda: admin.reports.access("alice"))
    expect(["revoke"], lambda: admin.grants.revoke("alice", "acme"))

    for action, is_signed in signed.items():
        assert is_signed == (action not in UNSIGNED_ACTIONS), action
    assert ({"enroll"} if served else {"enroll", "unlock-failed"}) <= set(signed)
    assert team.admin.audit.verify().ok


def test_listing_and_revealing_are_distinct_actions_with_the_field_revealed(team):
    alice = _build(team)
    head = team.admin.audit.head()[0]
    alice.secrets.list("acme")
    alice.checkouts.reveal(REF, reason=REASON, field="username")
    alice.checkouts.checkout(REF, reason=REASON)
    entries = [e for e in team.admin.audit.log() if e.seq > head]
    assert [e.action for e in entries] == ["secret-list", "reveal", "checkout"]
    if isinstance(team, ServedTeam):  # a layered page's listing names the versions it released, no field
        assert entries[0].details is not None and "field" not in entries[0].details
        assert set(entries[0].details) == {"released"}
    else:
        assert entries[0].details is None  # a listing reveals no field
    assert [e.details["field"] for e in entries[1:] if e.details] == ["username", "password"]


def test_details_of_client_events_are_encrypted_under_the_client_key(team):
    alice = _build(team)
    team.admin.grants.grant("alice", "acme", reason="grant-reason-marker")
    alice.checkouts.reveal(REF, reason=REASON)
    client_events = [e for e in _events(team) if e.client_id is not None]
    assert {"client-create", "secret-create", "grant", "checkout", "reveal", "secret-view"} <= {
        e.action for e in client_events
    }
    for e in client_events:
        if e.server_key_version is not None and e.details_json is not None:  # the server's public facts
            facts = json.loads(e.details_json)  # numbers and flags only: no name, slug or reason
            assert all(_ints(v) or v == VIEW_PUBLIC_ONLY for v in facts.values()), (e.action, facts)
        else:
            assert e.details_json is None, e.action
        if e.details_blob is not None:
            for plain in (REASON, "secret-reason-marker", "grant-reason-marker", "fw01", "acme", "alice"):
                assert plain.encode() not in e.details_blob, (e.action, plain)
    for e in _events(team):  # nowhere in the log in the clear, not even in public details
        for column in (e.details_json or "", e.action):
            assert "secret-reason-marker" not in column and "grant-reason-marker" not in column
    readable = {e.seq: e for e in team.admin.audit.log()}
    reasons = [e.details.get("reason") for e in readable.values() if e.details and e.action in ("checkout", "reveal")]
    assert REASON in reasons
    grant = [e for e in readable.values() if e.action == "grant"][-1]
    assert grant.details is not None and grant.details["reason"] == "grant-reason-marker"


def _ints(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, list) and all(_ints(v) for v in value))


def _open_detail(key: bytes, e: m.AuditEvent, blob: bytes, seq: int, request_id: bytes | None) -> bytes:
    """``blob`` opened as the details of ``e``'s client and action at ``seq`` (format 3: sealed to
    ``request_id``, the request of the event it is opened as)."""
    assert e.key_version is not None and e.client_id is not None
    if e.server_key_version is not None:
        assert request_id is not None
        return blobs.decrypt_audit_detail_v3(key, e.key_version, blob, e.client_id, request_id, e.action)
    return blobs.decrypt_audit_detail(key, e.key_version, blob, e.client_id, seq, e.action)


def test_details_moved_to_another_event_do_not_decrypt(team):
    _build(team)
    first, second = _seq_of(team, "checkout", 0), _seq_of(team, "checkout", 1)
    blob = next(e.details_blob for e in _events(team) if e.seq == first)
    _set(team, second, details_blob=blob)  # bound to seq and action: not readable elsewhere
    # Issue 13: the keyholder recomputes each event's hash before it opens anything, so the
    # log is refused at that event (it used to be shown with the details unreadable) ...
    with pytest.raises(IntegrityError, match=f"event {second}: its contents were changed"):
        team.admin.audit.log()
    # ... and the blob itself still does not open at that event (were the chain re-hashed).
    moved = next(e for e in _events(team) if e.seq == second)
    with team.admin.store.transaction() as s:
        client = s.get(m.Client, moved.client_id)
        assert client is not None and moved.key_version is not None
        key = team.admin.journal.audit_keys.audit_key(s, client, moved.key_version)
    original = next(e for e in _events(team) if e.seq == first)
    assert _open_detail(key, original, blob, first, original.request_id)  # control
    with pytest.raises(DecryptionFailed):
        _open_detail(key, moved, blob, second, moved.request_id)


# -- verification: every kind of tampering, at the right event ----------------------------------------


def test_an_untouched_chain_verifies(team):
    _build(team)
    head_seq, head_hash = team.admin.audit.head()
    result = team.admin.audit.verify()
    assert result.ok and result.first_bad_seq is None and result.problem is None
    assert (result.checked, result.first_seq, result.head_seq, result.head_hash) == (
        head_seq,
        1,
        head_seq,
        head_hash.hex(),
    )
    assert [e.seq for e in _events(team)] == list(range(1, head_seq + 1))


def test_events_appended_while_the_chain_is_checked_are_no_false_alarm(team, monkeypatch):
    # Found by the benchmark (W14): a verification that read the newest event at its start and
    # the head at its end reported "events deleted?" whenever checkouts went on meanwhile.
    alice = _build(team)
    real = InProcessChainTransport.page
    appended: list[int] = []

    def checkout_then_page(self, request):  # type: ignore[no-untyped-def]
        if not appended:  # another engineer's checkout commits while the chain is being read
            alice.checkouts.checkout(REF, reason=REASON)
            appended.append(team.admin.audit.head()[0])
        return real(self, request)

    monkeypatch.setattr(InProcessChainTransport, "page", checkout_then_page)
    result = team.admin.audit.verify()
    assert appended and result.ok and result.problem is None
    assert result.head_seq == appended[0] - 1  # the chain as it stood when the check began
    monkeypatch.undo()
    assert team.admin.audit.verify().head_seq == appended[0]  # the next check takes in the new event


def test_a_clock_set_back_never_leaves_an_event_the_chain_refuses(team):
    """A writer whose clock is behind the last event's (a clock stepped back, two servers out of
    step) dates its event no earlier than that one. Through a team server the event also keeps its
    request, signed on the writer's clock, which the chain holds to within ``EVENT_WINDOW`` of the
    event's time: such an event is refused before anything is written, never written unverifiable."""
    team.admin.clients.add("acme", "Acme Ltd")
    team.clock.advance(minutes=11)
    team.admin.clients.add("globex", "Globex Corp")
    team.clock.advance(minutes=-11)
    head = team.admin.audit.head()
    if isinstance(team, ServedTeam):
        with pytest.raises(AuditUnavailable, match="clock"):
            team.admin.clients.add("initech", "Initech")
        assert team.admin.audit.head() == head
        with team.admin.store.read() as s:  # every read appends its event too: the table, by hand
            assert s.scalar(select(func.count()).select_from(m.Client)) == 2
        team.clock.advance(minutes=11)  # the clock set right: the server appends again
    else:
        team.admin.clients.add("initech", "Initech")
    verified = team.admin.audit.verify()
    assert (verified.ok, verified.problem) == (True, None)


def test_an_event_planted_past_the_recorded_head_is_caught(team):
    _build(team)
    head_seq, _ = team.admin.audit.head()
    with team.admin.store.transaction() as s:  # a writer of the database copies the last event past the head
        last = s.get(m.AuditEvent, head_seq)
        assert last is not None
        columns = {c.name: getattr(last, c.name) for c in m.AuditEvent.__table__.columns}
        planted = {"seq": head_seq + 1, "prev_hash": last.hash}
        if last.request_id is not None:  # a served event: one event per request id (migration 0016)
            planted["request_id"] = os.urandom(16)
        s.add(m.AuditEvent(**(columns | planted)))
    result = team.admin.audit.verify()
    assert not result.ok and result.first_bad_seq == head_seq + 1
    assert result.problem == f"event {head_seq + 1}: events lie beyond the chain's recorded head"


def test_the_tamper_helper_recomputes_exactly_the_stored_hashes(team):
    _build(team)
    before = [(e.seq, e.prev_hash, e.hash, e.signature) for e in _events(team)]
    _rechain(team, 1)
    assert [(e.seq, e.prev_hash, e.hash, e.signature) for e in _events(team)] == before
    assert team.admin.audit.verify().ok


def _edit_action(team, target: int) -> int:  # type: ignore[no-untyped-def]
    _set(team, target, action="reveal")
    return target


def _edit_time(team, target: int) -> int:  # type: ignore[no-untyped-def]
    at_us = next(e.at_us for e in _events(team) if e.seq == target)
    _set(team, target, at_us=at_us - 3_600_000_000)
    return target


def _edit_details(team, target: int) -> int:  # type: ignore[no-untyped-def]
    blob = next(e.details_blob for e in _events(team) if e.seq == target)
    assert blob is not None
    _set(team, target, details_blob=blob[:-1] + bytes([blob[-1] ^ 1]))
    return target


def _edit_engineer(team, target: int) -> int:  # type: ignore[no-untyped-def]
    _set(team, target, engineer_id=_engineer_id(team, "root-admin"))
    return target


def _delete_middle(team, target: int) -> int:  # type: ignore[no-untyped-def]
    _run(team, delete(m.AuditEvent).where(m.AuditEvent.seq == target))
    return target


def _swap_rows(team, first: int, second: int) -> None:  # type: ignore[no-untyped-def]
    with team.admin.store.transaction() as s:
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == first).values(seq=-1))
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == second).values(seq=first))
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == -1).values(seq=second))


def _reorder_neighbours(team, target: int) -> int:  # type: ignore[no-untyped-def]
    _swap_rows(team, target, target + 1)
    return target


def _swap_distant(team, target: int) -> int:  # type: ignore[no-untyped-def]
    _swap_rows(team, target, target + 3)
    return target


def _swap_payloads(team, target: int) -> int:  # type: ignore[no-untyped-def]
    """Exchange what two events say (action, time, details) but keep their links."""
    a, b = (next(e for e in _events(team) if e.seq == seq) for seq in (target, target + 2))
    fields = ("at_us", "action", "secret_id", "details_blob")
    _set(team, a.seq, **{f: getattr(b, f) for f in fields})
    _set(team, b.seq, **{f: getattr(a, f) for f in fields})
    return target


def _insert_forged(signature: bytes | None) -> Callable[[Any, int], int]:
    def tamper(team, target: int) -> int:  # type: ignore[no-untyped-def]
        """Insert a checkout at ``target``, renumber the rest and recompute every hash."""
        model = next(e for e in _events(team) if e.seq == target)
        with team.admin.store.transaction() as s:
            s.execute(update(m.AuditEvent).where(m.AuditEvent.seq >= target).values(seq=-m.AuditEvent.seq - 1))
            s.execute(update(m.AuditEvent).where(m.AuditEvent.seq < 0).values(seq=-m.AuditEvent.seq))
            s.add(
                m.AuditEvent(
                    seq=target,
                    at_us=model.at_us - 1,
                    engineer_id=model.engineer_id,
                    key_generation=model.key_generation,
                    action="checkout",
                    client_id=model.client_id,
                    secret_id=model.secret_id,
                    key_version=model.key_version,
                    details_blob=model.details_blob,
                    details_json=None,
                    prev_hash=b"",
                    hash=b"",
                    signature=signature,
                )
            )
        _rechain(team, target)
        return target

    return tamper


def _strip_signature(team, target: int) -> int:  # type: ignore[no-untyped-def]
    assert next(e.action for e in _events(team) if e.seq == target) not in UNSIGNED_ACTIONS
    _set(team, target, signature=None)
    return target


def _borrow_signature(team, target: int) -> int:  # type: ignore[no-untyped-def]
    other = next(e.signature for e in _events(team) if e.seq == target - 1)
    _set(team, target, signature=other)
    return target


def _resign_as_attacker(team, target: int) -> int:  # type: ignore[no-untyped-def]
    """A certified engineer (not an admin) edits an event and re-signs the rest with her key."""
    mallory = team.engineer("mallory")
    seed = mallory.keyholder.me().signing_seed
    _rechain(
        team, target, sign_with=seed, edit=lambda e: setattr(e, "action", "secret-view") if e.seq == target else None
    )
    return target


def _resign_with_a_new_key(team, target: int) -> int:  # type: ignore[no-untyped-def]
    """The same with a key nobody certified, claimed for an engineer row the attacker adds."""
    key = signing.SigningKey.generate()
    with team.admin.store.transaction() as s:
        row = m.Engineer(
            name="ghost",
            role="admin",
            status="active",
            key_generation=1,
            signing_public=key.public,
            sealing_public=os.urandom(32),
            certificate=os.urandom(64),
            certified_at=1,
            created_at=team.clock(),
        )
        s.add(row)
        s.flush()
        ghost = row.id

    def edit(e: m.AuditEvent) -> None:
        e.engineer_id, e.key_generation = ghost, 1

    _rechain(team, target, sign_with=key.seed, edit=edit)
    return target


TAMPERS = {
    "edit-action": _edit_action,
    "edit-time": _edit_time,
    "edit-details": _edit_details,
    "edit-engineer": _edit_engineer,
    "delete-middle": _delete_middle,
    "reorder-neighbours": _reorder_neighbours,
    "swap-distant": _swap_distant,
    "swap-payloads": _swap_payloads,
    "insert-unsigned": _insert_forged(None),
    "insert-bad-signature": _insert_forged(os.urandom(64)),
    "strip-signature": _strip_signature,
    "borrow-signature": _borrow_signature,
    "resign-as-engineer": _resign_as_attacker,
    "resign-with-new-key": _resign_with_a_new_key,
}


@pytest.mark.parametrize("kind", list(TAMPERS))
def test_tampering_is_detected_at_the_first_bad_event(team, kind):
    _build(team)
    target = _seq_of(team, "checkout", 1)  # a signed event in the middle of the chain
    assert 5 < target < team.admin.audit.head()[0] - 2
    assert TAMPERS[kind](team, target) == target
    result = team.admin.audit.verify()
    assert result.ok is False
    assert result.first_bad_seq == target, result.problem
    assert result.problem is not None and result.problem.startswith(f"event {target}:")
    assert team.admin.audit.verify(workers=1) == result


def test_tampering_an_unsigned_event_is_detected_at_it(team):
    _build(team)
    target = _seq_of(team, "enroll")
    _set(team, target, details_json=json.dumps({"engineer": "someone-else"}))
    result = team.admin.audit.verify()
    assert (result.ok, result.first_bad_seq) == (False, target)


def test_an_engineer_rewriting_the_tail_as_her_own_events_is_caught_by_a_checkpoint(team):
    """Re-signing under her own name, within her key's lifetime, keeps every signature valid:
    only the head seen before tells."""
    mallory = team.engineer("mallory")
    _build(team)
    seen = team.admin.audit.head()
    checkpoint = team.admin.audit.checkpoint()
    target = _seq_of(team, "checkout", 1)
    me = mallory.keyholder.me()

    def edit(e: m.AuditEvent) -> None:
        e.engineer_id, e.key_generation = me.engineer_id, me.key_generation
        _as_format_2(e)

    _rechain(team, target, sign_with=me.signing_seed, edit=edit)
    if isinstance(team, ServedTeam):  # served events are the server's (format 3): hers are a downgrade
        admin = team.admin.audit
        for result in (admin.verify(), admin.verify(known_head=seen), admin.verify(checkpoints=[checkpoint])):
            assert (result.ok, result.first_bad_seq) == (False, target)
            assert result.problem is not None and "downgrade" in result.problem
        return
    assert team.admin.audit.verify().ok  # a limit of per-engineer signatures, stated in the threat model
    for result in (team.admin.audit.verify(known_head=seen), team.admin.audit.verify(checkpoints=[checkpoint])):
        assert (result.ok, result.first_bad_seq) == (False, seen[0])
        assert result.problem is not None and "differs" in result.problem


def test_an_engineer_rewriting_events_from_before_her_certification_is_caught(team):
    """Issue 12 item 11: her key signs only from its certification on (in chain order)."""
    _build(team)
    mallory = team.engineer("mallory")
    target = _seq_of(team, "checkout", 1)
    me = mallory.keyholder.me()

    def edit(e: m.AuditEvent) -> None:
        e.engineer_id, e.key_generation = me.engineer_id, me.key_generation
        _as_format_2(e)

    _rechain(team, target, sign_with=me.signing_seed, edit=edit)
    result = team.admin.audit.verify()
    assert (result.ok, result.first_bad_seq) == (False, target)
    # served: her format-2 events after the server's format 3 are a downgrade, caught first
    expected = "downgrade" if isinstance(team, ServedTeam) else "certified"
    assert result.problem is not None and expected in result.problem


# -- truncation and checkpoints -------------------------------------------------------------------------


def _truncate(team, n: int, *, rewind_head: bool) -> int:  # type: ignore[no-untyped-def]
    last = team.admin.audit.head()[0]
    _run(team, delete(m.AuditEvent).where(m.AuditEvent.seq > last - n))
    if rewind_head:
        new_last = next(e for e in _events(team) if e.seq == last - n)
        _run(team, update(m.AuditHead).where(m.AuditHead.id == 1).values(seq=new_last.seq, hash=new_last.hash))
    return last - n


def test_truncating_the_tail_without_rewinding_the_head_is_detected(team):
    _build(team)
    new_last = _truncate(team, 3, rewind_head=False)
    result = team.admin.audit.verify()
    assert (result.ok, result.first_bad_seq, result.head_seq) == (False, new_last + 1, new_last)


def test_a_careful_truncation_is_caught_by_the_known_head_and_by_a_checkpoint(team):
    _build(team)
    seen = team.admin.audit.head()
    checkpoint = team.admin.audit.checkpoint()
    assert team.admin.audit.verify(known_head=seen, checkpoints=[checkpoint]).ok
    new_last = _truncate(team, 3, rewind_head=True)
    alone = team.admin.audit.verify()
    assert alone.ok and alone.head_seq == new_last  # the chain on its own cannot tell
    for result in (team.admin.audit.verify(known_head=seen), team.admin.audit.verify(checkpoints=[checkpoint])):
        assert (result.ok, result.first_bad_seq) == (False, new_last + 1)
        assert result.problem is not None and "truncated" in result.problem


def test_a_truncation_hidden_by_new_events_is_still_caught(team):
    alice = _build(team)
    seen = team.admin.audit.head()
    checkpoint = team.admin.audit.checkpoint()
    _truncate(team, 3, rewind_head=True)
    team.clock.advance(seconds=1)  # with a frozen clock, re-doing the deleted events would rebuild them exactly
    for _ in range(5):
        alice.secrets.show(REF)  # the log grows past the old head again
    assert team.admin.audit.verify().ok
    for result in (team.admin.audit.verify(known_head=seen), team.admin.audit.verify(checkpoints=[checkpoint])):
        assert (result.ok, result.first_bad_seq) == (False, seen[0])


def test_checkpoints_of_an_untouched_chain_verify_later(team):
    alice = _build(team)
    early = team.admin.audit.checkpoint()
    alice.secrets.show(REF)
    by_engineer = alice.audit.checkpoint()
    alice.secrets.show(REF)
    assert team.admin.audit.verify(checkpoints=[early, by_engineer], known_head=team.admin.audit.head()).ok


def _flip(text: str, index: int) -> str:
    return text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1 :]


def test_a_checkpoint_with_a_changed_signature_or_head_is_untrusted(team):
    _build(team)
    checkpoint = team.admin.audit.checkpoint()
    parts = checkpoint.split(":")
    assert len(base64.b64decode(parts[-1])) == 64
    bad_signature = ":".join([*parts[:-1], _flip(parts[-1], 10)])
    with pytest.raises(UntrustedRecord):
        team.admin.audit.verify(checkpoints=[bad_signature])
    head_seq = int(parts[3])
    for changed in (
        ":".join([*parts[:3], str(head_seq - 1), *parts[4:]]),  # an older seq with the same signature
        ":".join([*parts[:4], "00" * 32, *parts[5:]]),  # another hash
        ":".join([*parts[:5], str(int(parts[5]) + 1), *parts[6:]]),  # another time
        ":".join([*parts[:6], "alice", parts[7]]),  # claimed by another engineer
    ):
        with pytest.raises(UntrustedRecord):
            team.admin.audit.verify(checkpoints=[changed])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "credvault-checkpoint:1",
        "credvault-checkpoint:2:{vault}:3:{hash}:1:root-admin:{sig}",
        "credvault-checkpoint:1:{vault}:x:{hash}:1:root-admin:{sig}",
        "credvault-checkpoint:1:{vault}:3:zz:1:root-admin:{sig}",
        "credvault-checkpoint:1:{vault}:3:{hash}:1:root-admin:not*base64",
        "credvault-checkpoint:1:{vault}:3:{hash}:1:root-admin",
    ],
)
def test_a_malformed_checkpoint_is_invalid_input(team, text):
    _build(team)
    real = team.admin.audit.checkpoint().split(":")
    text = text.format(vault=real[2], hash=real[4], sig=real[7])
    with pytest.raises(InvalidInput):
        team.admin.audit.verify(checkpoints=[text])


def test_a_checkpoint_from_another_vault_is_invalid_input(team, tmp_path, clock):
    _build(team)
    other, _ = Vault.create(
        f"sqlite:///{tmp_path / 'other.db'}",
        admin="root-admin",
        passphrase="other vault pass",
        clock=clock,
        kdf_params=FLOOR,
    )
    other.engineers.unlock("root-admin", "other vault pass")
    foreign = other.audit.checkpoint()
    other.close()
    with pytest.raises(InvalidInput):
        team.admin.audit.verify(checkpoints=[foreign])


# -- incremental verification ---------------------------------------------------------------------------


def test_incremental_verification_checks_only_the_new_events(team):
    alice = _build(team)
    assert team.admin.audit.verify().ok
    since = team.admin.audit.head()
    for _ in range(5):
        alice.secrets.show(REF)
    result = team.admin.audit.verify(since=since)
    assert result.ok
    assert (result.checked, result.first_seq, result.head_seq) == (5, since[0] + 1, since[0] + 5)
    assert team.admin.audit.verify(since=team.admin.audit.head()).checked == 0


def test_incremental_verification_detects_tampering_after_the_anchor(team):
    alice = _build(team)
    since = team.admin.audit.head()
    for _ in range(5):
        alice.secrets.show(REF)
    _edit_action(team, since[0] + 3)
    result = team.admin.audit.verify(since=since)
    assert (result.ok, result.first_bad_seq) == (False, since[0] + 3)


def test_incremental_verification_trusts_what_it_verified_before(team):
    alice = _build(team)
    since = team.admin.audit.head()
    alice.secrets.show(REF)
    _edit_action(team, 3)  # before the anchor: a full verify's business
    assert team.admin.audit.verify(since=since).ok
    assert team.admin.audit.verify().first_bad_seq == 3


@pytest.mark.parametrize("how", ["rewritten", "deleted", "wrong-hash-given"])
def test_an_edited_or_missing_anchor_is_reported(team, how):
    alice = _build(team)
    since = team.admin.audit.head()
    for _ in range(3):
        alice.secrets.show(REF)
    if how == "rewritten":  # the anchor and everything after it rewritten with consistent hashes
        _rechain(team, since[0], edit=lambda e: setattr(e, "action", "secret-list") if e.seq == since[0] else None)
    elif how == "deleted":
        _run(team, delete(m.AuditEvent).where(m.AuditEvent.seq == since[0]))
    else:
        since = (since[0], bytes(32))
    result = team.admin.audit.verify(since=since)
    assert (result.ok, result.first_bad_seq) == (False, since[0])


# -- the parallel path ---------------------------------------------------------------------------------


class _CountingPool(verify_module.ProcessPoolExecutor):  # type: ignore[misc]
    maps = 0

    def map(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        type(self).maps += 1
        return super().map(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        type(self).maps += 1  # work handed to the worker processes, by map or by submit
        return super().submit(*args, **kwargs)


def test_parallel_signature_checks_agree_with_the_serial_ones(team, monkeypatch):
    alice = _build(team)
    for i in range(30):
        (alice.secrets.show(REF) if i % 2 else alice.checkouts.reveal(REF, reason=REASON))
    assert team.admin.audit.head()[0] >= 40
    monkeypatch.setattr(chain, "PARALLEL_THRESHOLD", 5)
    monkeypatch.setattr(verify_module, "ProcessPoolExecutor", _CountingPool)
    _CountingPool.maps = 0

    serial, parallel = team.admin.audit.verify(workers=1), team.admin.audit.verify(workers=2)
    assert serial.ok and parallel == serial
    assert _CountingPool.maps >= 1  # the worker processes really ran

    bad, worse = _seq_of(team, "reveal", 4), _seq_of(team, "secret-view", 12)
    assert bad < worse
    for seq in (worse, bad):  # two bad signatures: the lowest is named
        _set(team, seq, signature=next(e.signature for e in _events(team) if e.seq == seq - 1))
    serial, parallel = team.admin.audit.verify(workers=1), team.admin.audit.verify(workers=2)
    assert (serial.ok, serial.first_bad_seq) == (False, bad)
    assert parallel == serial
    assert team.admin.audit.verify() == serial  # the default worker count


# -- reading the log -----------------------------------------------------------------------------------


def test_engineers_see_their_own_events_and_the_admin_sees_all_decrypted(team):
    alice = _build(team)
    bob = team.engineer("bob")
    team.admin.grants.grant("bob", "acme")
    bob.checkouts.reveal(REF, reason="T-bob")
    alice.checkouts.reveal(REF, reason="T-alice")

    mine = alice.audit.log()
    assert mine and {e.engineer for e in mine} == {"alice"}
    assert "T-bob" not in json.dumps([e.to_json() for e in mine])
    own_reveal = [e for e in mine if e.action == "reveal"][-1]
    assert own_reveal.readable and own_reveal.details is not None and own_reveal.details["reason"] == "T-alice"
    assert alice.audit.log(engineer="bob") == []
    assert {e.engineer for e in bob.audit.log()} == {"bob"}

    everything = team.admin.audit.log()
    assert [e.seq for e in everything] == list(range(1, team.admin.audit.head()[0] + 1))
    assert {"root-admin", "alice", "bob"} <= {e.engineer for e in everything}
    for e in everything:
        if e.client_id is not None:
            assert e.client == "acme" and e.readable, e
    reasons = {e.details["reason"] for e in everything if e.action == "reveal" and e.details}
    assert {"T-bob", "T-alice"} <= reasons

    assert {e.engineer for e in team.admin.audit.log(engineer="bob")} == {"bob"}
    assert all(e.client == "acme" for e in team.admin.audit.log(client="acme"))
    assert len(team.admin.audit.log(limit=3)) == 3
    team.clock.advance(seconds=10)
    alice.checkouts.reveal(REF, reason="T-later")
    assert [e.action for e in team.admin.audit.log(since=team.clock())] == ["reveal"]


def test_export_yields_one_json_object_per_event(team):
    _build(team)
    lines = list(team.admin.audit.export())
    assert len(lines) == team.admin.audit.head()[0]
    parsed = [json.loads(line) for line in lines]
    assert all("\n" not in line for line in lines)
    assert [p["seq"] for p in parsed] == list(range(1, len(lines) + 1))
    assert {"seq", "at", "engineer", "action", "client", "details"} <= set(parsed[0])
    checkout = next(p for p in parsed if p["action"] == "checkout")
    assert checkout["client"] == "acme" and REASON in checkout["details"]["reason"]
    assert PW not in "\n".join(lines)


def _public_facts(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _public_facts(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_public_facts(v) for v in value)
    return (isinstance(value, int) and not isinstance(value, bool)) or value in ("public-only", True, False)


def test_a_revoked_engineer_no_longer_reads_the_clients_names_or_details_in_the_log(team):
    # Found in review: the agent's long-lived Vault still held the client key after a
    # revocation, and the audit log opened the client's slug, secret names and reasons with it.
    alice = _build(team)
    assert any(e.client == "acme" and e.readable for e in alice.audit.log())
    team.admin.grants.revoke("alice", "acme")
    entries = [e for e in alice.audit.log() if e.client_id is not None]  # the same Vault object
    # through a server a format-3 event with nothing sealed (a secret-view's public facts) reads
    # as readable: numbers and the public-only marker, no name, secret or reason
    assert entries and all(e.client != "acme" and (not e.readable or _public_facts(e.details)) for e in entries)
    assert all(e.secret is None or "fw" not in e.secret for e in entries)
    assert not any(REASON in json.dumps(e.details) for e in entries)
