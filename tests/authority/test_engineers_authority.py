"""The engineers' authority, run with no key material at all.

A vault with an admin and an active engineer is made once per module (each test acts on
engineers of its own names); then ``EngineerAuthority`` is driven alone: its public-key
checks are a stand-in that reads only the rows it is given, its recorder notes the events
instead of signing them, the carry-over is a stand-in, and the keyholder's seal is a fake
that returns fixed blobs. No private key, root bundle or invite secret reaches it, yet it
must refuse an engineer's admin operation before it reads any row of the engineer acted
on, refuse a forged request before any SQL, store only what the seal made for the draft
it showed, and append the event before it answers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import undefer
from standins import recorded_statements

from vault import Vault
from vault.authority.engineer_removal import EngineerRemovalAuthority
from vault.authority.engineer_requests import (
    CONFIRM,
    ENROLL,
    INVITE,
    LIST,
    PENDING,
    RELOCK,
    REMOVE,
    ROTATE,
    UNLOCK,
    UNLOCK_FAILED,
    WHOAMI,
    CarriedRow,
    CarryPlan,
    Certification,
    ConfirmRequest,
    EngineerAnswer,
    EnrollRequest,
    EnrolmentDraft,
    InvitationDraft,
    InviteRequest,
    KeyRecordDraft,
    KeyRecordRequest,
    ListRequest,
    NewKeys,
    PassphraseRequest,
    PendingRows,
    RekeyDraft,
    Rekeyed,
    Removal,
    RemovalDraft,
    RemoveRequest,
    RotateRequest,
    SignedInvitation,
    UnlockRequest,
)
from vault.authority.engineer_rotation import EngineerRotationAuthority
from vault.authority.engineers import EngineerAuthority
from vault.authority.requests import Caller
from vault.crypto import signing
from vault.crypto.keyrecord import FLOOR
from vault.errors import (
    AccessDenied,
    AlreadyExists,
    EnrolmentError,
    InvalidInput,
    Locked,
    NotFound,
    UntrustedRecord,
)
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "authority test admin passphrase"
CARRIED = CarriedRow(7, 3, b"\x01slug ciphertext", None)  # ids and ciphertext: no slug crosses
SIG, SEAL, RECORD, MAC = b"\x5a" * 64, b"\x01sealed invite secret", b"\x02key record", b"\x03mac"
PUB_A, PUB_B = b"\x11" * 32, b"\x22" * 32
# A statement that reads the engineer acted on (by name), their keys, the recovery key or its copies
READS_THE_TARGET = re.compile(
    r"engineers\.name\s*=|\b(engineer_keys|root_seals)\b|root_keys\.recovery_public", re.IGNORECASE
)
_names = (f"eng{n}" for n in itertools.count())


class Checks:
    """Public-key checks that look at the rows only (the real ones verify signatures)."""

    def organisation_key(self, s: Any, current: bytes) -> None:
        pass

    def certificate(self, s: Any, row: Any) -> None:
        if row.certificate is None:
            raise UntrustedRecord("no certificate")


class Recorder:
    """Notes each event appended, in the unit of work (nothing signed: no key here)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], Any]] = []
        self.unsigned: list[int] = []  # the engineers of the unsigned events

    def append(
        self, s: Any, action: str, *, public: dict[str, Any], enrolment: Any = None, unsigned_by: int | None = None
    ) -> int:
        self.events.append((action, public, enrolment))
        if unsigned_by is not None:
            self.unsigned.append(unsigned_by)
        return 5000 + len(self.events)


class Carry:
    """A carry-over stand-in: it notes when it is asked, after what."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.calls: list[tuple[str, int, int]] = []  # (what, engineer id, events appended before)

    def plan(self, s: Any, engineer_id: int, root_version: int) -> CarryPlan:
        self.calls.append(("plan", engineer_id, len(self.recorder.events)))
        return CarryPlan(ADMIN, (CARRIED,), ())

    def carry(self, s: Any, engineer_id: int) -> None:
        self.calls.append(("carry", engineer_id, len(self.recorder.events)))


class FakeSeal:
    """The keyholder's seal without a key: it notes each draft, returns fixed values."""

    def __init__(self, recorder: Recorder, *, refuse: bool = False, **made: Any) -> None:
        self.recorder, self.refuse, self.made = recorder, refuse, made
        self.drafts: list[Any] = []
        self.engineer_id = 0

    def _shown(self, draft: Any) -> None:
        self.drafts.append(draft)
        if self.refuse:
            raise UntrustedRecord("the keyholder refuses this draft")

    def sign_invitation(self, draft: InvitationDraft) -> SignedInvitation:
        self._shown(draft)
        return self.made.get("signed") or SignedInvitation(SEAL, 0, draft.identity.me.id, SIG)

    def enrol(self, draft: EnrolmentDraft) -> NewKeys:
        self._shown(draft)
        self.engineer_id = draft.engineer.id
        return self.made.get("keys") or NewKeys(draft.engineer.key_generation + 1, PUB_A, PUB_B, RECORD, MAC)

    def certify(self, draft: PendingRows) -> Certification:
        self._shown(draft)
        root_seal = b"\x04root copy" if draft.engineer.role == "admin" else None
        return self.made.get("cert") or Certification(1_800_000_000, SIG, SIG, draft.root.version, root_seal)

    def rekey(self, draft: RekeyDraft) -> Rekeyed:
        self._shown(draft)
        return Rekeyed(None if draft.key_recorded else SIG)

    def remove(self, draft: RemovalDraft) -> Removal:
        self._shown(draft)
        if "removal" in self.made:
            return self.made["removal"]  # type: ignore[no-any-return]
        cert = (1_800_000_000, SIG) if draft.recertify else (None, None)
        return Removal(tuple((g.id, SIG) for g in draft.grants), *cert)

    def relock(self, draft: KeyRecordDraft) -> bytes:
        self._shown(draft)
        return self.made.get("record") or b"\x09relocked record"  # type: ignore[no-any-return]

    def event_seed(self) -> bytes:
        raise AssertionError("the authority never asks for a key")


