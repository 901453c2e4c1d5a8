"""The checkout authority, run with no key material at all.

The rows are made by the usual fixtures (an admin adds a client and a secret, grants an
engineer); then the authority is driven alone: its public-key checks are a stand-in that
reads only the rows it is given, and the acting engineer's seal is a fake that returns a
fixed details blob and a fixed signature. No client key, data key or private key reaches
it, yet it must refuse a caller without a grant before it reads the secret, write the
audit event before it answers, and answer with ciphertext only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from standins import DETAILS, SIGNATURE, Checks, FakeSeal, recorded_statements

from vault.authority.checkouts import CheckoutAuthority
from vault.authority.requests import (
    CHECKOUT,
    MISSING_TARGET,
    REASON_REQUIRED,
    REVEAL,
    STALE_CONTEXT,
    Caller,
    CheckoutRequest,
)
from vault.errors import AccessDenied, ConcurrentChange, InvalidInput, NotFound, UntrustedRecord
from vault.service.policies import Policy
from vault.storage import models as m

PW, USER, REASON = "authority-test-Pw-1", "fw-admin", "T-9 authority"
READS_THE_SECRET = re.compile(r"\b(secrets|secret_versions)\b", re.IGNORECASE)


@dataclasses.dataclass
class Scene:
    team: Any
    client_id: int
    tag: bytes
    ring: bytes
    alice: tuple[int, int]  # (id, key generation), granted
    bob: tuple[int, int]  # not granted
    admin: tuple[int, int]


def _one(team: Any, query: Any) -> Any:
    with team.admin.store.transaction() as s:
        return s.execute(query).one()


def _build(team: Any) -> tuple[Any, ...]:
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add("acme/fw01", password=PW, username=USER)
    team.engineer("alice")
    team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    team.admin.checkouts.reveal("acme/fw01", reason=REASON)  # the client's audit-key ring is made on first use
    client_id, ring = _one(team, select(m.Client.id, m.Client.audit_keys_blob))
    (tag,) = _one(team, select(m.Secret.name_tag))
    ids = {}
    for name in ("alice", "bob", team.admin.engineer_name):
        ids[name] = tuple(_one(team, select(m.Engineer.id, m.Engineer.key_generation).where(m.Engineer.name == name)))
    return client_id, tag, ring, ids["alice"], ids["bob"], ids[team.admin.engineer_name]


@pytest.fixture(scope="module")
def built(build_team: Any) -> Any:
    """The rows, made once per module and engine (the authority reads nothing but rows)."""
    return build_team(_build)


@pytest.fixture
def scene(built: Any, tmp_path: Any, pg_databases: Any) -> Iterator[Scene]:
    """A fresh copy of the built database for each test."""
    with built.restore(tmp_path, pg_databases) as team:
        yield Scene(team, *built.facts)


def _authority(scene: Scene, *, reason_required: bool = True) -> CheckoutAuthority:
    policy = Policy(reason_required, False, False, 60, None, True)
    return CheckoutAuthority(scene.team.admin.store, Checks(policy), scene.team.clock)


def _request(scene: Scene, who: tuple[int, int], **changes: Any) -> CheckoutRequest:
    request = CheckoutRequest(
        action=CHECKOUT,
        caller=Caller(*who),
        client_id=scene.client_id,
        slug_tag=None,
        name_tag=scene.tag,
        version=None,
        hold_seconds=None,
        has_reason=True,
        field_is_password=True,
        audit_keys_blob=scene.ring,
        known_key_versions=(),
        org_pin=b"",
    )
    return dataclasses.replace(request, **changes)


def _state(scene: Scene) -> tuple[Any, ...]:
    with scene.team.admin.store.transaction() as s:
        head = s.execute(select(m.AuditHead.seq, m.AuditHead.hash)).one()
        holds = s.scalars(select(m.Checkout.id)).all()
    return tuple(head), tuple(holds)


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    engine = scene.team.admin.store.engine
    with recorded_statements(engine) as seen:
        yield seen


def _walk(value: Any) -> Iterator[Any]:
    """Every leaf value of a response (dataclasses, named tuples, tuples)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _walk(getattr(value, f.name))
    elif isinstance(value, tuple):
        for item in value:
            yield from _walk(item)
    else:
        yield value


