"""Issue 14 step 3: audit events of format 3 (the engineer signs the request, the server signs
the event; docs/format.md §8.2) and the insiders who would forge them.

The chain built once per module and engine: format-2 events (a vault, a client and a secret,
eve granted it, bob enrolled then removed, the server key certified by the admin), then
format-3 events the server appends for requests eve and the admin signed. Each test restores
that database and plays one insider: a DBA who rewrites rows (with no key, or with an engineer's
certified key), or a compromised server (it holds the server key and signs what it likes).
``audit verify`` must name the first event each forgery touches.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from vault.authority import serverjournal
from vault.authority.requests import Caller, CheckoutRequest
from vault.crypto import chain
from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.errors import AuditUnavailable, ConcurrentChange, ConfigurationError, IntegrityError, InvalidInput
from vault.keyholder import auditverify as verify_module
from vault.service.serverkeys import certify_server_key, server_journal
from vault.storage import models as m
from vault.wire import codec, httpsig
from vault.wire.eventrequest import CONTENT_TYPE, RecordedRequest, keyid_of, record, route_path

HOST = "vault.example.com"
ADMIN = "root-admin"  # as tests/conftest.py


@dataclasses.dataclass(frozen=True)
class Facts:
    engineers: dict[str, tuple[int, int, bytes]]  # name -> (id, generation, signing seed)
    client_id: int
    other_client_id: int
    secret_id: int
    server_seed: bytes
    first_v3: int  # seq of the first format-3 event
    removal: int  # seq of bob's removal


def _me(vault: Any) -> tuple[int, int, bytes]:
    me = vault.keyholder.me()
    return me.engineer_id, me.key_generation, me.signing_seed


def _signed(
    team: Any,
    facts: Facts,
    who: str,
    action: str = "checkout",
    *,
    client_id: int | None = None,
    created: int | None = None,
    keyid: str | None = None,
    keep_body: bool = True,
) -> RecordedRequest:
    """A request ``who`` signs (RFC 9421, httpsig) for route checkouts.<action> over its envelope."""
    eid, gen, seed = facts.engineers[who]
    operation = f"checkouts.{action}"
    body = CheckoutRequest(
        action,
        Caller(eid, gen),
        facts.client_id if client_id is None else client_id,
        None,
        bytes(32),
        None,
        None,
        False,
        True,
        b"audit-key ring",
        (),
        bytes(32),
    )
    request_id = os.urandom(codec.REQUEST_ID_BYTES)
    envelope = codec.envelope(operation, body, request_id)
    path = route_path(operation)
    created = int(team.clock.now.timestamp()) if created is None else created
    headers = httpsig.sign_request(
        "POST", HOST, path, CONTENT_TYPE, envelope, SigningKey(seed), keyid or keyid_of(eid, gen), created=created
    )
    return record("POST", HOST, path, headers, envelope, request_id, keep_body=keep_body)


def _drop_request_index(team: Any) -> None:
    """What a compromised server with the database's credentials does before it appends a request
    twice: drop the unique index that refuses the second event (revision 0016). The verifier
    does not rely on the index: it names the repeat from the chain alone."""
    with team.admin.store.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ux_audit_events_request")


def _append(
    team: Any,
    facts: Facts,
    who: str,
    request: RecordedRequest,
    action: str = "checkout",
    *,
    client_id: int | None = None,
    key: ServerSigningKey | None = None,
    details: tuple[int, bytes] | None = None,
) -> int:
    """The server's append of one event for ``request`` (as ``who``), with the details the
    keyholder sealed (audit-key generation, blob); its seq."""
    eid, gen, _ = facts.engineers[who]
    journal = server_journal(team.admin, key or ServerSigningKey(1, SigningKey(facts.server_seed)))
    with team.admin.store.transaction() as s:
        event = journal.append(
            s,
            action,
            request,
            engineer_id=eid,
            key_generation=gen,
            client_id=facts.client_id if client_id is None else client_id,
            secret_id=facts.secret_id,
            key_version=details[0] if details else None,
            details_blob=details[1] if details else None,
        )
        return int(event.seq)


def _build(team: Any) -> Facts:
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("globex", "Globex")
    admin.secrets.add("acme/fw01", password="pw-1")
    eve = team.engineer("eve")
    admin.grants.grant("eve", "acme")
    bob = team.engineer("bob")
    engineers = {ADMIN: _me(admin), "eve": _me(eve), "bob": _me(bob)}
    admin.engineers.remove("bob")
    with admin.store.transaction() as s:
        client_id, other = sorted(int(i) for i in s.scalars(select(m.Client.id)))
        secret_id = int(s.scalar(select(m.Secret.id)))
        removal = int(s.scalar(select(m.AuditEvent.seq).where(m.AuditEvent.action == "engineer-remove")))
    server = ServerSigningKey.generate(1)
    certify_server_key(admin, 1, server.public)
    facts = Facts(engineers, client_id, other, secret_id, server.key.seed, 0, removal)
    first = _append(team, facts, "eve", _signed(team, facts, "eve"))
    facts = dataclasses.replace(facts, first_v3=first)
    team.clock.advance(seconds=5)
    _append(team, facts, ADMIN, _signed(team, facts, ADMIN, "reveal"), "reveal")
    for _ in range(6):
        team.clock.advance(seconds=1)
        _append(team, facts, "eve", _signed(team, facts, "eve"))
    return facts


@pytest.fixture(scope="module")
def built(build_team: Any) -> Any:
    return build_team(_build)


@pytest.fixture
def world(built: Any, tmp_path: Any, pg_databases: Any) -> Iterator[tuple[Any, Facts]]:
    with built.restore(tmp_path, pg_databases) as team:
        team.admin.engineers.unlock(ADMIN, team.passphrases[ADMIN])
        yield team, built.facts


def _head(team: Any) -> tuple[int, bytes]:
    with team.admin.store.transaction() as s:
        head = s.get(m.AuditHead, 1)
        return int(head.seq), bytes(head.hash)


def _refused_at(team: Any, seq: int, **options: Any) -> str:
    result = team.admin.audit.verify(**options)
    assert not result.ok, "the forgery verified"
    assert result.first_bad_seq == seq, result.problem
    assert result.problem is not None and result.problem.startswith(f"event {seq}:")
    return result.problem


def _rewrite(team: Any, seq: int, **values: Any) -> None:
    with team.admin.store.transaction() as s:
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == seq).values(**values))


def _rehash_last(team: Any, seq: int) -> None:
    """The DBA recomputes the hash of the last event after rewriting it (format 3) and moves the head."""
    vault_id = team.admin.vault_id()
    with team.admin.store.transaction() as s:
        e = s.get(m.AuditEvent, seq)
        fields = (e.at_us, e.engineer_id, e.key_generation, e.action, e.client_id, e.secret_id, e.key_version)
        e.hash = chain.event_hash_v3(
            vault_id,
            seq,
            *fields,
            e.details_blob,
            e.details_json,
            request_id=e.request_id,
            request_digest=e.request_digest,
            prev_hash=e.prev_hash,
        )
        head = s.get(m.AuditHead, 1)
        head.hash = e.hash


# -- the honest chain ---------------------------------------------------------------------------------


def test_a_chain_of_format_2_then_format_3_events_verifies_in_full_and_from_an_anchor(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    full = team.admin.audit.verify()
    assert full.ok, full.problem
    head = _head(team)
    assert full.head_seq == head[0] and full.head_seq == facts.first_v3 + 8  # the last: the admin's unlock
    with team.admin.store.transaction() as s:
        formats = [e.server_key_version for e in s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq))]
        before = s.get(m.AuditEvent, facts.first_v3 - 1)
        anchor3 = s.get(m.AuditEvent, facts.first_v3 + 2)
        from_2, from_3 = (before.seq, bytes(before.hash)), (anchor3.seq, bytes(anchor3.hash))
    v2, v3 = formats[: facts.first_v3 - 1], formats[facts.first_v3 - 1 : -1]
    assert set(v2) == {None} and set(v3) == {1} and len(v3) == 8 and formats[-1] is None
    for since in (from_2, from_3):
        result = team.admin.audit.verify(since=since)
        assert result.ok and result.first_seq == since[0] + 1, result.problem
    assert team.admin.audit.verify(workers=2).ok


def test_a_new_format_3_event_verifies_and_one_without_a_kept_body_too(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    _append(team, facts, "eve", _signed(team, facts, "eve", keep_body=False))
    _append(team, facts, "eve", _signed(team, facts, "eve"))
    assert team.admin.audit.verify().ok


# -- a DBA rewrites rows (no server key) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("at_us", 1),
        ("engineer_id", 1),
        ("key_generation", 7),
        ("action", "reveal"),
        ("client_id", 999),
        ("secret_id", 999),
        ("details_json", '{"x": 1}'),
        ("request_id", bytes(16)),
        ("request_digest", bytes(32)),
        ("server_key_version", None),
        ("prev_hash", bytes(32)),
        ("hash", bytes(32)),
        ("signature", bytes(64)),
        ("request_sig", "POST vault.example.com /v1/checkouts/checkout\nx\ny"),
        ("request_body", b"{}"),
    ],
)
def test_a_format_3_event_with_any_column_rewritten_is_named(world, column: str, value: Any) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    target = facts.first_v3 + 3
    _rewrite(team, target, **{column: value})
    _refused_at(team, target)


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("client_id", "other", "server signature is invalid"),
        ("action", "reveal", "server signature is invalid"),
        ("at_us", "later", "server signature is invalid"),
    ],
)
def test_a_format_3_event_rewritten_and_rehashed_fails_the_server_signature(world, column, value, problem) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    last = _append(team, facts, "eve", _signed(team, facts, "eve"))
    with team.admin.store.transaction() as s:
        e = s.get(m.AuditEvent, last)
        new = {"other": facts.other_client_id, "later": e.at_us + 10}.get(value, value)
    _rewrite(team, last, **{column: new})
    _rehash_last(team, last)
    assert problem in _refused_at(team, last)


def test_a_request_signature_moved_to_another_event_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    with team.admin.store.transaction() as s:
        moved = s.get(m.AuditEvent, facts.first_v3 + 2).request_sig
    _rewrite(team, facts.first_v3 + 4, request_sig=moved)
    assert "request signature is invalid" in _refused_at(team, facts.first_v3 + 4)


def test_a_request_body_swapped_for_another_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    with team.admin.store.transaction() as s:
        body = s.get(m.AuditEvent, facts.first_v3 + 2).request_body
    _rewrite(team, facts.first_v3 + 4, request_body=body)
    assert "body is not the one signed" in _refused_at(team, facts.first_v3 + 4)


def test_a_server_signature_by_an_uncertified_key_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    rogue = ServerSigningKey.generate(1)
    last = _append(team, facts, "eve", _signed(team, facts, "eve"))
    with team.admin.store.transaction() as s:
        e = s.get(m.AuditEvent, last)
        e.signature = rogue.sign_event(team.admin.vault_id(), last, e.hash)
    assert "server signature is invalid" in _refused_at(team, last)


def test_a_server_key_row_of_the_dba_without_a_certificate_signs_nothing(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    rogue = ServerSigningKey.generate(2)
    with team.admin.store.transaction() as s:
        s.add(
            m.ServerKey(version=2, signing_public=rogue.public, certified_at=0, certificate=bytes(64), state="active")
        )
    # the DBA (who holds eve's key too) appends with the rogue key: a server journal would refuse
    # nothing here, since it reads the row the DBA wrote; the verifier does not believe it
    seq = _append(team, facts, "eve", _signed(team, facts, "eve"), key=rogue)
    assert "server key 2, which is not certified" in _refused_at(team, seq)


def test_a_server_key_row_with_its_public_key_swapped_certificate_kept_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    """The DBA swaps the certified public key for their own and re-signs every format-3 event
    with it: the certificate no longer verifies, so the first format-3 event is refused."""
    team, facts = world
    rogue = ServerSigningKey.generate(1)
    vault_id = team.admin.vault_id()
    with team.admin.store.transaction() as s:
        s.get(m.ServerKey, 1).signing_public = rogue.public
        for e in s.scalars(select(m.AuditEvent).where(m.AuditEvent.server_key_version.is_not(None))):
            e.signature = rogue.sign_event(vault_id, e.seq, e.hash)
    assert "not certified" in _refused_at(team, facts.first_v3)


def test_a_server_journal_refuses_a_key_the_vault_does_not_hold_as_active(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    with pytest.raises(ConfigurationError):
        _append(team, facts, "eve", _signed(team, facts, "eve"), key=ServerSigningKey.generate(1))
    assert team.admin.audit.verify().ok


@pytest.mark.parametrize("state", ["retired", "revoked"])
def test_a_server_key_whose_row_is_no_longer_active_signs_no_event(world, state: str) -> None:  # type: ignore[no-untyped-def]
    """The key file's key, same public key, but its ``server_keys`` row no longer active (the key
    read under the head lock with the head's time): no event, nothing written."""
    team, facts = world
    head = team.admin.audit.head()
    request = _signed(team, facts, "eve")
    with team.admin.store.transaction() as s:
        s.execute(update(m.ServerKey).where(m.ServerKey.version == 1).values(state=state))
    with pytest.raises(ConfigurationError):
        _append(team, facts, "eve", request)
    assert team.admin.audit.head() == head