@dataclasses.dataclass
class Scene:
    vault: Vault
    admin: Caller
    engineer: Caller  # an active engineer, not an admin
    org: bytes
    clock: Any

    def authority(self, recorder: Recorder, carry: Carry | None = None) -> EngineerAuthority:
        return EngineerAuthority(self.vault.store, Checks(), recorder, carry or Carry(recorder), self.clock)

    def row(self, name: str) -> m.Engineer | None:
        with self.vault.store.transaction() as s:
            row = s.scalars(select(m.Engineer).options(undefer("*")).where(m.Engineer.name == name)).first()
            if row is not None:
                s.expunge(row)
            return row

    def head(self) -> int:
        with self.vault.store.transaction() as s:
            return int(s.scalar(select(m.AuditHead.seq)) or 0)


@pytest.fixture(scope="module")
def scene(module_db_url: str) -> Iterator[Scene]:
    """A vault with an admin and an active engineer, made once per module and engine."""
    url = module_db_url
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def clock() -> dt.datetime:
        return now

    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FLOOR)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    code = admin.engineers.invite("worker")
    mine = Vault.open(url, engineer="worker", clock=clock, kdf_params=FLOOR, sessions=MemorySessionStore())
    admin.engineers.confirm("worker", mine.engineers.enroll("worker", code, "worker passphrase"))
    mine.close()
    with admin.store.transaction() as s:
        ids = {name: id_ for name, id_ in s.execute(select(m.Engineer.name, m.Engineer.id))}
        org = s.scalar(select(m.VaultInfo.org_signing_public))
    yield Scene(admin, Caller(ids[ADMIN], 1), Caller(ids["worker"], 1), org, clock)
    admin.close()


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    engine = scene.vault.store.engine
    with recorded_statements(engine) as seen:
        yield seen


def _invite(scene: Scene, name: str, **changes: Any) -> InviteRequest:
    expires = int(scene.clock().timestamp()) + 3600
    return dataclasses.replace(InviteRequest(scene.admin, name, "engineer", expires, scene.org), **changes)


def _confirm(scene: Scene, name: str, action: str = CONFIRM, **changes: Any) -> ConfirmRequest:
    request = ConfirmRequest(scene.admin, name, "whatever was compared", False, scene.org, action)
    return dataclasses.replace(request, **changes)


def _enrolled(scene: Scene, role: str = "engineer") -> str:
    """A new engineer invited and enrolled through the authority alone (fake seals)."""
    name, recorder = next(_names), Recorder()
    authority = scene.authority(recorder)
    authority.invite(_invite(scene, name, role=role), FakeSeal(recorder))
    authority.enroll(EnrollRequest(name, signing.org_fingerprint(scene.org)[:8]), FakeSeal(recorder))
    return name


# -- who calls --------------------------------------------------------------------------------


def _admin_operations(scene: Scene, name: str, caller: Caller) -> list[tuple[str, Any]]:
    return [
        ("invite", _invite(scene, name, caller=caller)),
        ("confirm", _confirm(scene, name, PENDING, caller=caller)),
        ("confirm", _confirm(scene, name, caller=caller)),
    ]


@pytest.mark.parametrize("index", range(3), ids=["invite", "pending", "confirm"])
def test_an_engineer_is_refused_admin_operations_before_any_row_of_the_target_is_read(
    scene: Scene, statements: list[str], index: int
) -> None:
    """The insider is an engineer calling the authority directly (their own, valid session)."""
    name, recorder = _enrolled(scene), Recorder()
    before, head, seal, carry = scene.row(name), scene.head(), FakeSeal(recorder), Carry(recorder)
    method, request = _admin_operations(scene, name, scene.engineer)[index]
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        getattr(scene.authority(recorder, carry), method)(request, seal)
    assert statements, "the authority read nothing: the test cannot tell"
    assert not [st for st in statements if READS_THE_TARGET.search(st)], statements
    assert seal.drafts == [] and recorder.events == [] and carry.calls == []
    after = scene.row(name)
    assert before is not None and after is not None
    assert (after.status, after.role, after.invite_signature) == (before.status, before.role, before.invite_signature)
    assert scene.head() == head


def test_an_invite_by_an_engineer_creates_no_row(scene: Scene) -> None:
    name, recorder = next(_names), Recorder()
    with pytest.raises(AccessDenied):
        scene.authority(recorder).invite(_invite(scene, name, caller=scene.engineer), FakeSeal(recorder))
    assert scene.row(name) is None