def test_a_caller_without_a_grant_is_refused_before_the_secret_is_read(scene: Scene, statements: list[str]) -> None:
    before = _state(scene)
    seal = FakeSeal(scene.team.admin.store)
    statements.clear()
    with pytest.raises(NotFound, match="no grant"):
        _authority(scene).checkout(_request(scene, scene.bob), seal)
    assert statements, "the authority read nothing"
    assert not [st for st in statements if READS_THE_SECRET.search(st)], statements
    assert seal.drafts == [] and seal.sealed == []
    assert _state(scene) == before


def test_an_engineer_cannot_name_a_client_by_its_slug_tag(scene: Scene, statements: list[str]) -> None:
    before = _state(scene)
    statements.clear()
    request = _request(scene, scene.alice, client_id=None, slug_tag=b"\x00" * 32)
    with pytest.raises(AccessDenied):
        _authority(scene).checkout(request, FakeSeal(scene.team.admin.store))
    assert not [st for st in statements if READS_THE_SECRET.search(st)], statements
    assert _state(scene) == before


def test_a_caller_of_another_key_generation_is_refused(scene: Scene) -> None:
    before = _state(scene)
    with pytest.raises(Exception, match="keys of 'alice' have changed"):
        _authority(scene).checkout(_request(scene, (scene.alice[0], scene.alice[1] + 1)), FakeSeal(None))
    assert _state(scene) == before


def test_the_event_is_written_and_committed_before_the_answer(scene: Scene) -> None:
    (head_before, holds_before) = _state(scene)
    seal = FakeSeal(scene.team.admin.store)
    response = _authority(scene).checkout(_request(scene, scene.alice), seal)
    assert response.seq == head_before[0] + 1
    # read on a connection of its own: committed, durably, before checkout() returned
    with scene.team.admin.store.engine.connect() as conn:
        row = conn.execute(select(m.AuditEvent).where(m.AuditEvent.seq == response.seq)).one()
        holds = conn.execute(select(m.Checkout.event_seq)).scalars().all()
    assert (row.action, row.engineer_id, row.client_id) == (CHECKOUT, scene.alice[0], scene.client_id)
    assert row.details_blob == DETAILS and row.signature == SIGNATURE and row.prev_hash == head_before[1]
    assert response.seq in holds and len(holds) == len(holds_before) + 1
    assert [(c, seq, a) for c, seq, a, _ in seal.sealed] == [(scene.client_id, response.seq, CHECKOUT)]
    assert set(seal.sealed[0][3]) == {"version", "exclusive", "until"}
    assert len(seal.drafts) == 1 and seal.drafts[0].seq == 0  # shown before the append numbered it
    assert dataclasses.replace(response, seq=0) == seal.drafts[0]


def test_the_answer_holds_ciphertext_only(scene: Scene) -> None:
    response = _authority(scene).checkout(_request(scene, scene.alice, action=REVEAL), FakeSeal(None))
    leaves = list(_walk(response))
    for plain in (PW, USER, "acme", "fw01"):
        for leaf in leaves:
            if isinstance(leaf, bytes):
                assert plain.encode() not in leaf
            elif isinstance(leaf, str):
                assert plain not in leaf or leaf in ("alice",), (plain, leaf)
    with scene.team.admin.store.transaction() as s:
        stored = s.scalars(select(m.SecretVersion)).one()
    assert response.version.password_blob == stored.password_blob
    assert response.version.wrapped_dek == stored.wrapped_dek
    assert response.sealed_key is not None and response.sealed_key.kind == "engineer"
    assert response.sealed_key.recipient_id == scene.alice[0]
    assert response.expires_us is None  # a reveal holds nothing
    assert "fw01" not in repr(response) and PW not in repr(response)


def test_a_stale_audit_ring_is_refused_as_retryable_and_nothing_is_written(scene: Scene) -> None:
    before = _state(scene)
    seal = FakeSeal(None)
    with pytest.raises(ConcurrentChange) as caught:
        _authority(scene).checkout(_request(scene, scene.alice, audit_keys_blob=b"an older ring"), seal)
    assert str(caught.value) == STALE_CONTEXT
    assert seal.sealed == [] and _state(scene) == before