def test_a_server_key_row_with_another_public_key_signs_no_event(world) -> None:  # type: ignore[no-untyped-def]
    """The file's key of the active version, but the row names another public key: refused."""
    team, facts = world
    head = team.admin.audit.head()
    request = _signed(team, facts, "eve")
    with team.admin.store.transaction() as s:
        s.execute(update(m.ServerKey).where(m.ServerKey.version == 1).values(signing_public=os.urandom(32)))
    with pytest.raises(ConfigurationError):
        _append(team, facts, "eve", request)
    assert team.admin.audit.head() == head


@pytest.mark.parametrize("change", ["removed", "re-keyed"])
def test_an_engineer_removed_or_re_keyed_before_the_head_lock_gets_no_event(world, change: str) -> None:  # type: ignore[no-untyped-def]
    """On PostgreSQL an admin's removal (or the engineer's key rotation) can commit between the
    server's check of a request and its append: the event would carry a request signed outside
    its key's lifetime and fail verification for good. Under the head lock the engineer is read
    again and the append refused (retried as a concurrent change); nothing is written."""
    team, facts = world
    eid, gen, _ = facts.engineers["eve"]
    head = team.admin.audit.head()
    request = _signed(team, facts, "eve")
    journal = server_journal(team.admin, ServerSigningKey(1, SigningKey(facts.server_seed)))
    with pytest.raises(ConcurrentChange), team.admin.store.transaction() as s:
        if change == "removed":
            s.execute(update(m.Engineer).where(m.Engineer.id == eid).values(status="removed"))
        else:
            s.execute(update(m.Engineer).where(m.Engineer.id == eid).values(key_generation=gen + 1))
        journal.append(
            s,
            "checkout",
            request,
            engineer_id=eid,
            key_generation=gen,
            client_id=facts.client_id,
            secret_id=facts.secret_id,
        )
    assert team.admin.audit.head() == head
    assert team.admin.audit.verify().ok


