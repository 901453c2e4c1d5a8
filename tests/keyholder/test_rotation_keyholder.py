"""The client-key rotation's keyholder against an authority that hands tampered rows.

Each case runs a real ``keys.rotate_client`` (the start) or a real re-wrap batch of an
admin whose transport passes what the authority hands the keyholder (the start's draft,
a batch) through a function that changes it: the authority of an insider who can write
the database, or a compromised authority. Every change must be refused with its error
and, since the keyholder refuses inside the authority's unit of work, nothing written (no
client-key version, no sealed copy, no rotation, no re-wrapped key, no event). At the
start, nothing is ever sealed to a key the keyholder has not verified (counted at
``sealing.seal``). The first run of each test, no change at all, is the control.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select, update

from vault.authority.rotation_requests import Batch, Grantee, GrantEvent, RotationBasis, StartDraft
from vault.crypto import blobs, sealing
from vault.errors import DecryptionFailed, UntrustedRecord
from vault.keyholder import rotation as keyholder_rotation
from vault.keyholder.rotation_grants import check_grant_events
from vault.storage import models as m
from vault.storage.rows import EngineerRow, GrantRow


class TamperingTransport:
    """Forwards to the real transport; what the authority hands the keyholder (the start's
    draft, a rotation's basis, each batch) goes through ``tamper`` if it is a ``kind``."""

    def __init__(self, real: Any, tamper: Callable[[Any], Any], kind: type) -> None:
        self.real, self.tamper, self.kind = real, tamper, kind

    def _through(self, value: Any) -> Any:
        return self.tamper(value) if isinstance(value, self.kind) else value

    def start(self, request: Any, seal: Any, unit: Any = None) -> Any:
        through = self._through

        class Seal:
            def new_key(self, draft: StartDraft) -> Any:
                return seal.new_key(through(draft))

        return self.real.start(request, Seal(), unit)

    def open(self, request: Any) -> Any:
        return self._through(self.real.open(request))

    def rewrap(self, request: Any, seal: Any) -> Any:
        through = self._through

        class Seal:
            def rewrap(self, batch: Batch) -> Any:
                return seal.rewrap(through(batch))

        return self.real.rewrap(request, Seal())

    def finish(self, request: Any) -> Any:
        return self.real.finish(request)

    def list(self, request: Any) -> Any:
        return self.real.list(request)

    def versions(self, request: Any) -> Any:
        return self.real.versions(request)


@dataclasses.dataclass
class Scene:
    team: Any
    acme: int
    beta: int
    bob: EngineerRow


def _engineer_row(s: Any, name: str) -> EngineerRow:
    row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).one()
    return EngineerRow(*(getattr(row, f) for f in EngineerRow._fields))


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
        bob = _engineer_row(s, "bob")
    return Scene(team, ids[0], ids[1], bob)


def _tamper_with(scene: Scene, tamper: Callable[[Any], Any], kind: type = StartDraft) -> None:
    keyholder = scene.team.admin.keys._rotation_keyholder()
    real = keyholder.transport
    while isinstance(real, TamperingTransport):
        real = real.real
    keyholder.transport = TamperingTransport(real, tamper, kind)


def _state(scene: Scene) -> tuple[Any, ...]:
    with scene.team.admin.store.transaction() as s:
        head = s.scalar(select(m.AuditHead.seq))
        keys = s.execute(select(m.ClientKey.client_id, m.ClientKey.version, m.ClientKey.state)).all()
        seals = s.scalar(select(func.count()).select_from(m.ClientKeySeal))
        rotations = s.execute(select(m.Rotation.id, m.Rotation.state, m.Rotation.done)).all()
        versions = s.execute(
            select(m.SecretVersion.secret_id, m.SecretVersion.key_version, m.SecretVersion.wrapped_dek)
        ).all()
    return head, sorted(keys), seals, sorted(rotations), sorted(versions)


