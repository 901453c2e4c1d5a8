"""The client-key rotation's authority, run with no key material at all.

The rows are made by the usual fixtures (an admin adds two clients with secrets, grants an
engineer); then ``RotationAuthority`` is driven alone: its public-key checks are a stand-in
that reads only the rows it is given, its recorder notes the events instead of signing
them, and the keyholder's seals are fakes that return fixed ciphertext. No client key,
data key or private key reaches it, yet it must refuse an engineer before it reads any row
of a client or a rotation, refuse ill-typed request fields before any SQL, store only a
new key sealed to the grantees it handed out and re-wrapped keys only for the rows it
handed out, and never destroy a client-key version a data key still refers to.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, update
from standins import (
    SIGNATURE,
    Recorder,
    RotationChecks,
    RotationSeal,
    recorded_statements,
    rows_restored_after,
    versioned_blob,
)

from vault.authority.requests import Caller
from vault.authority.rotation import RotationAuthority
from vault.authority.rotation_requests import (
    ALREADY_RUNNING,
    FINISH,
    START,
    BatchRequest,
    FinishRequest,
    ListRequest,
    OpenRequest,
    Rewrapped,
    StartRequest,
    VersionsRequest,
)
from vault.errors import AccessDenied, IntegrityError, InvalidInput, NotFound, UntrustedRecord
from vault.storage import models as m

READS_A_TARGET = re.compile(r"\b(clients|rotations|secrets|secret_versions|client_keys|client_key_seals)\b", re.I)
PIN = b"\x00" * 32
ANY_BASIS = b"\x00" * 32  # a digest no basis has


@dataclasses.dataclass
class Scene:
    team: Any
    acme: int
    beta: int
    admin: Caller
    alice: Caller  # an engineer granted acme
    bob: int  # an engineer with no grant


def _ids(team: Any, name: str) -> Caller:
    with team.admin.store.transaction() as s:
        row = s.execute(select(m.Engineer.id, m.Engineer.key_generation).where(m.Engineer.name == name)).one()
    return Caller(int(row[0]), int(row[1]))


@pytest.fixture
def scene(team: Any) -> Scene:
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta Ltd")
    for i in range(3):
        admin.secrets.add(f"acme/s{i}", password=f"acme-Pw-{i}")
    admin.secrets.add("beta/s0", password="beta-Pw-0")
    team.engineer("alice")
    team.engineer("bob")
    admin.grants.grant("alice", "acme")
    with admin.store.transaction() as s:
        ids = [int(i) for i in s.scalars(select(m.Client.id).order_by(m.Client.id))]
    return Scene(
        team, ids[0], ids[1], _ids(team, admin.engineer_name), _ids(team, "alice"), _ids(team, "bob").engineer_id
    )


def _authority(scene: Scene, recorder: Recorder, checks: RotationChecks | None = None) -> RotationAuthority:
    return RotationAuthority(scene.team.admin.store, checks or RotationChecks(), recorder, scene.team.clock)


def _state(scene: Scene) -> tuple[Any, ...]:
    with scene.team.admin.store.transaction() as s:
        keys = s.execute(
            select(m.ClientKey.client_id, m.ClientKey.version, m.ClientKey.state).order_by("client_id", "version")
        ).all()
        seals = s.scalar(select(func.count()).select_from(m.ClientKeySeal))
        rotations = s.execute(select(m.Rotation.id, m.Rotation.state, m.Rotation.done)).all()
        versions = s.execute(
            select(m.SecretVersion.secret_id, m.SecretVersion.key_version, m.SecretVersion.wrapped_dek).order_by(
                "secret_id"
            )
        ).all()
        clients = s.execute(select(m.Client.id, m.Client.current_key_version, m.Client.slug_blob)).all()
    return tuple(keys), seals, tuple(rotations), tuple(versions), tuple(clients)


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    engine = scene.team.admin.store.engine
    with recorded_statements(engine) as seen:
        yield seen


def _start(scene: Scene, recorder: Recorder, seal: RotationSeal | None = None, **changes: Any) -> Any:
    request = StartRequest(scene.admin, scene.acme, False, PIN)
    return _authority(scene, recorder).start(dataclasses.replace(request, **changes), seal or RotationSeal())


def _calls(scene: Scene, who: Caller, rotation_id: int) -> list[tuple[str, Any]]:
    authority = _authority(scene, Recorder())
    seal = RotationSeal()
    return [
        ("start", lambda: authority.start(StartRequest(who, scene.acme, True, PIN), seal)),
        ("open", lambda: authority.open(OpenRequest(who, rotation_id, PIN))),
        ("rewrap", lambda: authority.rewrap(BatchRequest(who, rotation_id, (0, 0), 10, ANY_BASIS), seal)),
        ("finish", lambda: authority.finish(FinishRequest(who, rotation_id, True))),
        ("list", lambda: authority.list(ListRequest(who, False))),
    ]


def test_an_engineer_is_refused_every_step_before_any_row_of_a_client_or_rotation_is_read(
    scene: Scene, statements: list[str]
) -> None:
    """An engineer with a grant (alice) asks for each step of a rotation of her own client."""
    rotation_id = _start(scene, Recorder()).rotation.id
    before = _state(scene)
    for step, call in _calls(scene, scene.alice, rotation_id):
        statements.clear()
        with pytest.raises(AccessDenied, match="not an admin"):
            call()
        assert statements, f"{step}: the authority read nothing"
        assert not [st for st in statements if READS_A_TARGET.search(st)], (step, statements)
    assert _state(scene) == before


def test_a_caller_of_another_key_generation_is_refused_before_any_row_is_read(
    scene: Scene, statements: list[str]
) -> None:
    stale = Caller(scene.admin.engineer_id, scene.admin.key_generation + 1)
    before = _state(scene)
    for step, call in _calls(scene, stale, 1):
        statements.clear()
        with pytest.raises(Exception, match="changed since this session was unlocked"):
            call()
        assert not [st for st in statements if READS_A_TARGET.search(st)], (step, statements)
    assert _state(scene) == before


FORGED: dict[str, Any] = {
    "client id as text": lambda sc: ("start", StartRequest(sc.admin, str(sc.acme), False, PIN)),
    "client id zero": lambda sc: ("start", StartRequest(sc.admin, 0, False, PIN)),
    "client id a bool": lambda sc: ("start", StartRequest(sc.admin, True, False, PIN)),
    "supersede not a bool": lambda sc: ("start", StartRequest(sc.admin, sc.acme, "yes", PIN)),
    "short organisation key": lambda sc: ("start", StartRequest(sc.admin, sc.acme, False, b"\x00" * 5)),
    "caller a tuple": lambda sc: ("start", StartRequest(tuple(dataclasses.astuple(sc.admin)), sc.acme, False, PIN)),
    "negative engineer id": lambda sc: ("list", ListRequest(Caller(-1, 0), False)),
    "batch of none": lambda sc: ("rewrap", BatchRequest(sc.admin, 1, (0, 0), 0, ANY_BASIS)),
    "batch of a million": lambda sc: ("rewrap", BatchRequest(sc.admin, 1, (0, 0), 10**6, ANY_BASIS)),
    "cursor a list": lambda sc: ("rewrap", BatchRequest(sc.admin, 1, [0, 0], 10, ANY_BASIS)),
    "cursor of three": lambda sc: ("rewrap", BatchRequest(sc.admin, 1, (0, 0, 0), 10, ANY_BASIS)),
    "negative cursor": lambda sc: ("rewrap", BatchRequest(sc.admin, 1, (-5, 0), 10, ANY_BASIS)),
    "a batch naming no basis": lambda sc: ("rewrap", BatchRequest(sc.admin, 1, (0, 0), 10, None)),
    "a basis as text": lambda sc: ("rewrap", BatchRequest(sc.admin, 1, (0, 0), 10, "digest")),
    "open of rotation zero": lambda sc: ("open", OpenRequest(sc.admin, 0, PIN)),
    "open with a short organisation key": lambda sc: ("open", OpenRequest(sc.admin, 1, b"\x00" * 5)),
    "a batch sent as an open": lambda sc: ("open", BatchRequest(sc.admin, 1, (0, 0), 10, ANY_BASIS)),
    "rotation id as text": lambda sc: ("finish", FinishRequest(sc.admin, "1", True)),
    "final not a bool": lambda sc: ("finish", FinishRequest(sc.admin, 1, 1)),
    "running_only not a bool": lambda sc: ("list", ListRequest(sc.admin, "no")),
    "a start sent as a finish": lambda sc: ("finish", StartRequest(sc.admin, sc.acme, False, PIN)),
    "versions of client zero": lambda sc: ("versions", VersionsRequest(sc.admin, 0)),
    "versions of a client named by text": lambda sc: ("versions", VersionsRequest(sc.admin, "acme")),
}


def test_a_forged_request_field_is_refused_before_any_sql(scene: Scene, statements: list[str]) -> None:
    before, recorder = _state(scene), Recorder()
    authority = _authority(scene, recorder)
    seal = RotationSeal()
    for case, forge in FORGED.items():
        method, request = forge(scene)
        statements.clear()
        args = (request, seal) if method in ("start", "rewrap") else (request,)
        with pytest.raises(InvalidInput):
            getattr(authority, method)(*args)
        assert statements == [], (case, statements)
    assert seal.drafts == [] and seal.batches == [] and recorder.events == []
    assert _state(scene) == before


def test_a_start_stores_exactly_the_new_key_the_keyholder_made(scene: Scene) -> None:
    recorder, seal = Recorder(), RotationSeal()
    started = _start(scene, recorder, seal)
    draft = seal.drafts[0]
    assert (draft.client.id, draft.new_version, draft.old_key.record.version) == (scene.acme, 2, 1)
    assert draft.old_key.kind == "recovery" and draft.old_key.blob is not None  # ciphertext, opened by the keyholder
    assert [g.engineer.id for g in draft.grantees] == [scene.alice.engineer_id]
    rotation = started.rotation
    assert (rotation.client_id, rotation.from_version, rotation.to_version, rotation.state) == (
        scene.acme,
        1,
        2,
        "running",
    )
    assert (rotation.done, rotation.total) == (0, 3)
    assert recorder.events == [(START, scene.acme, {"from_version": 1, "to_version": 2, "data_keys": 3})]
    with scene.team.admin.store.transaction() as s:
        client = s.get(m.Client, scene.acme)
        assert client is not None
        assert (client.current_key_version, client.slug_blob, client.audit_keys_blob) == (
            2,
            versioned_blob(2, b"slug"),
            versioned_blob(2, b"audit ring"),
        )
        new, old = s.get(m.ClientKey, (scene.acme, 2)), s.get(m.ClientKey, (scene.acme, 1))
        assert new is not None and old is not None
        assert (new.state, new.fingerprint, new.signature, new.signed_by) == (
            "active",
            b"\x11" * 32,
            SIGNATURE,
            scene.admin.engineer_id,
        )
        assert old.state == "retiring"
        seals = s.execute(
            select(m.ClientKeySeal.recipient_kind, m.ClientKeySeal.recipient_id).where(
                m.ClientKeySeal.client_id == scene.acme, m.ClientKeySeal.version == 2
            )
        ).all()
    assert sorted(seals) == sorted([("recovery", draft.root_version), ("engineer", scene.alice.engineer_id)])


def _sealed_also_to_bob(scene: Scene) -> Any:
    return lambda d, made: dataclasses.replace(made, engineer_seals=(*made.engineer_seals, (scene.bob, b"\x02to bob")))


NEW_KEY_FORGERIES: dict[str, Any] = {
    "sealed also to an engineer not handed out": _sealed_also_to_bob,
    "a grantee left out": lambda sc: lambda d, made: dataclasses.replace(made, engineer_seals=()),
    "a grantee sealed to twice": lambda sc: (
        lambda d, made: dataclasses.replace(made, engineer_seals=made.engineer_seals * 2)
    ),
    "another version": lambda sc: lambda d, made: dataclasses.replace(made, version=made.version + 1),
    "a field under the old version": lambda sc: (
        lambda d, made: dataclasses.replace(made, slug_blob=versioned_blob(1, b"slug"))
    ),
    "a record not signed by the caller": lambda sc: lambda d, made: dataclasses.replace(made, signature=b"\x00" * 64),
}


def test_a_new_key_that_is_not_what_was_handed_out_is_refused_and_nothing_written(scene: Scene) -> None:
    """A compromised keyholder (or a transport that changes its answer) cannot make the
    authority seal the new version to an engineer it did not name, or store it half."""
    before = _state(scene)
    for case, forge in NEW_KEY_FORGERIES.items():
        recorder = Recorder()
        with pytest.raises(UntrustedRecord):
            _start(scene, recorder, RotationSeal(forge(scene)))
        assert recorder.events == [], case
        assert _state(scene) == before, case


def test_a_rotation_under_way_is_refused_unless_superseded(scene: Scene) -> None:
    first = _start(scene, Recorder()).rotation
    before, recorder = _state(scene), Recorder()
    with pytest.raises(InvalidInput, match=re.escape(ALREADY_RUNNING)):
        _start(scene, recorder)
    assert recorder.events == [] and _state(scene) == before
    second = _start(scene, recorder, supersede=True).rotation
    assert (second.from_version, second.to_version) == (2, 3)
    listed = {r.id: r.state for r in _authority(scene, Recorder()).list(ListRequest(scene.admin, False))}
    assert listed == {first.id: "superseded", second.id: "running"}


def _rotated(scene: Scene) -> int:
    return int(_start(scene, Recorder()).rotation.id)


def _first_batch(scene: Scene, rotation_id: int, size: int = 10) -> BatchRequest:
    """The first batch of a rotation, naming the digest of its basis as the authority reads it."""
    basis = _authority(scene, Recorder()).open(OpenRequest(scene.admin, rotation_id, PIN))
    return BatchRequest(scene.admin, rotation_id, (0, 0), size, basis.digest())


BATCH_FORGERIES: dict[str, Any] = {
    "a row not handed out (another client's secret)": lambda sc, beta: (
        lambda b, made: [
            made[0]._replace(secret_id=beta),
            *made[1:],
        ]
    ),
    "two rows swapped": lambda sc, beta: lambda b, made: [made[1], made[0], *made[2:]],
    "a row left out": lambda sc, beta: lambda b, made: made[:-1],
    "a row that is not a re-wrapped key": lambda sc, beta: lambda b, made: [tuple(made[0]), *made[1:]],
    "a row added": lambda sc, beta: lambda b, made: [*made, Rewrapped(beta, 1, versioned_blob(2))],
    "a key under the old version": lambda sc, beta: (
        lambda b, made: [
            made[0]._replace(wrapped_dek=versioned_blob(1)),
            *made[1:],
        ]
    ),
}


def test_a_batch_stores_rewrapped_keys_only_for_the_rows_it_handed_out(scene: Scene) -> None:
    rotation_id = _rotated(scene)
    with scene.team.admin.store.transaction() as s:
        beta_secret = int(s.scalar(select(m.Secret.id).where(m.Secret.client_id == scene.beta)))
    before = _state(scene)
    authority = _authority(scene, Recorder())
    request = _first_batch(scene, rotation_id)
    for case, forge in BATCH_FORGERIES.items():
        seal = RotationSeal(forge(scene, beta_secret))
        with pytest.raises(UntrustedRecord, match="not the rows this batch handed out"):
            authority.rewrap(request, seal)
        assert len(seal.batches) == 1, case
        assert _state(scene) == before, case
    seal = RotationSeal()
    done = authority.rewrap(request, seal)
    batch = seal.batches[0]
    assert {r.key_version for r in batch.rows} == {1} and len(batch.rows) == 3
    assert (batch.rotation_id, batch.basis) == (rotation_id, request.basis)  # rows only: the keys came at the open
    assert (done.count, done.done, done.total) == (3, 3, 3)
    with scene.team.admin.store.transaction() as s:
        stored = s.execute(
            select(m.SecretVersion.key_version, m.SecretVersion.wrapped_dek)
            .join(m.Secret)
            .where(m.Secret.client_id == scene.acme)
        ).all()
        beta_rows = s.execute(
            select(m.SecretVersion.key_version).join(m.Secret).where(m.Secret.client_id == scene.beta)
        ).all()
    assert sorted(stored) == sorted((2, r.wrapped_dek) for r in seal.rewrap(batch))
    assert beta_rows == [(1,)]  # another client's rows are never touched
    assert authority.rewrap(dataclasses.replace(request, after=done.cursor), RotationSeal()).count == 0


def test_an_open_hands_the_rotation_and_every_version_with_its_signer_and_recovery_copy(scene: Scene) -> None:
    rotation_id = _rotated(scene)
    authority = _authority(scene, Recorder())
    basis = authority.open(OpenRequest(scene.admin, rotation_id, PIN))
    row = basis.rotation
    assert (row.id, row.client_id, row.to_version, row.state) == (rotation_id, scene.acme, 2, "running")
    assert basis.me.id == scene.admin.engineer_id
    assert [(k.record.version, k.record.state, k.kind) for k in basis.keys] == [
        (1, "retiring", "recovery"),
        (2, "active", "recovery"),
    ]
    assert all(k.blob and k.recipient_id == basis.root_version and k.signer is not None for k in basis.keys)
    assert authority.open(OpenRequest(scene.admin, rotation_id, PIN)).digest() == basis.digest()  # nothing changed
    with pytest.raises(NotFound, match="no such rotation"):
        authority.open(OpenRequest(scene.admin, rotation_id + 100, PIN))


def _counters(scene: Scene) -> tuple[Any, ...]:
    """The rotations' done counters and the client-key versions' encryption counts."""
    with scene.team.admin.store.transaction() as s:
        done = s.execute(select(m.Rotation.id, m.Rotation.done).order_by(m.Rotation.id)).all()
        counts = s.execute(select(m.ClientKey.client_id, m.ClientKey.version, m.ClientKey.encryptions)).all()
    return tuple(done), tuple(sorted(counts))


def _rotation(**values: Any) -> Any:
    return lambda sc: lambda s: s.execute(update(m.Rotation).where(m.Rotation.client_id == sc.acme).values(**values))


def _version(version: int, **values: Any) -> Any:
    def change(sc: Scene) -> Any:
        where = (m.ClientKey.client_id == sc.acme, m.ClientKey.version == version)
        return lambda s: s.execute(update(m.ClientKey).where(*where).values(**values))

    return change


def _recovery_copy_of_beta(sc: Scene) -> Any:
    def swap(s: Any) -> None:
        theirs = s.scalar(select(m.ClientKeySeal.blob).where(m.ClientKeySeal.client_id == sc.beta))
        mine = (m.ClientKeySeal.client_id == sc.acme, m.ClientKeySeal.recipient_kind == "recovery")
        s.execute(update(m.ClientKeySeal).where(*mine).values(blob=theirs))

    return swap


def _signer_certificate(sc: Scene) -> Any:
    return lambda s: s.execute(update(m.Engineer).where(m.Engineer.id == sc.admin.engineer_id).values(certified_at=1))


# What a DBA rewrites between the open (or one batch) and the next batch.
BASIS_CHANGES: dict[str, Any] = {
    "the rotation's new version set back": _rotation(to_version=1),
    "the rotation's old version changed": _rotation(from_version=7),
    "the rotation moved to another client": lambda sc: _rotation(client_id=sc.beta)(sc),
    "a version's record re-fingerprinted": _version(2, fingerprint=b"\x33" * 16),
    "a version's signature replaced": _version(1, signature=b"\x00" * 64),
    "a retiring version made active": _version(1, state="active"),
    "a recovery copy swapped for another client's": _recovery_copy_of_beta,
    "the signer's certification time rewritten": _signer_certificate,
}


def test_a_batch_whose_basis_a_dba_changed_is_refused_before_any_data_key_is_read(
    scene: Scene, statements: list[str]
) -> None:
    """The request names the digest of the basis the keyholder verified; the authority reads
    the rotation and its client's key versions again in the batch's unit and refuses when
    they differ: the keyholder is handed no row, nothing is written. (The caller check of
    this stand-in only asks for a certificate, so the signer's row is the admin's own.)"""
    store = scene.team.admin.store
    rotation_id = _rotated(scene)
    request = _first_batch(scene, rotation_id, size=1)
    assert _authority(scene, Recorder()).rewrap(request, RotationSeal()).count == 1  # the first batch commits
    before, counters = _state(scene), _counters(scene)
    for case, change in {"a digest no basis has": None, **BASIS_CHANGES}.items():
        with rows_restored_after(store, m.Rotation, m.ClientKey, m.ClientKeySeal, m.Engineer):
            if change is not None:
                with store.transaction() as s:
                    change(scene)(s)
            seal = RotationSeal()
            statements.clear()
            named = ANY_BASIS if change is None else request.basis
            with pytest.raises(IntegrityError, match="changed since this admin verified them"):
                _authority(scene, Recorder()).rewrap(dataclasses.replace(request, basis=named, after=(0, 0)), seal)
            assert seal.batches == [], case  # the keyholder was handed nothing
            assert not [st for st in statements if "secret_versions" in st], (case, statements)
            assert _counters(scene) == counters, case
        assert _state(scene) == before, case  # nothing written by the batch (the DBA's change undone)
    # the control: the DBA's changes undone, the same request re-wraps the next row
    assert _authority(scene, Recorder()).rewrap(dataclasses.replace(request, after=(0, 0)), RotationSeal()).count == 1


def test_a_finish_never_destroys_a_version_a_data_key_still_refers_to(scene: Scene) -> None:
    """After the re-wrap, a DBA writes an old wrapped key back into one row: the first
    finish walks again, the final one ends the rotation but keeps that version and its
    copies (destroying it would make the row unreadable)."""
    rotation_id = _rotated(scene)
    authority = _authority(scene, Recorder())
    authority.rewrap(_first_batch(scene, rotation_id), RotationSeal())
    with scene.team.admin.store.transaction() as s:
        first = s.scalar(select(m.Secret.id).where(m.Secret.client_id == scene.acme).order_by(m.Secret.id))
        s.execute(update(m.SecretVersion).where(m.SecretVersion.secret_id == first).values(key_version=1))
    recorder = Recorder()
    authority = _authority(scene, recorder)
    again = authority.finish(FinishRequest(scene.admin, rotation_id, False))
    assert (again.ended, again.destroyed, again.rotation.state) == (False, (), "running") and recorder.events == []
    final = authority.finish(FinishRequest(scene.admin, rotation_id, True))
    assert (final.ended, final.destroyed, final.rotation.state) == (True, (), "done")
    assert recorder.events == [(FINISH, scene.acme, {"to_version": 2, "data_keys": 3})]
    with scene.team.admin.store.transaction() as s:
        old = s.get(m.ClientKey, (scene.acme, 1))
        copies = s.scalar(
            select(func.count())
            .select_from(m.ClientKeySeal)
            .where(m.ClientKeySeal.client_id == scene.acme, m.ClientKeySeal.version == 1)
        )
    assert old is not None and old.state == "retiring" and copies


def test_a_finish_destroys_a_retiring_version_nothing_refers_to(scene: Scene) -> None:
    rotation_id = _rotated(scene)
    authority = _authority(scene, Recorder())
    authority.rewrap(_first_batch(scene, rotation_id), RotationSeal())
    final = authority.finish(FinishRequest(scene.admin, rotation_id, False))
    assert (final.ended, final.destroyed, final.rotation.state) == (True, (1,), "done")
    with scene.team.admin.store.transaction() as s:
        old = s.get(m.ClientKey, (scene.acme, 1))
        copies = s.scalar(
            select(func.count())
            .select_from(m.ClientKeySeal)
            .where(m.ClientKeySeal.client_id == scene.acme, m.ClientKeySeal.version == 1)
        )
    assert old is not None and old.state == "destroyed" and copies == 0
    again = authority.finish(FinishRequest(scene.admin, rotation_id, True))
    assert (again.ended, again.destroyed) == (True, ())  # done already: nothing more happens


def test_versions_are_shown_to_a_grantee_and_refused_to_an_engineer_without_a_grant_before_any_key_row(
    scene: Scene, statements: list[str]
) -> None:
    authority = _authority(scene, Recorder())
    bob = _ids(scene.team, "bob")
    statements.clear()
    with pytest.raises(NotFound, match="no grant"):
        authority.versions(VersionsRequest(bob, scene.acme))
    assert statements and not [st for st in statements if READS_A_TARGET.search(st)], statements
    with pytest.raises(NotFound, match="no grant"):  # alice's grant is for acme, not beta
        authority.versions(VersionsRequest(scene.alice, scene.beta))
    _start(scene, Recorder())
    shown = authority.versions(VersionsRequest(scene.alice, scene.acme))
    assert [(v.version, v.state) for v in shown] == [(1, "retiring"), (2, "active")]