# -- the compromised server (it holds the server key) ---------------------------------------------------


def test_a_request_appended_twice_is_named_near_or_far(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    request = _signed(team, facts, "eve")
    _append(team, facts, "eve", request)
    for _ in range(5):
        _append(team, facts, "eve", _signed(team, facts, "eve"))
    _drop_request_index(team)
    again = _append(team, facts, "eve", request)
    for workers in (1, 2):  # runs of a few events: the repeat is found across runs as within one
        assert "appended twice" in _refused_at(team, again, workers=workers)


def test_a_request_appended_twice_in_a_row_is_named(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    request = _signed(team, facts, "eve")
    _append(team, facts, "eve", request)
    _drop_request_index(team)
    again = _append(team, facts, "eve", request)
    assert "appended twice" in _refused_at(team, again)


def test_a_request_of_a_removed_engineer_signed_after_the_removal_is_refused(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The honest journal refuses to append for a removed engineer; a compromised server runs
    code that does not, and the verifier names the event."""
    team, facts = world
    with pytest.raises(ConcurrentChange):
        _append(team, facts, "bob", _signed(team, facts, "bob"))
    monkeypatch.setattr(serverjournal, "check_still_current", lambda *_: None)
    seq = _append(team, facts, "bob", _signed(team, facts, "bob"))
    assert seq > facts.removal
    assert f"retired at event {facts.removal}" in _refused_at(team, seq)


def test_a_request_recorded_under_another_action_is_refused(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """eve asked for a reveal; the server records a checkout (a hold) in her name. The honest
    journal refuses; a compromised server runs code that does not."""
    team, facts = world
    reveal = _signed(team, facts, "eve", "reveal")
    with pytest.raises(InvalidInput):
        _append(team, facts, "eve", reveal, "checkout")
    monkeypatch.setattr(serverjournal, "allows", lambda operation, action: True)
    seq = _append(team, facts, "eve", reveal, "checkout")
    assert "another operation" in _refused_at(team, seq)


def test_a_request_for_one_client_recorded_against_another_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    seq = _append(team, facts, "eve", _signed(team, facts, "eve"), client_id=facts.other_client_id)
    assert "another client" in _refused_at(team, seq)


def test_an_engineers_request_attributed_to_another_engineer_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    seq = _append(team, facts, ADMIN, _signed(team, facts, "eve"))
    assert "request signature is invalid" in _refused_at(team, seq)


def test_a_request_naming_another_keyid_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    admin_id, admin_gen, _ = facts.engineers[ADMIN]
    seq = _append(team, facts, "eve", _signed(team, facts, "eve", keyid=keyid_of(admin_id, admin_gen)))
    assert "another engineer's key" in _refused_at(team, seq)


def test_an_old_request_replayed_later_is_refused(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    old = _signed(team, facts, "eve")
    team.clock.advance(minutes=10)
    with pytest.raises(AuditUnavailable):  # the server's journal refuses to write it
        _append(team, facts, "eve", old)
    monkeypatch.setattr(serverjournal, "out_of_window", lambda at_us, sig: False)  # a compromised server's code
    seq = _append(team, facts, "eve", old)
    assert "old request replayed" in _refused_at(team, seq)


# -- the downgrade ------------------------------------------------------------------------------------


@pytest.mark.parametrize("unlocks", [0, 1, 3])
def test_a_format_2_event_after_a_format_3_one_is_refused(world, unlocks: int) -> None:  # type: ignore[no-untyped-def]
    """The DBA who holds eve's certified key appends an event signed by eve alone (format 2),
    bypassing the server: hash, link, time and eve's signature are all good. The chain ends
    with the admin's unlock (a local event, format 2, allowed); with a second one, an
    incremental check from it cannot tell the format from its anchor and verifies in full;
    with three more, a whole run of the verification (two events each here) is unlocks."""
    team, facts = world
    for _ in range(unlocks):
        team.unlocked(ADMIN).close()
    eid, gen, seed = facts.engineers["eve"]
    vault_id = team.admin.vault_id()
    with team.admin.store.transaction() as s:
        head = s.get(m.AuditHead, 1)
        last = s.get(m.AuditEvent, head.seq)
        seq, at = head.seq + 1, last.at_us
        fields = (at, eid, gen, "checkout", facts.client_id, facts.secret_id, None, None, None)
        digest = chain.event_hash(vault_id, seq, *fields, prev_hash=head.hash)
        s.add(
            m.AuditEvent(
                seq=seq,
                at_us=at,
                engineer_id=eid,
                key_generation=gen,
                action="checkout",
                client_id=facts.client_id,
                secret_id=facts.secret_id,
                prev_hash=head.hash,
                hash=digest,
                signature=chain.sign_event(seed, vault_id, seq, digest),
            )
        )
        head.seq, head.hash = seq, digest
    assert "a downgrade" in _refused_at(team, seq, workers=2)
    since = (seq - 1, _prev_hash(team, seq))
    assert "a downgrade" in _refused_at(team, seq, since=since)
    assert team.admin.audit.verify(since=since).first_seq == (1 if unlocks else seq)


def _prev_hash(team: Any, seq: int) -> bytes:
    with team.admin.store.transaction() as s:
        return bytes(s.get(m.AuditEvent, seq - 1).hash)


def test_the_embedded_journal_refuses_to_append_after_a_format_3_event(world) -> None:  # type: ignore[no-untyped-def]
    team, _ = world
    with pytest.raises(ConfigurationError):
        team.admin.clients.add("initech", "Initech")
    assert team.admin.audit.verify().ok


def test_an_anchor_of_format_3_whose_server_signature_was_replaced_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    anchor = facts.first_v3 + 2
    with team.admin.store.transaction() as s:
        e = s.get(m.AuditEvent, anchor)
        since = (anchor, bytes(e.hash))
        e.signature = ServerSigningKey.generate(1).sign_event(team.admin.vault_id(), anchor, e.hash)
    problem = _refused_at(team, anchor, since=since)
    assert "server signature is invalid" in problem and "(the anchor)" in problem


class _CountingPool(verify_module.ProcessPoolExecutor):  # type: ignore[misc]
    submitted = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        type(self).submitted += 1
        return super().submit(*args, **kwargs)


def test_worker_processes_check_format_3_and_name_a_repeat_or_a_downgrade_as_one_process_does(
    world, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    request = _signed(team, facts, "eve")
    _append(team, facts, "eve", request)
    for _ in range(8):
        _append(team, facts, "eve", _signed(team, facts, "eve"))
    monkeypatch.setattr(chain, "PARALLEL_THRESHOLD", 5)
    monkeypatch.setattr(verify_module, "ProcessPoolExecutor", _CountingPool)
    assert team.admin.audit.verify(workers=2).ok
    assert _CountingPool.submitted > 1  # the runs really went to worker processes
    _drop_request_index(team)
    again = _append(team, facts, "eve", request)
    serial, parallel = team.admin.audit.verify(workers=1), team.admin.audit.verify(workers=2)
    assert (serial.ok, serial.first_bad_seq) == (False, again) and "appended twice" in str(serial.problem)
    assert parallel == serial


# -- audit log over format 3 ------------------------------------------------------------------------


def test_the_audit_log_shows_format_3_events_and_refuses_a_forged_one(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    entries = team.admin.audit.log()
    shown = {e.seq: e for e in entries}
    assert set(range(facts.first_v3, facts.first_v3 + 8)) <= set(shown)
    assert shown[facts.first_v3].action == "checkout" and shown[facts.first_v3].engineer == "eve"
    assert team.admin.audit.log(limit=3)  # a stream from the middle: the first shown is format 3
    assert team.admin.audit.checkpoint()  # the head (the admin's unlock) after format-3 events
    target = facts.first_v3 + 3
    with team.admin.store.transaction() as s:
        e = s.get(m.AuditEvent, target)
        e.signature = ServerSigningKey.generate(1).sign_event(team.admin.vault_id(), target, e.hash)
    with pytest.raises(IntegrityError, match=f"event {target}: its server signature is invalid"):
        team.admin.audit.log()
    _rewrite(team, target, signature=None, request_sig="POST h /v1/checkouts/checkout\na\nb")
    with pytest.raises(IntegrityError, match=f"event {target}: "):
        team.admin.audit.log()


def test_details_sealed_by_the_keyholder_for_its_request_are_shown_and_only_with_that_request(world) -> None:  # type: ignore[no-untyped-def]
    """eve seals her reason under the client's audit key, bound to her request's id, before
    sending; the log opens it. The compromised server moves it to an event of another request
    (its own hash and signature are good): it no longer opens."""
    team, facts = world
    eve = team.unlocked("eve")
    request, other = _signed(team, facts, "eve"), _signed(team, facts, "eve")
    with eve.store.transaction() as s:
        client = s.get(m.Client, facts.client_id)
        sealed = eve.journal.audit_keys.seal_request_details(
            s, client, {"reason": "T-42"}, request.request_id, "checkout"
        )
    shown = _append(team, facts, "eve", request, details=sealed)
    moved = _append(team, facts, "eve", other, details=sealed)
    assert team.admin.audit.verify().ok  # the server signed both: only the details tell
    entries = {e.seq: e for e in team.admin.audit.log()}
    assert entries[shown].readable and entries[shown].details is not None
    assert entries[shown].details["reason"] == "T-42"
    assert not entries[moved].readable and "reason" not in (entries[moved].details or {})
    eve.close()


# -- the server's own events: auth-refused (docs/server.md §3, "Failed authentication") -------------


def _auth_refused(team: Any, facts: Facts, who: str = "eve", *, count: int = 20, window: int = 1_733_400_000) -> int:
    """The server's ``auth-refused`` about ``who`` (no request: the requests were refused); its seq."""
    eid = facts.engineers[who][0]
    journal = server_journal(team.admin, ServerSigningKey(1, SigningKey(facts.server_seed)))
    with team.admin.store.transaction() as s:
        event = journal.append_server_event(
            s, "auth-refused", engineer_id=eid, public={"count": count, "window_start": window}
        )
        return int(event.seq)


def _resign_last(team: Any, facts: Facts, seq: int) -> None:
    """A compromised server (it holds the server key) rehashes the last event and signs it again."""
    _rehash_last(team, seq)
    with team.admin.store.transaction() as s:
        e = s.get(m.AuditEvent, seq)
        e.signature = ServerSigningKey(1, SigningKey(facts.server_seed)).sign_event(team.admin.vault_id(), seq, e.hash)


def test_auth_refused_events_verify_in_full_from_an_anchor_in_workers_and_show_in_the_log(
    world, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Two windows' events about eve and one about bob (removed: an event about, not by, him),
    among eve's requests: verified without any request, in every way the chain is read."""
    team, facts = world
    first = _auth_refused(team, facts, "eve")
    _append(team, facts, "eve", _signed(team, facts, "eve"))
    second = _auth_refused(team, facts, "eve", window=1_733_400_600)
    about_bob = _auth_refused(team, facts, "bob", count=3)
    for _ in range(6):
        _append(team, facts, "eve", _signed(team, facts, "eve"))
    assert team.admin.audit.verify().ok
    with team.admin.store.transaction() as s:
        e = s.get(m.AuditEvent, first)
        anchor = (first, bytes(e.hash))
        shape = (e.key_generation, e.client_id, e.request_id, e.request_sig, e.server_key_version)
        assert shape == (0, None, None, None, 1)
        assert e.details_json == '{"count": 20, "window_start": 1733400000}'
    assert team.admin.audit.verify(since=anchor).ok
    assert team.admin.audit.verify(since=(first - 1, _hash_of(team, first - 1))).ok
    monkeypatch.setattr(chain, "PARALLEL_THRESHOLD", 3)
    assert team.admin.audit.verify(workers=2).ok
    shown = {e.seq: e for e in team.admin.audit.log()}
    assert [(shown[q].action, shown[q].engineer) for q in (first, second, about_bob)] == [
        ("auth-refused", "eve"),
        ("auth-refused", "eve"),
        ("auth-refused", "bob"),
    ]
    assert shown[first].details == {"count": 20, "window_start": 1_733_400_000} and shown[first].readable
    assert team.admin.audit.log(engineer="bob")[-1].seq == about_bob


def _hash_of(team: Any, seq: int) -> bytes:
    with team.admin.store.transaction() as s:
        return bytes(s.get(m.AuditEvent, seq).hash)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("details_json", '{"count": 2, "window_start": 1733400000}'),
        ("engineer_id", 1),
        ("key_generation", 1),
        ("action", "unlock"),
        ("signature", bytes(64)),
        ("server_key_version", None),
    ],
)
def test_an_auth_refused_event_rewritten_by_a_dba_is_named(world, column: str, value: Any) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    seq = _auth_refused(team, facts)
    _append(team, facts, "eve", _signed(team, facts, "eve"))
    _rewrite(team, seq, **{column: value})
    _refused_at(team, seq)


@pytest.mark.parametrize("column", ["details_json", "engineer_id"])
def test_an_auth_refused_event_rewritten_and_rehashed_by_a_dba_fails_the_server_signature(world, column: str) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    seq = _auth_refused(team, facts)
    new = {"details_json": '{"count": 99, "window_start": 1733400000}', "engineer_id": facts.engineers[ADMIN][0]}
    _rewrite(team, seq, **{column: new[column]})
    _rehash_last(team, seq)
    assert "server signature is invalid" in _refused_at(team, seq)


def test_a_dba_cannot_turn_an_engineers_event_into_the_servers_own(world) -> None:  # type: ignore[no-untyped-def]
    """eve's checkout made to look like an auth-refused (its request dropped, which would hide
    it from the request checks): the server's signature no longer covers it."""
    team, facts = world
    seq = _append(team, facts, "eve", _signed(team, facts, "eve"))
    _rewrite(
        team,
        seq,
        action="auth-refused",
        key_generation=0,
        client_id=None,
        secret_id=None,
        details_json='{"count": 20, "window_start": 1733400000}',
        request_id=None,
        request_digest=None,
        request_sig=None,
        request_body=None,
    )
    _rehash_last(team, seq)
    assert "server signature is invalid" in _refused_at(team, seq)


def test_an_auth_refused_event_signed_by_an_uncertified_key_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    seq = _auth_refused(team, facts)
    with team.admin.store.transaction() as s:
        e = s.get(m.AuditEvent, seq)
        e.signature = ServerSigningKey.generate(1).sign_event(team.admin.vault_id(), seq, e.hash)
    assert "server signature is invalid" in _refused_at(team, seq)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"key_generation": 1}, "no key generation"),
        ({"engineer_id": None}, "names one engineer"),
        ({"client_id": 1}, "no client, secret or sealed details"),
        ({"details_blob": b"sealed"}, "no client, secret or sealed details"),
        ({"request_id": bytes(16)}, "keeps no request"),
        ({"request_sig": "POST h /v1/checkouts/checkout\na\nb"}, "keeps no request"),
        ({"details_json": '{"count": 20}'}, "not the server's auth-refused facts"),
        ({"details_json": '{"count": 20, "window_start": 1, "reason": "x"}'}, "not the server's auth-refused facts"),
        ({"details_json": '{"count": -1, "window_start": 1}'}, "not the server's auth-refused facts"),
        ({"details_json": '{"count": true, "window_start": 1}'}, "not the server's auth-refused facts"),
        ({"details_json": "[20]"}, "not the server's auth-refused facts"),
        ({"details_json": None}, "not the server's auth-refused facts"),
    ],
)
def test_an_auth_refused_event_out_of_shape_is_named_though_the_server_signed_it(world, values, problem) -> None:  # type: ignore[no-untyped-def]
    """Its shape is fixed: even the server's signature does not make another one acceptable."""
    team, facts = world
    seq = _auth_refused(team, facts)
    _rewrite(team, seq, **values)
    _resign_last(team, facts, seq)
    assert problem in _refused_at(team, seq)


def test_a_server_journal_appends_on_its_own_only_the_servers_actions(world) -> None:  # type: ignore[no-untyped-def]
    team, facts = world
    journal = server_journal(team.admin, ServerSigningKey(1, SigningKey(facts.server_seed)))
    with pytest.raises(InvalidInput), team.admin.store.transaction() as s:
        journal.append_server_event(s, "checkout", engineer_id=facts.engineers["eve"][0], public={"count": 1})
    with pytest.raises(InvalidInput):  # and no request's route appends auth-refused
        _append(team, facts, "eve", _signed(team, facts, "eve"), "auth-refused")
    assert team.admin.audit.verify().ok