@pytest.fixture
def sealed_to(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The public keys the keyholder sealed anything to while the test runs."""
    seen: list[bytes] = []
    real = sealing.seal

    def counting(public: bytes, *args: Any, **kwargs: Any) -> bytes:
        seen.append(public)
        return real(public, *args, **kwargs)

    monkeypatch.setattr(keyholder_rotation.sealing, "seal", counting)
    yield seen


def _grantee(draft: StartDraft, **changes: Any) -> StartDraft:
    [alice] = draft.grantees
    return dataclasses.replace(draft, grantees=(dataclasses.replace(alice, **changes),))


def _uncertified_key(draft: StartDraft) -> StartDraft:
    alice = draft.grantees[0].engineer
    return _grantee(draft, engineer=alice._replace(sealing_public=UNCERTIFIED))


UNCERTIFIED = sealing.KeyPair(b"\x42" * 32).public


def _other_client(scene: Scene) -> dict[str, Any]:
    with scene.team.admin.store.transaction() as s:
        beta = s.get(m.Client, scene.beta)
        assert beta is not None
        return {"slug_blob": beta.slug_blob, "name_blob": beta.name_blob}


START_ATTACKS: dict[str, Callable[[Scene], Callable[[StartDraft], StartDraft]]] = {
    "a grantee's sealing key swapped for one never certified": lambda sc: _uncertified_key,
    "an engineer without a grant handed as a grantee": lambda sc: (
        lambda d: dataclasses.replace(
            d, grantees=(*d.grantees, Grantee(sc.bob, d.grantees[0].grant, d.grantees[0].grant_signer))
        )
    ),
    "a revoked grant handed as live": lambda sc: (
        lambda d: _grantee(d, grant=d.grantees[0].grant._replace(revoked_at=sc.team.clock(), revoked_by=1))
    ),
    "a grant whose signer is not an admin": lambda sc: lambda d: _grantee(d, grant_signer=sc.bob),
    "a grantee whose account is disabled": lambda sc: (
        lambda d: _grantee(d, engineer=d.grantees[0].engineer._replace(status="disabled"))
    ),
    "the current key's record forged": lambda sc: (
        lambda d: dataclasses.replace(
            d,
            old_key=dataclasses.replace(
                d.old_key, record=dataclasses.replace(d.old_key.record, fingerprint=b"\x01" * 32)
            ),
        )
    ),
    "a draft for another client": lambda sc: (
        lambda d: dataclasses.replace(d, client=dataclasses.replace(d.client, id=sc.beta))
    ),
    "another client's fields": lambda sc: (
        lambda other: (
            lambda d: dataclasses.replace(d, client=dataclasses.replace(d.client, slug_blob=other["slug_blob"]))
        )
    )(_other_client(sc)),
    "another recovery key": lambda sc: lambda d: dataclasses.replace(d, root_version=d.root_version + 1),
    "a new version that does not follow the current one": lambda sc: (
        lambda d: dataclasses.replace(d, new_version=d.old_key.record.version)
    ),
    "the admin's own row demoted": lambda sc: lambda d: dataclasses.replace(d, me=d.me._replace(role="engineer")),
    # the authority hides the log's word on alice's grant: her grant's own event left out
    "the grantee's grant event left out": lambda sc: (
        lambda d: dataclasses.replace(
            d, grant_events=tuple(e for e in d.grant_events if e.seq != d.grantees[0].grant.event_seq)
        )
    ),
    # another event's details put under alice's grant event's number (they do not open there)
    "a grant event's details moved to another number": lambda sc: (
        lambda d: dataclasses.replace(
            d,
            grant_events=tuple(
                dataclasses.replace(e, seq=d.grantees[0].grant.event_seq + 1000) for e in d.grant_events
            ),
        )
    ),
}


def test_a_tampered_start_is_refused_seals_nothing_unverified_and_writes_nothing(
    scene: Scene, sealed_to: list[bytes]
) -> None:
    before = _state(scene)
    for case, attack in START_ATTACKS.items():
        _tamper_with(scene, attack(scene))
        sealed_to.clear()
        with pytest.raises((UntrustedRecord, DecryptionFailed)):
            scene.team.admin.keys.rotate_client("acme")
        assert sealed_to == [], case  # refused before anything was sealed
        assert _state(scene) == before, case
    # the control: the same start, untampered, seals to the recovery key and to alice
    _tamper_with(scene, lambda d: d)
    info = scene.team.admin.keys.rotate_client("acme", batch_size=2)
    assert (info.client, info.state, info.to_version, info.done) == ("acme", "done", 2, 3)
    with scene.team.admin.store.transaction() as s:
        alice = _engineer_row(s, "alice")
    assert UNCERTIFIED not in sealed_to and alice.sealing_public in sealed_to and len(sealed_to) == 2


def test_the_key_of_a_grantee_not_certified_is_never_sealed_to(scene: Scene, sealed_to: list[bytes]) -> None:
    """The insider's aim: a key of theirs, put in place of a grantee's, gets the new client key."""
    _tamper_with(scene, _uncertified_key)
    with pytest.raises(UntrustedRecord, match="keys or grant do not verify"):
        scene.team.admin.keys.rotate_client("acme")
    assert UNCERTIFIED not in sealed_to


def _rows_of(scene: Scene, client_id: int) -> list[tuple[int, int, bytes]]:
    with scene.team.admin.store.transaction() as s:
        return [
            (int(r[0]), int(r[1]), bytes(r[2]))
            for r in s.execute(
                select(m.SecretVersion.secret_id, m.SecretVersion.version, m.SecretVersion.wrapped_dek)
                .join(m.Secret)
                .where(m.Secret.client_id == client_id)
                .order_by(m.SecretVersion.secret_id)
            )
        ]


def _first_row(batch: Batch, **changes: Any) -> Batch:
    return dataclasses.replace(batch, rows=(batch.rows[0]._replace(**changes), *batch.rows[1:]))


def _swapped(batch: Batch) -> Batch:
    one, two = batch.rows[0], batch.rows[1]
    rows = (
        one._replace(wrapped_dek=two.wrapped_dek),
        two._replace(wrapped_dek=one.wrapped_dek),
    )
    return dataclasses.replace(batch, rows=rows + batch.rows[2:])


def _new_record(basis: RotationBasis, **changes: Any) -> RotationBasis:
    new = basis.rotation.to_version
    keys = tuple(
        dataclasses.replace(k, record=dataclasses.replace(k.record, **changes)) if k.record.version == new else k
        for k in basis.keys
    )
    return dataclasses.replace(basis, keys=keys)


def _rotation(basis: RotationBasis, **changes: Any) -> RotationBasis:
    return dataclasses.replace(basis, rotation=dataclasses.replace(basis.rotation, **changes))


# What the authority hands at the open of a rotation's re-wrap, changed.
BASIS_ATTACKS: dict[str, Callable[[Scene], Callable[[RotationBasis], RotationBasis]]] = {
    "a basis of another client's rotation": lambda sc: lambda b: _rotation(b, client_id=sc.beta),
    "a basis of another rotation": lambda sc: lambda b: _rotation(b, id=b.rotation.id + 1),
    "the rotation's new version set back to the old one": lambda sc: lambda b: _rotation(b, to_version=1),
    "the new version's record forged": lambda sc: lambda b: _new_record(b, fingerprint=b"\x02" * 32),
    "the new version's record destroyed": lambda sc: lambda b: _new_record(b, state="destroyed"),
    "the new version's copy missing": lambda sc: (
        lambda b: dataclasses.replace(b, keys=tuple(k for k in b.keys if k.record.version != b.rotation.to_version))
    ),
    "the new version's recovery copy blanked": lambda sc: (
        lambda b: dataclasses.replace(
            b, keys=tuple(dataclasses.replace(k, blob=None) if k.record.version == 2 else k for k in b.keys)
        )
    ),
    "a version handed twice": lambda sc: lambda b: dataclasses.replace(b, keys=b.keys + b.keys[-1:]),
    "the admin's own row demoted": lambda sc: lambda b: dataclasses.replace(b, me=b.me._replace(role="engineer")),
    "another vault's basis": lambda sc: lambda b: dataclasses.replace(b, vault_id=b"\x07" * 16),
}

# What the authority hands in a batch (after an untampered open), changed.
BATCH_ATTACKS: dict[str, Callable[[Scene], Callable[[Batch], Batch]]] = {
    "a wrapped key of another client": lambda sc: (
        lambda dek: lambda b: _first_row(b, wrapped_dek=dek)  # read before the batch's unit of work
    )(_rows_of(sc, sc.beta)[0][2]),
    "wrapped keys swapped between two rows": lambda sc: _swapped,
    "a row said to be another secret's": lambda sc: lambda b: _first_row(b, secret_id=b.rows[1].secret_id),
    "a row said to be wrapped by the new version": lambda sc: lambda b: _first_row(b, key_version=2),
    "a row said to be wrapped by a version the basis does not hold": lambda sc: lambda b: _first_row(b, key_version=9),
    "a batch of another rotation": lambda sc: lambda b: dataclasses.replace(b, rotation_id=b.rotation_id + 1),
    "a batch under another basis": lambda sc: lambda b: dataclasses.replace(b, basis=b"\x00" * 32),
    "rows that are not wrapped keys": lambda sc: lambda b: dataclasses.replace(b, rows=tuple(map(tuple, b.rows))),
}


def test_a_tampered_basis_or_batch_is_refused_whole_and_nothing_is_rewrapped(scene: Scene) -> None:
    admin = scene.team.admin
    with admin.store.transaction() as s:
        rotation_id = admin.keys.start_client_rotation(s, admin.clients.client(s, "acme"))
    keyholder = admin.keys._rotation_keyholder()
    before = _state(scene)
    for kind, attacks in ((RotationBasis, BASIS_ATTACKS), (Batch, BATCH_ATTACKS)):
        for case, attack in attacks.items():
            _tamper_with(scene, attack(scene), kind)
            keyholder.opened.clear()  # the basis is handed again, as in a resume
            keyholder.cache.pop((scene.acme, 2), None)  # the new key is opened from its sealed copy, as in a resume
            with pytest.raises((UntrustedRecord, DecryptionFailed)):
                admin.keys._rewrap_batch(rotation_id, 10, None)
            assert _state(scene) == before, case
            assert keyholder.cursors.get(rotation_id) is None, case
            assert rotation_id not in keyholder.opened, case  # nothing kept of a refused basis or batch
    _tamper_with(scene, lambda b: b, Batch)
    assert admin.keys._rewrap_batch(rotation_id, 10, None) == 3
    with admin.store.transaction() as s:
        wrapped_by = dict(
            s.execute(
                select(m.Secret.client_id, func.max(m.SecretVersion.key_version))
                .join(m.Secret)
                .group_by(m.Secret.client_id)
            ).all()
        )
    assert wrapped_by == {scene.acme: 2, scene.beta: 1}  # every row of acme re-wrapped, none of beta
    admin.keys.resume()
    assert admin.keys.versions("acme") == [(1, "destroyed"), (2, "active")]
    for i in range(3):
        assert admin.checkouts.reveal(f"acme/s{i}", reason="check after rotation") == f"acme-Pw-{i}"


def test_an_unchanged_grantee_row_with_a_forged_grant_signature_is_refused(scene: Scene) -> None:
    """A DBA re-points a grant to another engineer's sealing key by editing the grant row:
    the signature covers the sealing key, so the grant no longer verifies."""

    def forged(draft: StartDraft) -> StartDraft:
        grant: GrantRow = draft.grantees[0].grant
        return _grantee(draft, grant=grant._replace(signature=b"\x00" * 64))

    before = _state(scene)
    _tamper_with(scene, forged)
    with pytest.raises(UntrustedRecord):
        scene.team.admin.keys.rotate_client("acme")
    assert _state(scene) == before


def test_a_revocation_blanked_in_the_database_keeps_the_new_key_from_the_revoked_grantee(
    scene: Scene, sealed_to: list[bytes]
) -> None:
    """A DBA clears alice's revocation (revoked columns blanked, her grant's signature still
    valid) and the authority hands her grant back as live: the revoke event of the audit log,
    opened by the keyholder, refuses the rotation, and nothing is sealed to alice's key."""
    admin = scene.team.admin
    admin.grants.revoke("alice", "acme")
    with admin.store.transaction() as s:
        alice = _engineer_row(s, "alice")
        grant = s.scalars(select(m.Grant).where(m.Grant.engineer_id == alice.id)).one()
        row = GrantRow(*(getattr(grant, f) for f in GrantRow._fields))
        signer = _engineer_row(s, admin.engineer_name)
    blanked = row._replace(revoked_at=None, revoked_by=None, revocation=None)
    before = _state(scene)
    _tamper_with(scene, lambda d: dataclasses.replace(d, grantees=(*d.grantees, Grantee(alice, blanked, signer))))
    with pytest.raises(UntrustedRecord, match="takes 'alice'"):
        admin.keys.rotate_client("acme")
    assert alice.sealing_public not in sealed_to and sealed_to == []
    assert _state(scene) == before
    # the control: the same rotation without alice handed back seals to the recovery key only
    _tamper_with(scene, lambda d: d)
    assert admin.keys.rotate_client("acme").state == "done"
    assert alice.sealing_public not in sealed_to