@pytest.mark.parametrize("index", range(3), ids=["invite", "pending", "confirm"])
def test_a_caller_of_an_old_key_generation_is_refused_before_the_target_is_read(
    scene: Scene, statements: list[str], index: int
) -> None:
    """A stolen session of keys since replaced: the authority compares the generation."""
    name, recorder = _enrolled(scene), Recorder()
    seal = FakeSeal(recorder)
    method, request = _admin_operations(scene, name, Caller(scene.admin.engineer_id, 7))[index]
    statements.clear()
    with pytest.raises(Locked, match="have changed"):
        getattr(scene.authority(recorder), method)(request, seal)
    assert statements  # the capture saw the caller's read: an empty one would prove nothing
    assert not [st for st in statements if READS_THE_TARGET.search(st)], statements
    assert seal.drafts == [] and recorder.events == []


FORGED: list[tuple[str, str, dict[str, Any]]] = [
    ("invite", "a name that is SQL", {"name": "x'); DROP TABLE engineers; --"}),
    ("invite", "a name that is not text", {"name": b"alice"}),
    ("invite", "a made-up role", {"role": "superuser"}),
    ("invite", "an expiry that is text", {"expires_at": "tomorrow"}),
    ("invite", "an expiry that is a bool", {"expires_at": True}),
    ("invite", "a caller id of 0", {"caller": Caller(0, 1)}),
    ("invite", "a caller that is a tuple", {"caller": (1, 1)}),
    ("invite", "a short organisation pin", {"org_pin": b"\x00" * 5}),
    ("invite", "another action", {"action": CONFIRM}),
    ("confirm", "a confirmation without a fingerprint", {"fingerprint": None}),
    ("confirm", "a negative key generation", {"caller": Caller(1, -1)}),
    ("confirm", "a made-up action", {"action": "engineer-remove"}),
    ("confirm", "a fingerprint that is bytes", {"fingerprint": b"ab:cd"}),
    ("confirm", "a shown flag that is a tuple of slugs", {"shown": ("acme",)}),
    ("confirm", "a shown flag that is None", {"shown": None}),
    ("pending", "a pending read with a fingerprint of bytes", {"fingerprint": b"ab:cd"}),
    ("pending", "a pending read with a shown flag of text", {"shown": "yes"}),
    ("list", "a list with a pin of text", {"org_pin": "pin"}),
    ("enroll", "an enrolment with a fingerprint of text", {"org_fingerprint": "abcd"}),
]


@pytest.mark.parametrize(("method", "what", "changes"), FORGED, ids=[f[1] for f in FORGED])
def test_a_forged_request_field_is_refused_before_any_sql(
    scene: Scene, statements: list[str], method: str, what: str, changes: dict[str, Any]
) -> None:
    recorder = Recorder()
    base: Any = {
        "invite": _invite(scene, "newcomer"),
        "confirm": _confirm(scene, "newcomer"),
        "pending": _confirm(scene, "newcomer", PENDING),
        "list": ListRequest(scene.engineer, scene.org),
        "enroll": EnrollRequest("newcomer", b"\x00" * 8),
    }[method]
    request = dataclasses.replace(base, **changes)
    seal = FakeSeal(recorder)
    statements.clear()
    with pytest.raises(InvalidInput):
        if method == "list":
            scene.authority(recorder).list(request)
        else:
            getattr(scene.authority(recorder), "confirm" if method == "pending" else method)(request, seal)
    assert statements == [] and seal.drafts == [] and recorder.events == []


# -- invite ---------------------------------------------------------------------------------


def test_an_invitation_stores_what_the_keyholder_signed_for_the_draft_it_was_shown(scene: Scene) -> None:
    name, recorder = next(_names), Recorder()
    seal = FakeSeal(recorder)
    request = _invite(scene, name, role="admin")
    answer = scene.authority(recorder).invite(request, seal)
    (draft,) = seal.drafts
    assert (draft.name, draft.role, draft.expires_at, draft.previous_key) == (name, "admin", request.expires_at, None)
    assert draft.identity.me.id == scene.admin.engineer_id and draft.root.sealed is not None
    row = scene.row(name)
    assert row is not None and row.id == draft.engineer_id == answer.engineer.id  # type: ignore[union-attr]
    assert (row.status, row.role, row.invite_seal, row.invite_signature) == ("invited", "admin", SEAL, SIG)
    assert (row.invite_signed_by, row.invite_prev_generation) == (scene.admin.engineer_id, 0)
    assert row.invite_root_version == draft.root.version
    assert recorder.events == [(INVITE, {"engineer": name, "role": "admin", "key_generation": 0}, None)]
    assert answer.seq == 5001


def test_a_refused_invitation_writes_nothing(scene: Scene) -> None:
    name, recorder = next(_names), Recorder()
    head = scene.head()
    with pytest.raises(UntrustedRecord):
        scene.authority(recorder).invite(_invite(scene, name), FakeSeal(recorder, refuse=True))
    assert scene.row(name) is None and recorder.events == [] and scene.head() == head


