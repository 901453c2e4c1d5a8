"""The secrets' authority, run with no key material at all.

The rows are made by the usual fixtures (an admin adds a client and a secret, grants an
engineer); then ``SecretAuthority`` is driven alone: its public-key checks are a stand-in
that reads only the rows it is given, its recorder notes the events instead of signing
them, and the keyholder's seal is a fake that returns fixed blobs. No client key, data key
or private key reaches it, yet it must refuse a caller before it reads the client or the
secret, append the event before it answers, write only what the seal made, and answer
with tags and ciphertext only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from standins import recorded_statements

from vault.authority.requests import MISSING_TARGET, Caller, NewVersion
from vault.authority.secret_requests import (
    CREATE,
    HISTORY,
    NAME_TAKEN,
    NO_CURRENT_VERSION,
    UPDATE,
    VIEW,
    AddRequest,
    ReadRequest,
    SecretRows,
    SecretTarget,
    UpdateRequest,
)
from vault.authority.secrets import VIEW_PUBLIC_ONLY, SecretAuthority
from vault.errors import (
    AccessDenied,
    AlreadyExists,
    CheckoutConflict,
    IntegrityError,
    InvalidInput,
    Locked,
    NotFound,
    UntrustedRecord,
)
from vault.storage import models as m
from vault.storage.rows import HoldRow

PW, USER, NOTE = "authority-secret-Pw-1", "fw-admin", "rack 4, top"
NEW = NewVersion(1, 1, b"\x01\x02\x00\x00\x00\x01wrapped under key 1", b"\x01password blob", b"\x01metadata blob")
READS_THE_TARGET = re.compile(r"\b(clients|secrets|secret_versions)\b", re.IGNORECASE)


class Checks:
    """Public-key checks that look at the rows only (the real ones verify signatures)."""

    def organisation_key(self, s: Any, current: bytes) -> None:
        pass

    def certificate(self, s: Any, row: Any) -> None:
        if row.certificate is None:
            raise UntrustedRecord("no certificate")

    def first_valid_grant(self, s: Any, grants: Sequence[Any], engineer: Any, signers: Sequence[Any]) -> int:
        if not grants or grants[0].revoked_at is not None:
            raise NotFound("no such client, or you hold no grant for it")
        return 0

    def current_key_version(self, s: Any, client: Any) -> int:
        return int(client.current_key_version)

    def retention(self, s: Any) -> int:
        return 10

    def __init__(self, holds: Sequence[Any] = ()) -> None:
        self.holds = list(holds)  # the exclusive holds of other engineers the stand-in reports
        self.asked: list[int] = []  # the secrets whose holds were asked for

    def exclusive_holds(self, s: Any, client: Any, secret: Any, me: int) -> list[Any]:
        self.asked.append(secret.id)
        return self.holds


class Recorder:
    """Notes each event appended, in the unit of work (nothing signed: no key here)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, int | None, dict[str, Any] | None]] = []

    def append(self, s: Any, action: str, *, client_id: Any, secret_id: Any, details: Any) -> int:
        self.events.append((action, client_id, secret_id, details))
        return 1000 + len(self.events)


class FakeSeal:
    """The keyholder's seal without a key: it notes what it is shown, returns fixed blobs."""

    def __init__(
        self, recorder: Recorder, refuse: bool = False, new: NewVersion = NEW, number: int | None = None
    ) -> None:
        self.recorder, self.refuse, self.new, self.number = recorder, refuse, new, number
        self.drafts: list[SecretRows] = []
        self.encrypted: list[tuple[int, int, int]] = []
        self.events_when_admitted: list[int] = []

    def admit(self, draft: SecretRows) -> None:
        self.drafts.append(draft)
        self.events_when_admitted.append(len(self.recorder.events))
        if self.refuse:
            raise UntrustedRecord("the keyholder refuses this answer")

    def encrypt(self, draft: SecretRows, version: int) -> NewVersion:
        self.encrypted.append((draft.client.id, draft.secret.id, version))
        return dataclasses.replace(self.new, version=version if self.number is None else self.number)


@dataclasses.dataclass
class Scene:
    team: Any
    client_id: int
    secret_id: int
    tag: bytes
    alice: tuple[int, int]  # (id, key generation), granted
    bob: tuple[int, int]  # not granted


def _one(team: Any, query: Any) -> Any:
    with team.admin.store.transaction() as s:
        return s.execute(query).one()


@pytest.fixture
def scene(team: Any) -> Scene:
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add("acme/fw01", password=PW, username=USER, note=NOTE)
    team.engineer("alice")
    team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    client_id, secret_id, tag = _one(team, select(m.Client.id, m.Secret.id, m.Secret.name_tag).join(m.Secret))
    ids = {}
    for name in ("alice", "bob"):
        ids[name] = tuple(_one(team, select(m.Engineer.id, m.Engineer.key_generation).where(m.Engineer.name == name)))
    return Scene(team, client_id, secret_id, tag, ids["alice"], ids["bob"])