def test_a_resumed_rotation_set_back_to_an_older_key_version_rewraps_nothing(scene: Scene) -> None:
    """A DBA sets a running rotation's new version back to an older, still signed version (one
    an offboarded engineer may hold): on resume, the keyholder learns the rotation from the
    authority's listing, so the batch's own key records must show the version is the newest."""
    admin = scene.team.admin
    admin.keys.rotate_client("acme")  # v1 -> v2, done
    with admin.store.transaction() as s:
        rotation_id = admin.keys.start_client_rotation(s, admin.clients.client(s, "acme"))  # v2 -> v3
    admin.secrets.add("acme/new", password="acme-Pw-new")  # wrapped under v3
    with admin.store.transaction() as s:
        s.execute(update(m.Rotation).where(m.Rotation.id == rotation_id).values(to_version=2))
    keyholder = admin.keys._rotation_keyholder()
    keyholder.known.clear()  # a resume: this Vault object did not start the rotation
    keyholder.cache.clear()
    before = _state(scene)
    with pytest.raises(UntrustedRecord, match="newest admin-signed"):
        admin.keys._rewrap_batch(rotation_id, 10, None)
    assert _state(scene) == before
    assert keyholder.cursors.get(rotation_id) is None


# -- grant events from before issue 12 (no grant id in the details) -------------------------

