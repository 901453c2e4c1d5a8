"""The grants' authority (an admin's grant and revoke), run with no key material.

``GrantAuthority`` is driven alone: public-key checks by the stand-in (rows only), a
recorder that notes events, and a fake seal that returns fixed signatures and copies. It
must refuse anyone but an admin before any row of the engineer, the client or a grant is
read, refuse ill-typed request fields before any SQL, show the keyholder the draft before
it writes anything, store exactly the signatures and copies the seal made, and answer
with the ledger rows as stored.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from standins import Checks, recorded_statements

from vault.authority.grant_requests import GRANT, NO_GRANT, REVOKE, GrantRequest, GrantRows, RevokeRequest, SealedCopy
from vault.authority.grants import GrantAuthority
from vault.authority.requests import Caller
from vault.crypto import signing
from vault.crypto.labels import LABEL_TAG_CLIENT_SLUG
from vault.errors import AccessDenied, InvalidInput, NotFound, UntrustedRecord
from vault.storage import models as m
from vault.storage.rows import GrantRow

READS_THE_TARGET = re.compile(r"\b(clients|client_keys|client_key_seals)\b|engineers\.name = ", re.IGNORECASE)
PIN = b"\x00" * 32
REVOKED, SIGNED, COPY = b"\x11" * 64, b"\x22" * 64, b"\x01fake sealed copy"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, Any]] = []

    def append(self, s: Any, action: str, *, client_id: Any, details: Any = None, sealed_with: Any = None) -> int:
        self.events.append((action, client_id, details))
        self.sealed_with = sealed_with
        return 3000 + len(self.events)


class FakeSeal:
    """The admin's seal without a key: fixed signatures and copies; it notes what it is asked."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.drafts: list[GrantRows] = []
        self.signed: list[GrantRow] = []

    def admit(self, draft: GrantRows) -> None:
        self.drafts.append(draft)
        if self.refuse:
            raise UntrustedRecord("the keyholder refuses this draft")

    def revocations(self, draft: GrantRows) -> tuple[bytes, ...]:
        return tuple(REVOKED for _ in draft.grants)

    def sign_grant(self, draft: GrantRows, grant: GrantRow) -> bytes:
        self.signed.append(grant)
        return SIGNED

    def seal_copies(self, draft: GrantRows) -> tuple[SealedCopy, ...]:
        return tuple(SealedCopy(k.record.version, COPY) for k in draft.client_keys)


def _ids(team: Any) -> dict[str, Any]:
    with team.admin.store.transaction() as s:
        out: dict[str, Any] = {e.name: Caller(e.id, e.key_generation) for e in s.scalars(select(m.Engineer))}
        out["acme"] = s.scalars(select(m.Client.id)).first()
    out["admin"] = out[team.admin.engineer_name]
    out["tag"] = signing.lookup_tag(_lookup_key(team), LABEL_TAG_CLIENT_SLUG, "acme")
    return out


def _lookup_key(team: Any) -> bytes:
    with team.admin.store.read() as s:
        return team.admin.keyholder.root_bundle(s).lookup_key


@pytest.fixture(scope="module")
def scene(module_team: Any) -> tuple[Any, dict[str, Any]]:
    module_team.admin.clients.add("acme", "Acme Ltd")
    module_team.engineer("alice")
    module_team.admin.grants.grant("alice", "acme")
    return module_team, _ids(module_team)


@pytest.fixture
def statements(scene: tuple[Any, dict[str, Any]]) -> Iterator[list[str]]:
    engine = scene[0].admin.store.engine
    with recorded_statements(engine) as seen:
        yield seen


def _authority(team: Any, recorder: Recorder) -> GrantAuthority:
    return GrantAuthority(team.admin.store, Checks(None), recorder, team.clock)


def _ledger(team: Any) -> tuple[Any, ...]:
    with team.admin.store.transaction() as s:
        grants = s.execute(select(m.Grant.id, m.Grant.revoked_at, m.Grant.signature).order_by(m.Grant.id)).all()
        seals = s.execute(select(m.ClientKeySeal.recipient_kind, m.ClientKeySeal.recipient_id)).all()
        events = s.scalar(select(func.count()).select_from(m.AuditEvent))
    return tuple(grants), tuple(sorted(seals)), events