def _authority(scene: Scene, recorder: Recorder) -> SecretAuthority:
    return SecretAuthority(scene.team.admin.store, Checks(), recorder, scene.team.clock)


def _target(scene: Scene, who: tuple[int, int], **changes: Any) -> SecretTarget:
    target = SecretTarget(Caller(*who), scene.client_id, None, scene.tag, (), b"\x00" * 32)
    return dataclasses.replace(target, **changes)


def _state(scene: Scene) -> tuple[Any, ...]:
    with scene.team.admin.store.transaction() as s:
        secrets = s.execute(select(m.Secret.id, m.Secret.current_version, m.Secret.kind)).all()
        versions = s.execute(select(m.SecretVersion.secret_id, m.SecretVersion.version)).all()
        count = s.scalar(select(func.sum(m.ClientKey.encryptions)))
    return tuple(secrets), tuple(versions), count


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    engine = scene.team.admin.store.engine
    with recorded_statements(engine) as seen:
        yield seen


def _walk(value: Any) -> Iterator[Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _walk(getattr(value, f.name))
    elif isinstance(value, tuple):
        for item in value:
            yield from _walk(item)
    else:
        yield value


def _requests(scene: Scene, who: tuple[int, int], **changes: Any) -> list[tuple[str, Any]]:
    target = _target(scene, who, **changes)
    return [
        ("read", ReadRequest(VIEW, target)),
        ("read", ReadRequest(HISTORY, target)),
        ("add", AddRequest(dataclasses.replace(target, name_tag=b"\x07" * 32), "other")),
        ("update", UpdateRequest(target, None, True)),
    ]


@pytest.mark.parametrize("index", range(4), ids=["view", "history", "add", "update"])
def test_a_caller_without_a_grant_is_refused_before_the_client_or_secret_is_read(
    scene: Scene, statements: list[str], index: int
) -> None:
    before, recorder = _state(scene), Recorder()
    seal = FakeSeal(recorder)
    method, request = _requests(scene, scene.bob)[index]
    statements.clear()
    with pytest.raises(NotFound, match="no grant"):
        getattr(_authority(scene, recorder), method)(request, seal)
    assert statements, "the authority read nothing"
    assert not [st for st in statements if READS_THE_TARGET.search(st)], statements
    assert seal.drafts == [] and seal.encrypted == [] and recorder.events == []
    assert _state(scene) == before


@pytest.mark.parametrize("index", range(4), ids=["view", "history", "add", "update"])
def test_an_engineer_cannot_name_a_client_by_its_slug_tag(scene: Scene, statements: list[str], index: int) -> None:
    recorder = Recorder()
    method, request = _requests(scene, scene.alice, client_id=None, slug_tag=b"\x00" * 32)[index]
    statements.clear()
    with pytest.raises(AccessDenied):
        getattr(_authority(scene, recorder), method)(request, FakeSeal(recorder))
    assert not [st for st in statements if READS_THE_TARGET.search(st)], statements
    assert recorder.events == []


def test_a_caller_of_an_old_key_generation_is_refused_before_the_secret_is_read(
    scene: Scene, statements: list[str]
) -> None:
    recorder = Recorder()
    stale = (scene.alice[0], scene.alice[1] + 1)
    statements.clear()
    with pytest.raises(Locked):
        _authority(scene, recorder).read(ReadRequest(VIEW, _target(scene, stale)), FakeSeal(recorder))
    assert not [st for st in statements if READS_THE_TARGET.search(st)], statements
    assert recorder.events == []


def test_a_view_answers_tags_and_ciphertext_after_its_event(scene: Scene) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    answer = _authority(scene, recorder).read(ReadRequest(VIEW, _target(scene, scene.alice)), seal)
    assert recorder.events == [(VIEW, scene.client_id, scene.secret_id, {"fields": VIEW_PUBLIC_ONLY})]
    assert seal.events_when_admitted == [0], "the keyholder saw the draft before the event was appended"
    assert answer.seq == 1001 and dataclasses.replace(answer, seq=0) == seal.drafts[0]
    assert (answer.secret.id, answer.secret.name_tag, answer.version and answer.version.version) == (
        scene.secret_id,
        scene.tag,
        1,
    )
    leaves = list(_walk(answer))
    for plain in (PW, USER, NOTE, "fw01", "acme", "Acme Ltd"):
        assert not [v for v in leaves if isinstance(v, (str, bytes)) and plain.encode() in _bytes(v)], plain
    assert seal.encrypted == []


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def test_history_lists_every_version_with_its_author(scene: Scene) -> None:
    scene.team.admin.secrets.update("acme/fw01", password="second-Pw-2")
    recorder = Recorder()
    answer = _authority(scene, recorder).read(ReadRequest(HISTORY, _target(scene, scene.alice)), FakeSeal(recorder))
    assert [(h.version, h.created_by, h.key_version) for h in answer.history] == [
        (1, scene.team.admin.engineer_name, 1),
        (2, scene.team.admin.engineer_name, 1),
    ]
    assert recorder.events == [(HISTORY, scene.client_id, scene.secret_id, None)]


def test_a_refused_draft_writes_nothing(scene: Scene) -> None:
    before = _state(scene)
    for method, request in _requests(scene, scene.alice):
        recorder = Recorder()
        seal = FakeSeal(recorder, refuse=True)
        with pytest.raises(UntrustedRecord):
            getattr(_authority(scene, recorder), method)(request, seal)
        assert len(seal.drafts) == 1 and seal.encrypted == [] and recorder.events == [], method
        assert _state(scene) == before, method


def test_an_add_stores_what_the_keyholder_encrypted_for_the_ids_it_assigned(scene: Scene) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    tag = b"\x07" * 32
    target = dataclasses.replace(_target(scene, scene.alice), name_tag=tag)
    answer = _authority(scene, recorder).add(AddRequest(target, "equipment"), seal)
    draft = seal.drafts[0]
    assert draft.version is None and draft.write_key is not None and draft.write_key.record.version == 1
    assert draft.write_key.blob is not None  # alice's sealed copy: ciphertext, opened by the keyholder alone
    assert seal.encrypted == [(scene.client_id, answer.secret.id, 1)]
    assert recorder.events == [(CREATE, scene.client_id, answer.secret.id, {"kind": "equipment"})]
    with scene.team.admin.store.transaction() as s:
        row = s.get(m.SecretVersion, (answer.secret.id, 1))
        secret = s.get(m.Secret, answer.secret.id)
        assert row is not None and secret is not None
        stored = (row.key_version, row.wrapped_dek, row.password_blob, row.metadata_blob)
        assert (secret.name_tag, secret.kind, secret.current_version) == (tag, "equipment", 1)
        assert row.created_by == scene.alice[0]
    assert stored == (NEW.key_version, NEW.wrapped_dek, NEW.password_blob, NEW.metadata_blob)


def test_an_add_under_a_taken_name_tag_writes_nothing(scene: Scene) -> None:
    before, recorder = _state(scene), Recorder()
    seal = FakeSeal(recorder)
    with pytest.raises(AlreadyExists, match=NAME_TAKEN):
        _authority(scene, recorder).add(AddRequest(_target(scene, scene.alice), "other"), seal)
    assert seal.drafts == [] and recorder.events == [] and _state(scene) == before


def test_a_version_under_another_key_than_the_current_one_is_refused(scene: Scene) -> None:
    before, recorder = _state(scene), Recorder()
    seal = FakeSeal(recorder, new=dataclasses.replace(NEW, key_version=2))
    with pytest.raises(InvalidInput, match="current key"):
        _authority(scene, recorder).update(UpdateRequest(_target(scene, scene.alice), None, False), seal)
    assert recorder.events == [] and _state(scene) == before


@pytest.mark.parametrize("wrapped", [b"\x01\x02\x00\x00\x00\x02wrapped under key 2", b"\x01\x02"])
def test_a_data_key_whose_header_names_another_key_is_refused(scene: Scene, wrapped: bytes) -> None:
    """The version says key 1 but its wrapped data key's header (what a reader opens it by)
    names key 2, or is too short to name any: refused, nothing written."""
    before, recorder = _state(scene), Recorder()
    seal = FakeSeal(recorder, new=dataclasses.replace(NEW, wrapped_dek=wrapped))
    with pytest.raises(InvalidInput, match="not wrapped under the client's current key"):
        _authority(scene, recorder).update(UpdateRequest(_target(scene, scene.alice), None, False), seal)
    assert recorder.events == [] and _state(scene) == before


@pytest.mark.parametrize("number", [1, 3])
def test_a_version_numbered_other_than_the_next_is_refused_and_nothing_is_written(scene: Scene, number: int) -> None:
    """A keyholder (or a forger at the seam) hands back ciphertext for another version
    number than the one assigned: stored, it would overwrite or skip a version."""
    before, recorder = _state(scene), Recorder()
    seal = FakeSeal(recorder, number=number)
    with pytest.raises(InvalidInput, match="not the one this request asked for"):
        _authority(scene, recorder).update(UpdateRequest(_target(scene, scene.alice), None, False), seal)
    assert seal.encrypted == [(scene.client_id, scene.secret_id, 2)]
    assert recorder.events == [] and _state(scene) == before


def test_an_update_writes_the_next_version_and_clears_the_flag(scene: Scene) -> None:
    with scene.team.admin.store.transaction() as s:
        s.get(m.Secret, scene.secret_id).must_change = True  # type: ignore[union-attr]
    recorder = Recorder()
    seal = FakeSeal(recorder)
    answer = _authority(scene, recorder).update(UpdateRequest(_target(scene, scene.alice), "equipment", True), seal)
    assert seal.drafts[0].version is not None and seal.drafts[0].version.version == 1
    assert seal.encrypted == [(scene.client_id, scene.secret_id, 2)]
    assert (answer.secret.current_version, answer.secret.must_change, answer.kind) == (2, False, "equipment")
    assert recorder.events == [(UPDATE, scene.client_id, scene.secret_id, {"version": 2, "password_changed": True})]


def test_a_missing_secret_and_a_missing_current_version_are_told_apart(scene: Scene) -> None:
    recorder = Recorder()
    other = _target(scene, scene.alice, name_tag=b"\x09" * 32)
    with pytest.raises(NotFound, match=MISSING_TARGET):
        _authority(scene, recorder).read(ReadRequest(VIEW, other), FakeSeal(recorder))
    with scene.team.admin.store.transaction() as s:
        s.execute(delete(m.SecretVersion).where(m.SecretVersion.secret_id == scene.secret_id))
    with pytest.raises(IntegrityError, match=re.escape(NO_CURRENT_VERSION)):
        _authority(scene, recorder).read(ReadRequest(VIEW, _target(scene, scene.alice)), FakeSeal(recorder))
    assert recorder.events == []


FORGED = {
    "kind not a kind": lambda t: ("add", AddRequest(t, "router")),
    "kind not text": lambda t: ("add", AddRequest(t, 7)),
    "update to a kind not a kind": lambda t: ("update", UpdateRequest(t, "x" * 40, True)),
    "short name tag": lambda t: ("read", ReadRequest(VIEW, dataclasses.replace(t, name_tag=b"\x07" * 5))),
    "long name tag": lambda t: ("update", UpdateRequest(dataclasses.replace(t, name_tag=b"\x07" * 33), None, True)),
    "name tag as text": lambda t: ("add", AddRequest(dataclasses.replace(t, name_tag="fw01"), "other")),
    "long slug tag": lambda t: (
        "read",
        ReadRequest(VIEW, dataclasses.replace(t, client_id=None, slug_tag=b"\x01" * 64)),
    ),
    "client id not a number": lambda t: ("read", ReadRequest(HISTORY, dataclasses.replace(t, client_id="1"))),
    "known key version zero": lambda t: ("read", ReadRequest(VIEW, dataclasses.replace(t, known_key_versions=(0,)))),
    "password_changed not a bool": lambda t: ("update", UpdateRequest(t, None, "yes")),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_a_forged_request_field_is_refused_before_anything_is_read(
    scene: Scene, statements: list[str], case: str
) -> None:
    before, recorder = _state(scene), Recorder()
    seal = FakeSeal(recorder)
    target = _target(scene, scene.alice)
    if case.startswith("kind"):
        target = dataclasses.replace(target, name_tag=b"\x07" * 32)  # a new name: the add would go through
    method, request = FORGED[case](target)
    statements.clear()
    with pytest.raises(InvalidInput):
        getattr(_authority(scene, recorder), method)(request, seal)
    assert statements == [], statements
    assert seal.drafts == [] and recorder.events == [] and _state(scene) == before


def test_an_update_is_refused_while_another_engineer_holds_the_secret_exclusively(scene: Scene) -> None:
    """The exclusive-hold check is the authority's, under the secret's lock, before the keyholder is shown anything."""
    before, recorder = _state(scene), Recorder()
    seal = FakeSeal(recorder)
    checks = Checks([HoldRow(1, scene.bob[0], True, scene.team.clock() + dt.timedelta(hours=1), 1)])
    authority = SecretAuthority(scene.team.admin.store, checks, recorder, scene.team.clock)
    with pytest.raises(CheckoutConflict, match="checked out exclusively by bob until"):
        authority.update(UpdateRequest(_target(scene, scene.alice), None, True), seal)
    assert checks.asked == [scene.secret_id]
    assert seal.drafts == [] and seal.encrypted == [] and recorder.events == [] and _state(scene) == before


def test_the_holds_are_not_read_for_a_caller_without_a_grant(scene: Scene, statements: list[str]) -> None:
    recorder, checks = Recorder(), Checks()
    authority = SecretAuthority(scene.team.admin.store, checks, recorder, scene.team.clock)
    statements.clear()
    with pytest.raises(NotFound, match="no grant"):
        authority.update(UpdateRequest(_target(scene, scene.bob), None, True), FakeSeal(recorder))
    assert checks.asked == [] and not [st for st in statements if re.search(r"\bcheckouts\b", st, re.I)]
    assert not [st for st in statements if READS_THE_TARGET.search(st)], statements