LEGACY_CLIENT = 7
LEGACY_RING = b"\x11" * 32  # the client's audit-key ring: one key, version 1


def _legacy_event(seq: int, action: str, details: dict[str, Any]) -> GrantEvent:
    blob = blobs.encrypt_audit_detail(LEGACY_RING, 1, json.dumps(details).encode(), LEGACY_CLIENT, seq, action)
    return GrantEvent(seq, action, 1, blob)


def _legacy_draft(*events: GrantEvent) -> Any:
    """A start's draft as the check reads it: alice's grant row from before issue 12 (no event
    number on the row), and the client's grant and revoke events as the authority hands them."""
    alice = EngineerRow(3, "alice", "engineer", "active", 1, None, None, None, None)
    grant = GrantRow(21, alice.id, LEGACY_CLIENT, 1, 1_700_000_000, None, b"s" * 64, None, None, None, None, None)
    return SimpleNamespace(
        client=SimpleNamespace(id=LEGACY_CLIENT), grantees=(Grantee(alice, grant, None),), grant_events=events
    )


def test_a_grant_from_before_issue_12_is_confirmed_by_the_engineers_last_grant_event() -> None:
    """Neither the grant row nor its events name the grant: the keyholder takes alice's last
    grant event as her grant's own. A re-grant after a revoke (grant, revoke, grant) keeps her
    a grantee; a revoke after her last grant refuses."""
    grant, revoke = {"engineer": "alice", "client": "acme"}, {"engineer": "alice", "client": "acme"}
    regranted = _legacy_draft(
        _legacy_event(5, "grant", grant), _legacy_event(6, "revoke", revoke), _legacy_event(9, "grant", grant)
    )
    check_grant_events(regranted, LEGACY_RING)  # no error: the grant at 9 is hers
    check_grant_events(_legacy_draft(_legacy_event(5, "grant", grant)), LEGACY_RING)
    taken_back = _legacy_draft(_legacy_event(5, "grant", grant), _legacy_event(6, "revoke", revoke))
    with pytest.raises(UntrustedRecord, match="takes 'alice'"):
        check_grant_events(taken_back, LEGACY_RING)


def test_a_grant_row_without_an_event_no_grant_event_vouches_for_is_refused() -> None:
    """A grant row with no event number, and no grant event of the engineer in the log (a DBA
    replays an old signed grant row with its event number blanked, or a log whose grant events
    are gone): nothing in the audit log vouches for it, so no new client key is sealed to it."""
    with pytest.raises(UntrustedRecord, match="does not hold the event of 'alice'"):
        check_grant_events(_legacy_draft(), LEGACY_RING)
    other = {"engineer": "bob", "client": "acme"}
    with pytest.raises(UntrustedRecord, match="does not hold the event of 'alice'"):
        check_grant_events(_legacy_draft(_legacy_event(5, "grant", other)), LEGACY_RING)