def test_an_invitation_signed_in_another_admins_name_is_not_stored(scene: Scene) -> None:
    """A compromised keyholder cannot make the row name another admin as its signer."""
    name, recorder = next(_names), Recorder()
    forged = SignedInvitation(SEAL, 0, scene.engineer.engineer_id, SIG)
    with pytest.raises(InvalidInput):
        scene.authority(recorder).invite(_invite(scene, name), FakeSeal(recorder, signed=forged))
    assert scene.row(name) is None and recorder.events == []


def test_an_active_engineer_cannot_be_invited_again(scene: Scene) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    with pytest.raises(AlreadyExists):
        scene.authority(recorder).invite(_invite(scene, "worker"), seal)
    assert seal.drafts == [] and recorder.events == []
    assert scene.row("worker").status == "active"  # type: ignore[union-attr]


# -- enrol ----------------------------------------------------------------------------------


def test_an_enrolment_stores_the_keys_made_for_the_invitation_shown(scene: Scene) -> None:
    name, recorder = next(_names), Recorder()
    authority = scene.authority(recorder)
    authority.invite(_invite(scene, name), FakeSeal(recorder))
    seal = FakeSeal(recorder)
    answer = authority.enroll(EnrollRequest(name, signing.org_fingerprint(scene.org)[:8]), seal)
    (draft,) = seal.drafts
    assert draft.engineer.name == name and draft.invitation.signature == SIG and draft.invitation.seal == SEAL
    assert draft.invitation.signer is not None and draft.invitation.signer.id == scene.admin.engineer_id
    row = scene.row(name)
    assert row is not None
    assert (row.status, row.key_generation, row.sealing_public, row.signing_public) == ("enrolled", 1, PUB_A, PUB_B)
    assert (row.key_record, row.enroll_mac) == (RECORD, MAC)
    assert recorder.events[-1] == (ENROLL, {"engineer": name, "signing_public": PUB_B.hex()}, seal)
    assert answer.engineer is not None and answer.engineer.sealing_public == PUB_A


def test_enrolment_keys_of_another_generation_are_not_stored(scene: Scene) -> None:
    name, recorder = next(_names), Recorder()
    authority = scene.authority(recorder)
    authority.invite(_invite(scene, name), FakeSeal(recorder))
    keys = NewKeys(5, PUB_A, PUB_B, RECORD, MAC)
    with pytest.raises(InvalidInput):
        authority.enroll(EnrollRequest(name, signing.org_fingerprint(scene.org)[:8]), FakeSeal(recorder, keys=keys))
    row = scene.row(name)
    assert row is not None and (row.status, row.sealing_public, row.key_generation) == ("invited", None, 0)


@pytest.mark.parametrize("who", ["worker", "nobody-here"])
def test_an_enrolment_without_an_open_invitation_shows_the_seal_nothing(scene: Scene, who: str) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    with pytest.raises(EnrolmentError, match="no open invitation"):
        scene.authority(recorder).enroll(EnrollRequest(who, signing.org_fingerprint(scene.org)[:8]), seal)
    assert seal.drafts == [] and recorder.events == []


def test_an_enrolment_code_of_another_vault_is_refused_before_the_engineer_is_read(
    scene: Scene, statements: list[str]
) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    statements.clear()
    with pytest.raises(EnrolmentError, match="another vault"):
        scene.authority(recorder).enroll(EnrollRequest("worker", b"\x00" * 8), seal)
    assert not [st for st in statements if READS_THE_TARGET.search(st)] and seal.drafts == []


# -- pending confirmation and confirm -----------------------------------------------------------


def test_pending_confirmation_shows_the_rows_and_writes_nothing(scene: Scene) -> None:
    name, recorder = _enrolled(scene), Recorder()
    head, seal = scene.head(), FakeSeal(recorder)
    answer = scene.authority(recorder).confirm(_confirm(scene, name, PENDING), seal)
    assert answer.pending is not None and answer.seq == 0
    assert (answer.pending.engineer.name, answer.pending.engineer.sealing_public) == (name, PUB_A)
    assert answer.pending.plan.carried == (CARRIED,)
    assert seal.drafts == [] and recorder.events == [] and scene.head() == head
    assert scene.row(name).status == "enrolled"  # type: ignore[union-attr]


@pytest.mark.parametrize("role", ["engineer", "admin"])
def test_a_confirmation_stores_the_certificate_made_for_the_keys_shown(scene: Scene, role: str) -> None:
    name, recorder = _enrolled(scene, role), Recorder()
    carry, seal = Carry(recorder), FakeSeal(recorder)
    answer = scene.authority(recorder, carry).confirm(_confirm(scene, name), seal)
    (draft,) = seal.drafts
    assert (draft.engineer.sealing_public, draft.engineer.signing_public) == (PUB_A, PUB_B)
    assert draft.invitation.seal == SEAL and draft.invitation.enroll_mac == MAC
    row = scene.row(name)
    assert row is not None and (row.status, row.certificate, row.certified_at) == ("active", SIG, 1_800_000_000)
    assert (row.invite_seal, row.invite_signature, row.enroll_mac) == (None, None, None)
    assert (row.sealing_public, row.signing_public) == (PUB_A, PUB_B)  # the keys shown, unchanged
    with scene.vault.store.transaction() as s:
        key = s.get(m.EngineerKey, (row.id, 1))
        copy = s.get(m.RootSeal, (draft.root.version, row.id))
        assert key is not None and (key.sealing_public, key.certificate) == (PUB_A, SIG)
        assert (copy is not None) == (role == "admin")
    # planned before the seal was shown anything, carried after the certificate, before the event
    assert [c[0] for c in carry.calls] == ["plan", "carry"] and carry.calls[1][2] == 0
    assert recorder.events[0][0] == CONFIRM
    assert recorder.events[0][1]["fingerprint"] == signing.engineer_fingerprint(PUB_A, PUB_B)
    assert isinstance(answer, EngineerAnswer) and answer.seq == 5001


