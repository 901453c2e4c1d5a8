"""Check-in, break and the listing of checkouts, authority half, with no key material at all.

The rows come from the usual fixtures (an admin adds a client and a secret, grants alice,
alice checks the secret out); then ``CheckinAuthority`` and ``CheckoutListAuthority`` are
driven alone, with the public-key stand-ins of ``test_checkout_authority`` and a seal that
returns fixed blobs. They must refuse a caller before reading the secret, refuse stale or
forged inputs writing nothing, store only the ciphertext they are given, and list in a
read unit (no write transaction at all).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from standins import DETAILS, SIGNATURE, Checks, FakeSeal, recorded_statements

from vault.authority.checkins import CheckinAuthority
from vault.authority.checkout_list import CheckoutListAuthority
from vault.authority.checkouts import CheckoutAuthority
from vault.authority.requests import (
    BREAK,
    CHECKIN,
    NOT_CHECKED_OUT,
    NOT_HELD,
    ONLY_ADMINS_BREAK,
    SECRET_UPDATE,
    STALE_CONTEXT,
    Caller,
    ListRequest,
    NewVersion,
    ReleaseRequest,
    WriteKey,
)
from vault.errors import AccessDenied, ConcurrentChange, InvalidInput, Locked, NotFound, UntrustedRecord
from vault.service.policies import Policy
from vault.storage import models as m

PW, USER, REASON = "checkin-authority-Pw-1", "fw-admin", "T-9 checkin authority"
READS_THE_SECRET = re.compile(r"\b(secrets|secret_versions|checkouts)\b", re.IGNORECASE)
NEW = NewVersion(
    2, 1, b"\x01\x02\x00\x00\x00\x01wrapped by the keyholder", b"\x01new password blob", b"\x01new metadata blob"
)


class ReleaseChecks(Checks):
    def retention(self, s: Any) -> int:
        return 10

    def current_key_version(self, s: Any, client: Any) -> int:
        return int(client.current_key_version)  # the column (the real check verifies signatures)


class ReleaseSeal(FakeSeal):
    """A seal without a key: a fixed new version; it records the write key it was shown."""

    def __init__(self, new: NewVersion = NEW, **options: Any) -> None:
        super().__init__(None, **options)
        self.new, self.writes = new, []  # type: ignore[var-annotated]

    def new_version(self, write: WriteKey) -> NewVersion:
        self.writes.append(write)
        return self.new


@dataclasses.dataclass
class Scene:
    team: Any
    client_id: int
    slug_tag: bytes
    tag: bytes
    ring: bytes
    alice: tuple[int, int]  # granted, holds the secret
    bob: tuple[int, int]  # not granted
    admin: tuple[int, int]


def _one(team: Any, query: Any) -> Any:
    with team.admin.store.transaction() as s:
        return s.execute(query).one()


def _build(team: Any) -> tuple[Any, ...]:
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add("acme/fw01", password=PW, username=USER)
    alice = team.engineer("alice")
    team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    alice.checkouts.checkout("acme/fw01", reason=REASON)  # the audit-key ring is made, and a hold
    client_id, slug_tag, ring = _one(team, select(m.Client.id, m.Client.slug_tag, m.Client.audit_keys_blob))
    (tag,) = _one(team, select(m.Secret.name_tag))
    ids = {}
    for name in ("alice", "bob", team.admin.engineer_name):
        ids[name] = tuple(_one(team, select(m.Engineer.id, m.Engineer.key_generation).where(m.Engineer.name == name)))
    return client_id, slug_tag, tag, ring, ids["alice"], ids["bob"], ids[team.admin.engineer_name]


@pytest.fixture(scope="module")
def built(build_team: Any) -> Any:
    """The rows, made once per module and engine (the authority reads nothing but rows)."""
    return build_team(_build)


@pytest.fixture
def scene(built: Any, tmp_path: Any, pg_databases: Any) -> Iterator[Scene]:
    """A fresh copy of the built database for each test."""
    with built.restore(tmp_path, pg_databases) as team:
        yield Scene(team, *built.facts)


def _authority(scene: Scene) -> CheckinAuthority:
    checks = ReleaseChecks(Policy(True, False, False, 60, None, True))
    return CheckinAuthority(CheckoutAuthority(scene.team.admin.store, checks, scene.team.clock), checks, checks)


def _lister(scene: Scene) -> CheckoutListAuthority:
    checks = ReleaseChecks(Policy(True, False, False, 60, None, True))
    store = scene.team.admin.store
    return CheckoutListAuthority(store, CheckoutAuthority(store, checks, scene.team.clock), scene.team.clock)


def _request(scene: Scene, who: tuple[int, int], **changes: Any) -> ReleaseRequest:
    admin = who == scene.admin
    request = ReleaseRequest(
        action=CHECKIN,
        caller=Caller(*who),
        client_id=None if admin else scene.client_id,
        slug_tag=scene.slug_tag if admin else None,
        name_tag=scene.tag,
        new_value=False,
        audit_keys_blob=scene.ring,
        known_key_versions=(),
        org_pin=b"",
    )
    return dataclasses.replace(request, **changes)


def _state(scene: Scene) -> tuple[Any, ...]:
    with scene.team.admin.store.transaction() as s:
        head = tuple(s.execute(select(m.AuditHead.seq, m.AuditHead.hash)).one())
        open_holds = s.scalars(select(m.Checkout.id).where(m.Checkout.released_at.is_(None))).all()
        versions = s.execute(select(m.SecretVersion.secret_id, m.SecretVersion.version)).all()
        counts = s.scalars(select(m.ClientKey.encryptions)).all()
    return head, tuple(open_holds), tuple(map(tuple, versions)), tuple(counts)


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    engine = scene.team.admin.store.engine
    with recorded_statements(engine) as seen:
        yield seen


def _events_after(scene: Scene, seq: int) -> list[Any]:
    with scene.team.admin.store.engine.connect() as conn:  # a connection of its own: committed rows only
        return list(conn.execute(select(m.AuditEvent).where(m.AuditEvent.seq > seq).order_by(m.AuditEvent.seq)))


# -- refused callers, before the target is read ------------------------------------------------------------


@pytest.mark.parametrize("action", [CHECKIN, BREAK])
def test_a_caller_without_a_grant_is_refused_before_the_secret_is_read(
    scene: Scene, statements: list[str], action: str
) -> None:
    before = _state(scene)
    seal = ReleaseSeal()
    statements.clear()
    with pytest.raises((NotFound, AccessDenied)):
        _authority(scene).release(_request(scene, scene.bob, action=action), seal)
    assert statements, "the authority read nothing"
    assert not [st for st in statements if READS_THE_SECRET.search(st)], statements
    assert seal.drafts == [] and seal.sealed == [] and _state(scene) == before


def test_an_engineer_with_a_grant_cannot_break_and_nothing_of_the_secret_is_read(
    scene: Scene, statements: list[str]
) -> None:
    before = _state(scene)
    statements.clear()
    with pytest.raises(AccessDenied) as caught:
        _authority(scene).release(_request(scene, scene.alice, action=BREAK), ReleaseSeal())
    assert str(caught.value) == ONLY_ADMINS_BREAK
    assert not [st for st in statements if READS_THE_SECRET.search(st)], statements
    assert _state(scene) == before


def test_a_caller_of_another_key_generation_is_refused(scene: Scene) -> None:
    before = _state(scene)
    with pytest.raises(Locked, match="keys of 'alice' have changed"):
        _authority(scene).release(_request(scene, (scene.alice[0], scene.alice[1] + 1)), ReleaseSeal())
    assert _state(scene) == before


def test_a_break_with_a_new_value_is_refused(scene: Scene) -> None:
    with pytest.raises(InvalidInput):
        _authority(scene).release(_request(scene, scene.admin, action=BREAK, new_value=True), ReleaseSeal())


# -- stale and forged inputs -----------------------------------------------------------------------------


def test_a_stale_audit_ring_is_refused_as_retryable_and_nothing_is_written(scene: Scene) -> None:
    before = _state(scene)
    seal = ReleaseSeal()
    with pytest.raises(ConcurrentChange) as caught:
        _authority(scene).release(_request(scene, scene.alice, audit_keys_blob=b"an older ring"), seal)
    assert str(caught.value) == STALE_CONTEXT and seal.drafts == [] and _state(scene) == before


def test_an_unknown_name_tag_is_refused_and_nothing_is_written(scene: Scene) -> None:
    before = _state(scene)
    with pytest.raises(NotFound):
        _authority(scene).release(_request(scene, scene.alice, name_tag=b"\x00" * 32), ReleaseSeal())
    assert _state(scene) == before


def test_the_keyholder_refusing_the_draft_writes_nothing(scene: Scene) -> None:
    before = _state(scene)
    seal = ReleaseSeal(refuse=True)
    with pytest.raises(UntrustedRecord):
        _authority(scene).release(_request(scene, scene.alice, new_value=True), seal)
    assert len(seal.drafts) == 1 and seal.writes == [] and seal.sealed == []
    assert _state(scene) == before


@pytest.mark.parametrize("wrong", [{"version": 3}, {"version": 1}, {"key_version": 2}])
def test_a_new_version_not_the_one_asked_for_is_refused_and_nothing_is_written(
    scene: Scene, wrong: dict[str, int]
) -> None:
    before = _state(scene)
    with pytest.raises(InvalidInput, match="not the one this request asked for"):
        _authority(scene).release(
            _request(scene, scene.alice, new_value=True), ReleaseSeal(dataclasses.replace(NEW, **wrong))
        )
    assert _state(scene) == before


def test_nothing_held_and_no_new_value_is_refused_before_the_keyholder_is_asked(scene: Scene) -> None:
    _authority(scene).release(_request(scene, scene.alice), ReleaseSeal())  # alice's hold released
    before = _state(scene)
    seal = ReleaseSeal()
    with pytest.raises(NotFound) as caught:
        _authority(scene).release(_request(scene, scene.alice), seal)
    assert str(caught.value) == NOT_HELD and seal.drafts == [] and _state(scene) == before
    with pytest.raises(NotFound) as caught:
        _authority(scene).release(_request(scene, scene.admin, action=BREAK), seal)
    assert str(caught.value) == NOT_CHECKED_OUT and _state(scene) == before


# -- what is written, and when ---------------------------------------------------------------------------


def test_a_check_in_releases_the_hold_and_commits_its_event_before_the_answer(scene: Scene) -> None:
    (head, _holds, versions, counts) = _state(scene)
    seal = ReleaseSeal()
    response = _authority(scene).release(_request(scene, scene.alice), seal)
    assert (response.seq, response.released, response.version, response.holders) == (head[0] + 1, 1, 1, ())
    (e,) = _events_after(scene, head[0])
    assert (e.action, e.engineer_id, e.details_blob, e.signature) == (CHECKIN, scene.alice[0], DETAILS, SIGNATURE)
    assert [(a, f) for _c, _s, a, f in seal.sealed] == [(CHECKIN, {"new_version": False, "released": 1})]
    assert len(seal.drafts) == 1 and seal.drafts[0].version.version == 1 and seal.writes == []
    assert _state(scene)[1:] == ((), versions, counts)


def test_a_check_in_with_a_new_value_stores_the_keyholder_s_ciphertext_as_given(scene: Scene) -> None:
    (head, _holds, _versions, counts) = _state(scene)
    seal = ReleaseSeal()
    response = _authority(scene).release(_request(scene, scene.alice, new_value=True), seal)
    assert (response.version, response.must_change, response.released) == (2, False, 1)
    (write,) = seal.writes
    assert (write.key_version, write.next_version) == (1, 2)
    assert write.sealed is not None and write.sealed.kind == "engineer" and write.sealed.recipient_id == scene.alice[0]
    with scene.team.admin.store.engine.connect() as conn:
        row = conn.execute(select(m.SecretVersion).where(m.SecretVersion.version == 2)).one()
        secret = conn.execute(select(m.Secret)).one()
    assert (row.wrapped_dek, row.password_blob, row.metadata_blob) == (
        NEW.wrapped_dek,
        NEW.password_blob,
        NEW.metadata_blob,
    )
    assert (row.created_by, secret.current_version, secret.must_change) == (scene.alice[0], 2, False)
    assert [e.action for e in _events_after(scene, head[0])] == [SECRET_UPDATE, CHECKIN]
    assert [(a, f) for _c, _s, a, f in seal.sealed] == [
        (SECRET_UPDATE, {"version": 2, "password_changed": True}),
        (CHECKIN, {"new_version": True, "released": 1}),
    ]
    assert _state(scene)[3] == (counts[0] + 1,)  # the encryption under the client key is counted


def test_an_admin_break_releases_every_hold_and_records_their_holders(scene: Scene) -> None:
    (head, _holds, versions, _counts) = _state(scene)
    seal = ReleaseSeal()
    response = _authority(scene).release(_request(scene, scene.admin, action=BREAK), seal)
    assert (response.released, response.holders) == (1, ("alice",))
    assert [e.action for e in _events_after(scene, head[0])] == [BREAK]
    assert [(a, f) for _c, _s, a, f in seal.sealed] == [(BREAK, {"holders": ["alice"]})]
    assert seal.drafts[0].sealed_key is not None and seal.drafts[0].sealed_key.kind == "recovery"
    assert _state(scene)[1:3] == ((), versions)


# -- the listing -----------------------------------------------------------------------------------------


def _list_request(scene: Scene, who: tuple[int, int], known: tuple[tuple[int, int], ...] = ()) -> ListRequest:
    return ListRequest(Caller(*who), known, bytes(32))  # a pin the vault does not know: no chain


@pytest.mark.parametrize("pin", [b"", bytes(31), bytes(33)])
def test_the_listing_refuses_a_malformed_pin_before_any_sql(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, pin: bytes
) -> None:
    def no_read(*_args: Any) -> Any:
        raise AssertionError("the listing read before checking its fields")

    monkeypatch.setattr(scene.team.admin.store, "read", no_read)
    with pytest.raises(InvalidInput, match="organisation key"):
        _lister(scene).list(ListRequest(Caller(*scene.alice), (), pin))


def test_the_listing_reads_without_a_write_transaction(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    store = scene.team.admin.store

    def no_write(*_args: Any) -> Any:
        raise AssertionError("the listing opened a write unit of work")

    monkeypatch.setattr(store, "transaction", no_write)
    monkeypatch.setattr(store, "unit", no_write)
    response = _lister(scene).list(_list_request(scene, scene.admin))
    assert [c.holder for c in response.checkouts] == ["alice"]


def test_an_engineer_is_listed_their_own_checkouts_and_an_admin_all(scene: Scene) -> None:
    assert [c.engineer_id for c in _lister(scene).list(_list_request(scene, scene.alice)).checkouts] == [scene.alice[0]]
    assert _lister(scene).list(_list_request(scene, scene.bob)).checkouts == ()
    listed = _lister(scene).list(_list_request(scene, scene.admin))
    assert [(c.client.id, c.holder, c.exclusive) for c in listed.checkouts] == [(scene.client_id, "alice", False)]


def test_the_listing_returns_the_client_keys_not_held_and_only_ciphertext(scene: Scene) -> None:
    response = _lister(scene).list(_list_request(scene, scene.alice))
    assert [(k.kind, k.recipient_id, k.record.version) for k in response.sealed_keys] == [
        ("engineer", scene.alice[0], 1)
    ]
    known = _lister(scene).list(_list_request(scene, scene.alice, ((scene.client_id, 1),)))
    assert known.sealed_keys == ()
    for leaf in (response.checkouts[0].client.slug_blob, response.checkouts[0].version.metadata_blob):
        for plain in (PW, USER, "acme", "fw01"):
            assert plain.encode() not in leaf
    assert "fw01" not in repr(response) and "acme" not in repr(response)


def test_the_listing_refuses_a_caller_of_another_key_generation(scene: Scene) -> None:
    with pytest.raises(Locked):
        _lister(scene).list(_list_request(scene, (scene.alice[0], scene.alice[1] + 1)))