@pytest.mark.parametrize("action", ["grant", "revoke"])
def test_an_engineer_is_refused_before_any_row_of_the_target_is_read(
    scene: tuple[Any, dict[str, Any]], statements: list[str], action: str
) -> None:
    team, ids = scene
    before, recorder, seal = _ledger(team), Recorder(), FakeSeal()
    alice = ids["alice"]
    request: Any = (
        GrantRequest(alice, "alice", ids["tag"], None, False, PIN)
        if action == "grant"
        else RevokeRequest(alice, "alice", ids["tag"], PIN)
    )
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        getattr(_authority(team, recorder), action)(request, seal)
    assert statements, "the authority read nothing"
    assert not [st for st in statements if READS_THE_TARGET.search(st)], statements
    assert seal.drafts == [] and recorder.events == [] and _ledger(team) == before


FORGED = {
    "engineer not a name": lambda i: ("grant", GrantRequest(i["admin"], 7, i["tag"], None, False, PIN)),
    "engineer name not valid": lambda i: ("revoke", RevokeRequest(i["admin"], "a b/c", i["tag"], PIN)),
    "slug given in place of its tag": lambda i: ("revoke", RevokeRequest(i["admin"], "alice", b"acme", PIN)),
    "slug tag as text": lambda i: ("grant", GrantRequest(i["admin"], "alice", "acme", None, False, PIN)),
    "until as text": lambda i: ("grant", GrantRequest(i["admin"], "alice", i["tag"], "tomorrow", False, PIN)),
    "until in the past": lambda i: ("grant", GrantRequest(i["admin"], "alice", i["tag"], 5, False, PIN)),
    "has_reason not a boolean": lambda i: ("grant", GrantRequest(i["admin"], "alice", i["tag"], None, b"T-1", PIN)),
    # the reason's text sent where only whether there is one may go
    "reason text in has_reason": lambda i: ("grant", GrantRequest(i["admin"], "alice", i["tag"], None, "T-1", PIN)),
    "caller id zero": lambda i: ("revoke", RevokeRequest(Caller(0, 0), "alice", i["tag"], PIN)),
    "short pin": lambda i: ("grant", GrantRequest(i["admin"], "alice", i["tag"], None, False, b"\x00")),
    "revoke sent as grant": lambda i: ("grant", RevokeRequest(i["admin"], "alice", i["tag"], PIN)),
    # an event of another action in the admin's name: a grant journalled as a revoke, or the reverse
    "grant with action revoke": lambda i: (
        "grant",
        dataclasses.replace(GrantRequest(i["admin"], "alice", i["tag"], None, False, PIN), action=REVOKE),
    ),
    "revoke with action grant": lambda i: (
        "revoke",
        dataclasses.replace(RevokeRequest(i["admin"], "alice", i["tag"], PIN), action=GRANT),
    ),
    "revoke with action client-view": lambda i: (
        "revoke",
        dataclasses.replace(RevokeRequest(i["admin"], "alice", i["tag"], PIN), action="client-view"),
    ),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_a_forged_request_field_is_refused_before_any_sql(
    scene: tuple[Any, dict[str, Any]], statements: list[str], case: str
) -> None:
    team, ids = scene
    recorder, seal = Recorder(), FakeSeal()
    action, request = FORGED[case](ids)
    statements.clear()
    with pytest.raises(InvalidInput):
        getattr(_authority(team, recorder), action)(request, seal)
    assert statements == [] and seal.drafts == [] and recorder.events == []


def test_a_refused_draft_writes_nothing(scene: tuple[Any, dict[str, Any]]) -> None:
    team, ids = scene
    before = _ledger(team)
    for action, request in (
        ("grant", GrantRequest(ids["admin"], "alice", ids["tag"], None, True, PIN)),
        ("revoke", RevokeRequest(ids["admin"], "alice", ids["tag"], PIN)),
    ):
        recorder, seal = Recorder(), FakeSeal(refuse=True)
        with pytest.raises(UntrustedRecord):
            getattr(_authority(team, recorder), action)(request, seal)
        assert len(seal.drafts) == 1 and recorder.events == [], action
        assert _ledger(team) == before, action


def test_a_grant_to_an_admin_or_to_nobody_is_refused(scene: tuple[Any, dict[str, Any]]) -> None:
    team, ids = scene
    recorder, seal = Recorder(), FakeSeal()
    with pytest.raises(InvalidInput, match="is an admin"):
        _authority(team, recorder).grant(
            GrantRequest(ids["admin"], team.admin.engineer_name, ids["tag"], None, False, PIN), seal
        )
    with pytest.raises(NotFound):
        _authority(team, recorder).revoke(RevokeRequest(ids["admin"], "nobody", ids["tag"], PIN), seal)
    assert seal.drafts == [] and recorder.events == []


def test_a_revoke_stores_the_keyholder_s_signatures_and_deletes_the_copies(team: Any) -> None:
    team.admin.clients.add("acme", "Acme Ltd")
    team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    ids = _ids(team)
    recorder, seal = Recorder(), FakeSeal()
    answer = _authority(team, recorder).revoke(RevokeRequest(ids["admin"], "alice", ids["tag"], PIN), seal)
    (draft,) = seal.drafts
    assert [g.revoked_at for g in draft.grants] == [None], "the draft showed the ledger before the change"
    assert [(g.revocation, g.revoked_by) for g in answer.grants] == [(REVOKED, ids["admin"].engineer_id)]
    assert answer.copies == () and answer.seq == 3001
    grant_id = draft.grants[0].id
    assert recorder.events == [("revoke", ids["acme"], {"engineer": "alice", "grants": 1, "grant_ids": [grant_id]})]
    with team.admin.store.transaction() as s:
        row = s.get(m.Grant, grant_id)
        assert row is not None and row.revocation == REVOKED
        assert not s.scalars(select(m.ClientKeySeal).where(m.ClientKeySeal.recipient_kind == "engineer")).all()
    with pytest.raises(NotFound, match=NO_GRANT):
        _authority(team, recorder).revoke(RevokeRequest(ids["admin"], "alice", ids["tag"], PIN), FakeSeal())


def test_a_grant_stores_the_keyholder_s_signature_over_its_event_and_its_copies(team: Any) -> None:
    team.admin.clients.add("acme", "Acme Ltd")
    team.engineer("alice")
    ids = _ids(team)
    recorder, seal = Recorder(), FakeSeal()
    until = int(team.clock().timestamp()) + 3600
    answer = _authority(team, recorder).grant(GrantRequest(ids["admin"], "alice", ids["tag"], until, True, PIN), seal)
    (draft,) = seal.drafts
    assert draft.new_grant is not None and draft.new_grant.signature is None and draft.new_grant.event_seq is None
    assert [k.kind for k in draft.client_keys] == ["recovery"], "the admin opens the recovery copy, never a grantee's"
    (signed,) = seal.signed
    assert signed.event_seq == answer.seq == 3001, "the grant is signed over the number of its own event"
    assert answer.new_grant is not None and answer.new_grant.signature == SIGNED and answer.copies == (1,)
    action, client, details = recorder.events[0]
    assert (action, client, details["engineer"], details["until"]) == ("grant", ids["acme"], "alice", until)
    assert "reason" not in details, "the reason is the keyholder's: the authority never holds its text"
    assert recorder.sealed_with is seal, "the journal seals the keyholder's part of the details with the facts"
    with team.admin.store.transaction() as s:
        copy = s.get(m.ClientKeySeal, (ids["acme"], 1, "engineer", ids["alice"].engineer_id))
        assert copy is not None and copy.blob == COPY


class WrongCopies(FakeSeal):
    def seal_copies(self, draft: GrantRows) -> tuple[SealedCopy, ...]:
        return (SealedCopy(7, COPY),)  # a version the grant does not hand out


def test_a_copy_of_a_version_not_handed_out_is_refused_and_nothing_is_written(team: Any) -> None:
    team.admin.clients.add("acme", "Acme Ltd")
    team.engineer("alice")
    ids = _ids(team)
    before = _ledger(team)
    with pytest.raises(InvalidInput):
        _authority(team, Recorder()).grant(
            GrantRequest(ids["admin"], "alice", ids["tag"], None, False, PIN), WrongCopies()
        )
    assert _ledger(team) == before