def test_a_refused_confirmation_writes_nothing(scene: Scene) -> None:
    name, recorder = _enrolled(scene), Recorder()
    carry, head = Carry(recorder), scene.head()
    with pytest.raises(UntrustedRecord):
        scene.authority(recorder, carry).confirm(_confirm(scene, name), FakeSeal(recorder, refuse=True))
    row = scene.row(name)
    assert row is not None and (row.status, row.certificate) == ("enrolled", None)
    assert [c[0] for c in carry.calls] == ["plan"] and recorder.events == [] and scene.head() == head


def test_a_root_copy_made_for_an_engineer_who_is_not_an_admin_is_refused(scene: Scene) -> None:
    """A keyholder (or a row edited between draft and write) cannot give a non-admin the root bundle."""
    name, recorder = _enrolled(scene), Recorder()
    cert = Certification(1_800_000_000, SIG, SIG, 1, b"\x04root copy")
    with pytest.raises(InvalidInput):
        scene.authority(recorder).confirm(_confirm(scene, name), FakeSeal(recorder, cert=cert))
    row = scene.row(name)
    assert row is not None and row.status == "enrolled"
    with scene.vault.store.transaction() as s:
        assert s.scalars(select(m.RootSeal).where(m.RootSeal.engineer_id == row.id)).first() is None


def test_confirming_an_engineer_still_invited_is_refused_before_the_seal(scene: Scene) -> None:
    name, recorder = next(_names), Recorder()
    scene.authority(recorder).invite(_invite(scene, name), FakeSeal(recorder))
    seal = FakeSeal(recorder)
    with pytest.raises(EnrolmentError, match="not waiting for confirmation"):
        scene.authority(recorder).confirm(_confirm(scene, name), seal)
    assert seal.drafts == []


# -- list and whoami ------------------------------------------------------------------------------


def test_the_list_answers_public_keys_after_its_event(scene: Scene) -> None:
    recorder = Recorder()
    answer = scene.authority(recorder).list(ListRequest(scene.engineer, scene.org))
    assert recorder.events == [(LIST, {}, None)] and answer.seq == 5001
    names = [r.name for r in answer.engineers]
    assert names == sorted(names) and {ADMIN, "worker"} <= set(names)
    assert answer.identity is not None and answer.identity.me.id == scene.engineer.engineer_id
    for value in (f.name for r in answer.engineers for f in dataclasses.fields(r)):
        assert value not in ("key_record", "invite_seal", "enroll_mac")


def test_whoami_answers_the_callers_row_and_writes_no_event(scene: Scene) -> None:
    recorder, head = Recorder(), scene.head()
    answer = scene.authority(recorder).list(ListRequest(scene.engineer, scene.org, WHOAMI))
    assert answer.identity is not None and answer.identity.me.name == "worker"
    assert recorder.events == [] and answer.engineers == () and scene.head() == head


def test_a_removed_caller_is_refused(scene: Scene) -> None:
    recorder = Recorder()
    with pytest.raises(Locked):
        scene.authority(recorder).list(ListRequest(Caller(99_999, 1), scene.org))
    assert recorder.events == []


# -- passphrase change ------------------------------------------------------------------------------


def test_a_passphrase_change_stores_the_record_the_keyholder_relocked(scene: Scene) -> None:
    recorder = Recorder()
    name, _ = _enrolled(scene), None
    scene.authority(recorder).confirm(_confirm(scene, name), FakeSeal(recorder))
    who = scene.row(name)
    assert who is not None
    caller = Caller(who.id, who.key_generation)
    seal = FakeSeal(recorder)
    answer = scene.authority(recorder).change_passphrase(PassphraseRequest(caller, scene.org), seal)
    (draft,) = seal.drafts
    assert draft.key_record == RECORD and draft.identity.me.id == who.id  # their own record, no other
    assert scene.row(name).key_record == b"\x09relocked record"  # type: ignore[union-attr]
    assert recorder.events[-1] == (RELOCK, {"engineer": name}, None) and answer.seq == 5002


def test_a_passphrase_change_of_a_stale_session_does_not_read_the_record(scene: Scene, statements: list[str]) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    statements.clear()
    with pytest.raises(Locked):
        scene.authority(recorder).change_passphrase(
            PassphraseRequest(Caller(scene.engineer.engineer_id, 9), scene.org), seal
        )
    assert statements and not [st for st in statements if "engineers.key_record" in st]
    assert seal.drafts == []
    assert recorder.events == []