def test_a_missing_reason_is_refused_when_the_policy_wants_one(scene: Scene) -> None:
    before = _state(scene)
    with pytest.raises(InvalidInput) as caught:
        _authority(scene).checkout(_request(scene, scene.alice, has_reason=False), FakeSeal(None))
    assert str(caught.value) == REASON_REQUIRED and _state(scene) == before
    response = _authority(scene, reason_required=False).checkout(
        _request(scene, scene.alice, has_reason=False), FakeSeal(None)
    )
    assert response.seq == before[0][0] + 1


def test_an_unknown_name_tag_is_refused_and_nothing_is_written(scene: Scene) -> None:
    before = _state(scene)
    with pytest.raises(NotFound) as caught:
        _authority(scene).checkout(_request(scene, scene.alice, name_tag=b"\x00" * 32), FakeSeal(None))
    assert str(caught.value) == MISSING_TARGET and _state(scene) == before


def test_the_keyholder_refusing_the_draft_writes_nothing(scene: Scene) -> None:
    before = _state(scene)
    seal = FakeSeal(None, refuse=True)
    with pytest.raises(UntrustedRecord):
        _authority(scene).checkout(_request(scene, scene.alice), seal)
    assert len(seal.drafts) == 1 and seal.sealed == []
    assert _state(scene) == before


def test_a_checkout_length_out_of_range_is_refused(scene: Scene) -> None:
    before = _state(scene)
    for seconds in (30, 8 * 24 * 3600):
        with pytest.raises(InvalidInput, match="bad checkout length"):
            _authority(scene).checkout(_request(scene, scene.alice, hold_seconds=seconds), FakeSeal(None))
    assert _state(scene) == before


def test_an_admin_names_the_client_by_slug_tag_and_gets_the_recovery_seal(scene: Scene) -> None:
    (slug_tag,) = _one(scene.team, select(m.Client.slug_tag))
    request = _request(scene, scene.admin, client_id=None, slug_tag=slug_tag)
    response = _authority(scene).checkout(request, FakeSeal(None))
    assert response.client.id == scene.client_id and response.grant is None
    assert response.sealed_key is not None and response.sealed_key.kind == "recovery"


# -- the client's context (ContextAuthority: one read, before a first checkout in a client) --

READS_THE_CLIENT_OR_LOG = re.compile(r"\b(clients|client_keys|client_key_seals|audit_events)\b", re.IGNORECASE)


def _context(scene: Scene, who: tuple[int, int], **changes: Any) -> Any:
    from vault.authority.checkout_context import ContextAuthority, ContextRequest

    request = ContextRequest(Caller(*who), scene.client_id, None, (), b"")
    authority = ContextAuthority(scene.team.admin.store, _authority(scene))
    return authority.read(dataclasses.replace(request, **changes))


def test_a_context_read_without_a_grant_is_refused_before_the_client_or_the_log_is_read(
    scene: Scene, statements: list[str]
) -> None:
    """bob holds no grant for acme: refused before any row of the client, its keys or the
    audit log is read (the head event's time comes with the caller only where a unit appends)."""
    before = _state(scene)
    statements.clear()
    with pytest.raises(NotFound, match="no grant"):
        _context(scene, scene.bob)
    assert statements, "the authority read nothing"
    assert not [st for st in statements if READS_THE_CLIENT_OR_LOG.search(st)], statements
    assert _state(scene) == before


def test_an_engineer_cannot_learn_a_context_by_slug_tag(scene: Scene, statements: list[str]) -> None:
    statements.clear()
    with pytest.raises(AccessDenied):
        _context(scene, scene.alice, client_id=None, slug_tag=b"\x00" * 32)
    assert not [st for st in statements if READS_THE_CLIENT_OR_LOG.search(st)], statements


def test_a_context_carries_sealed_keys_only_for_versions_not_held(scene: Scene) -> None:
    fresh = _context(scene, scene.alice)
    assert fresh.client.id == scene.client_id and [k.record.version for k in fresh.sealed_keys] == [1]
    held = _context(scene, scene.alice, known_key_versions=(1,))
    assert held.sealed_keys == ()
    assert PW.encode() not in repr(fresh).encode() and not any(
        isinstance(v, str) and v == "acme" for v in _walk(fresh)
    )