def test_a_relocked_record_that_is_not_bytes_is_not_stored(scene: Scene) -> None:
    recorder = Recorder()
    with scene.vault.store.transaction() as s:
        before = s.get(m.Engineer, scene.engineer.engineer_id).key_record  # type: ignore[union-attr]
    with pytest.raises(InvalidInput):
        scene.authority(recorder).change_passphrase(
            PassphraseRequest(scene.engineer, scene.org), FakeSeal(recorder, record="a text record")
        )
    with scene.vault.store.transaction() as s:
        assert s.get(m.Engineer, scene.engineer.engineer_id).key_record == before  # type: ignore[union-attr]
    assert recorder.events == []


# -- unlock ---------------------------------------------------------------------------------------


def _active(scene: Scene) -> tuple[str, Caller]:
    """A new engineer made active through the authority alone (fake seals): their record is RECORD."""
    name, recorder = _enrolled(scene), Recorder()
    scene.authority(recorder).confirm(_confirm(scene, name), FakeSeal(recorder))
    row = scene.row(name)
    assert row is not None
    return name, Caller(row.id, row.key_generation)


def test_the_key_record_is_handed_out_by_name_with_the_org_keys_and_no_event(scene: Scene) -> None:
    name, caller = _active(scene)
    recorder, head = Recorder(), scene.head()
    rows = scene.authority(recorder).key_record(KeyRecordRequest(name))
    assert (rows.engineer.id, rows.key_record, rows.org_signing_public) == (caller.engineer_id, RECORD, scene.org)
    assert [key.public for key in rows.org_keys][-1] == scene.org
    assert recorder.events == [] and scene.head() == head


def test_no_key_record_is_handed_out_for_an_engineer_not_yet_confirmed(scene: Scene) -> None:
    name = _enrolled(scene)
    with pytest.raises(NotFound, match="no usable keys"):
        scene.authority(Recorder()).key_record(KeyRecordRequest(name))


def test_a_failed_unlock_is_recorded_unsigned_for_that_engineer(scene: Scene) -> None:
    name, caller = _active(scene)
    recorder = Recorder()
    scene.authority(recorder).unlock_failed(KeyRecordRequest(name, UNLOCK_FAILED))
    assert recorder.events == [(UNLOCK_FAILED, {"engineer": name}, None)]
    assert recorder.unsigned == [caller.engineer_id]


def test_a_repinned_record_replaces_only_the_record_that_was_opened(scene: Scene) -> None:
    """A record re-locked from a stale read (the passphrase changed meanwhile) is not stored."""
    name, caller = _active(scene)
    recorder = Recorder()
    authority = scene.authority(recorder)
    authority.unlock(UnlockRequest(caller, scene.org, 900, b"\x05not the stored record", b"\x06repinned"))
    assert scene.row(name).key_record == RECORD  # type: ignore[union-attr]
    answer = authority.unlock(UnlockRequest(caller, scene.org, 900, RECORD, b"\x06repinned"))
    assert scene.row(name).key_record == b"\x06repinned"  # type: ignore[union-attr]
    assert [e[:2] for e in recorder.events] == [(UNLOCK, {"engineer": name, "ttl_seconds": 900})] * 2
    assert answer.identity is not None and answer.identity.me.id == caller.engineer_id


def test_an_unlock_of_an_old_key_generation_stores_no_record_and_no_event(scene: Scene) -> None:
    name, caller = _active(scene)
    recorder = Recorder()
    with pytest.raises(Locked):
        scene.authority(recorder).unlock(
            UnlockRequest(Caller(caller.engineer_id, 4), scene.org, 900, RECORD, b"\x06repinned")
        )
    assert scene.row(name).key_record == RECORD and recorder.events == []  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "changes",
    [{"opened": None}, {"ttl_seconds": 0}, {"ttl_seconds": 13 * 3600}, {"repinned": "text"}, {"org_pin": b"1"}],
    ids=["repinned without the record it replaces", "no time", "over 12 hours", "text record", "short pin"],
)
def test_a_forged_unlock_request_is_refused_before_any_sql(
    scene: Scene, statements: list[str], changes: dict[str, Any]
) -> None:
    request = dataclasses.replace(UnlockRequest(scene.engineer, scene.org, 900, RECORD, b"\x06x"), **changes)
    recorder = Recorder()
    statements.clear()
    with pytest.raises(InvalidInput):
        scene.authority(recorder).unlock(request)
    assert statements == [] and recorder.events == []


# -- rotate (re-key) ------------------------------------------------------------------------------


class Adoption:
    """Notes the engineers whose signed records were adopted, with the events appended before."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder, self.adopted = recorder, []  # type: ignore[var-annotated]

    def adopt(self, s: Any, engineer_id: int) -> None:
        self.adopted.append((engineer_id, len(self.recorder.events)))


def _rotate(scene: Scene, name: str, caller: Caller | None = None) -> RotateRequest:
    return RotateRequest(caller or scene.admin, name, int(scene.clock().timestamp()) + 3600, scene.org)


def _rotation(scene: Scene, recorder: Recorder, adoption: Adoption) -> EngineerRotationAuthority:
    return EngineerRotationAuthority(scene.authority(recorder), adoption)


def test_an_engineer_is_refused_a_rotation_before_any_row_of_the_target_is_read(
    scene: Scene, statements: list[str]
) -> None:
    name, _ = _active(scene)
    recorder = Recorder()
    adoption, seal, before = Adoption(recorder), FakeSeal(recorder), scene.row(name)
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        _rotation(scene, recorder, adoption).rotate(_rotate(scene, name, scene.engineer), seal)
    assert statements and not [st for st in statements if READS_THE_TARGET.search(st)], statements
    assert seal.drafts == [] and adoption.adopted == [] and recorder.events == []
    after = scene.row(name)
    assert after is not None and before is not None and (after.status, after.key_record) == ("active", RECORD)


def test_a_rotation_destroys_the_keys_and_stores_the_invitation_the_keyholder_signed(scene: Scene) -> None:
    name, caller = _active(scene)
    recorder = Recorder()
    adoption, seal = Adoption(recorder), FakeSeal(recorder)
    _rotation(scene, recorder, adoption).rotate(_rotate(scene, name), seal)
    rekey, invitation = seal.drafts
    assert isinstance(rekey, RekeyDraft) and rekey.engineer.id == caller.engineer_id and rekey.key_recorded
    assert isinstance(invitation, InvitationDraft) and invitation.role == "engineer"
    assert invitation.previous_key is not None and invitation.previous_key.generation == 1
    assert adoption.adopted == [(caller.engineer_id, 0)]
    row = scene.row(name)
    assert row is not None
    assert (row.status, row.key_record, row.sealing_public, row.certificate) == ("invited", None, None, None)
    assert (row.invite_signature, row.invite_prev_generation) == (SIG, 0)
    with scene.vault.store.transaction() as s:
        assert s.get(m.EngineerKey, (caller.engineer_id, 1)).state == "destroyed"  # type: ignore[union-attr]
    assert [e[0] for e in recorder.events] == [INVITE, ROTATE]
    assert recorder.events[1][1] == {"engineer": name, "old_generation": 1}


def test_a_rotation_the_keyholder_refuses_destroys_nothing(scene: Scene) -> None:
    name, _ = _active(scene)
    recorder = Recorder()
    adoption = Adoption(recorder)
    with pytest.raises(UntrustedRecord):
        _rotation(scene, recorder, adoption).rotate(_rotate(scene, name), FakeSeal(recorder, refuse=True))
    row = scene.row(name)
    assert row is not None and (row.status, row.key_record, row.sealing_public) == ("active", RECORD, PUB_A)
    assert adoption.adopted == [] and recorder.events == []


def test_an_admin_cannot_rotate_their_own_keys_this_way(scene: Scene) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    with pytest.raises(InvalidInput, match="your own keys"):
        _rotation(scene, recorder, Adoption(recorder)).rotate(_rotate(scene, ADMIN), seal)
    assert seal.drafts == [] and recorder.events == []


# -- remove ---------------------------------------------------------------------------------------


class Seams:
    """The removal's in-process parts, as stand-ins: they note what they are asked."""

    def __init__(self, exposed: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.exposed_ = set(exposed)
        self.calls: list[tuple[str, int]] = []

    def exposed(self, s: Any, engineer_id: int, log_verified: bool) -> set[int]:
        self.calls.append(("exposed", engineer_id))
        return self.exposed_

    def adopt(self, s: Any, engineer_id: int) -> None:
        self.calls.append(("adopt", engineer_id))

    def rotate_root(self, s: Any) -> None:
        self.calls.append(("rotate_root", 0))

    def start_rotation(self, s: Any, client_id: int) -> int:
        self.calls.append(("start_rotation", client_id))
        return 900 + client_id


def _granted(scene: Scene, engineer_id: int, n: int = 2) -> list[int]:
    """Grant rows for the engineer (signatures are stand-ins: no key here)."""
    ids = []
    with scene.vault.store.transaction() as s:
        has_client = s.scalar(select(m.Client.id)) is not None
    if not has_client:
        scene.vault.clients.add("acme", "Acme Ltd")  # made by the real admin: the authority under test holds no key
    with scene.vault.store.transaction() as s:
        client_id = s.scalar(select(m.Client.id).order_by(m.Client.id))
        for _ in range(n):
            grant = m.Grant(
                engineer_id=engineer_id,
                client_id=client_id,
                granted_by=scene.admin.engineer_id,
                signed_at=1,
                until=None,
                signature=SIG,
                created_at=scene.clock(),
            )
            s.add(grant)
            s.flush()
            ids.append(grant.id)
    return ids


def _grants(scene: Scene, engineer_id: int) -> list[tuple[Any, ...]]:
    with scene.vault.store.transaction() as s:
        found = s.execute(
            select(m.Grant.id, m.Grant.revoked_at, m.Grant.revoked_by, m.Grant.revocation)
            .where(m.Grant.engineer_id == engineer_id)
            .order_by(m.Grant.id)
        ).all()
        return [tuple(r) for r in found]


def _removal(scene: Scene, recorder: Recorder, seams: Seams) -> EngineerRemovalAuthority:
    return EngineerRemovalAuthority(scene.authority(recorder), seams)


def _remove(scene: Scene, name: str, caller: Caller | None = None) -> RemoveRequest:
    return RemoveRequest(caller or scene.admin, name, scene.org, True)


def test_an_engineer_is_refused_a_removal_before_any_row_of_the_target_is_read(
    scene: Scene, statements: list[str]
) -> None:
    name, caller = _active(scene)
    _granted(scene, caller.engineer_id)
    recorder, seams = Recorder(), Seams()
    seal, before = FakeSeal(recorder), _grants(scene, caller.engineer_id)
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        _removal(scene, recorder, seams).remove(_remove(scene, name, scene.engineer), seal)
    assert statements and not [
        st for st in statements if READS_THE_TARGET.search(st) or re.search(r"FROM grants\s+WHERE", st)
    ]
    assert seal.drafts == [] and seams.calls == [] and recorder.events == []
    assert _grants(scene, caller.engineer_id) == before and scene.row(name).status == "active"  # type: ignore[union-attr]


def test_a_removal_stores_the_revocations_the_keyholder_signed_for_every_live_grant(scene: Scene) -> None:
    name, caller = _active(scene)
    ids = _granted(scene, caller.engineer_id)
    recorder, seams = Recorder(), Seams({1})
    seal = FakeSeal(recorder)
    answer = _removal(scene, recorder, seams).remove(_remove(scene, name), seal)
    (draft,) = seal.drafts
    assert [g.id for g in draft.grants] == ids and draft.recertify
    assert all(
        r[1] is not None and r[2] == scene.admin.engineer_id and r[3] == SIG for r in _grants(scene, caller.engineer_id)
    )
    row = scene.row(name)
    assert row is not None and (row.status, row.key_record, row.certificate) == ("disabled", None, SIG)
    assert row.sealing_public == PUB_A  # kept: the events they signed still verify
    assert [c[0] for c in seams.calls] == ["exposed", "adopt", "start_rotation"]
    assert recorder.events == [(REMOVE, {"engineer": name, "clients_rotated": 1, "admin": False}, None)]
    assert answer.rotation_ids == (901,) and {g.id for g in answer.grants} == set(ids)
    assert all(g.revoked_at is not None for g in answer.grants)


@pytest.mark.parametrize("what", ["one grant left out", "no certificate"])
def test_a_removal_the_keyholder_signed_short_writes_nothing(scene: Scene, what: str) -> None:
    """A keyholder (or a lying seal) that leaves a grant unrevoked gets no removal at all."""
    name, caller = _active(scene)
    ids = _granted(scene, caller.engineer_id)
    short = {
        "one grant left out": Removal(((ids[0], SIG),), 1_800_000_000, SIG),
        "no certificate": Removal(tuple((i, SIG) for i in ids), None, None),
    }[what]
    recorder, seams = Recorder(), Seams()
    before = _grants(scene, caller.engineer_id)
    with pytest.raises(InvalidInput):
        _removal(scene, recorder, seams).remove(_remove(scene, name), FakeSeal(recorder, removal=short))
    assert _grants(scene, caller.engineer_id) == before and scene.row(name).status == "active"  # type: ignore[union-attr]
    assert recorder.events == [] and [c[0] for c in seams.calls] == ["exposed"]


def test_an_admin_cannot_remove_themselves(scene: Scene) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    with pytest.raises(InvalidInput, match="remove yourself"):
        _removal(scene, recorder, Seams()).remove(_remove(scene, ADMIN), seal)
    assert seal.drafts == []


def test_removing_a_never_confirmed_engineer_reads_no_root_copy(scene: Scene, statements: list[str]) -> None:
    """An invited engineer was never certified: no certificate is re-issued, so the root bundle
    sealed to the admin is not read (an admin holding no copy of it can still remove them)."""
    name, recorder = next(_names), Recorder()
    scene.authority(recorder).invite(_invite(scene, name), FakeSeal(recorder))
    seal, statements[:] = FakeSeal(recorder), []
    answer = _removal(scene, recorder, Seams()).remove(_remove(scene, name), seal)
    (draft,) = seal.drafts
    assert not draft.recertify and draft.root.sealed is None
    reads = [st for st in statements if st.startswith("SELECT") and re.search(r"FROM root_seals\b", st)]
    assert statements and not reads
    assert answer.engineer.status == "disabled" and answer.engineer.certificate is None


@pytest.mark.parametrize("certificate", [b"short", "a certificate of text", SIG + b"\x00"])
def test_a_removal_with_an_ill_formed_certificate_writes_nothing(scene: Scene, certificate: Any) -> None:
    """The disabled certificate the keyholder returns is stored only if it is a signature."""
    name, caller = _active(scene)
    ids = _granted(scene, caller.engineer_id, 1)
    recorder, before = Recorder(), _grants(scene, caller.engineer_id)
    made = Removal(tuple((i, SIG) for i in ids), 1_800_000_000, certificate)
    with pytest.raises(InvalidInput):
        _removal(scene, recorder, Seams()).remove(_remove(scene, name), FakeSeal(recorder, removal=made))
    assert _grants(scene, caller.engineer_id) == before and scene.row(name).status == "active"  # type: ignore[union-attr]
    assert recorder.events == []
