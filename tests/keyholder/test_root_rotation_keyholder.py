"""The root rotation's keyholder against an authority that hands tampered rows.

Each case runs a real ``keys.rotate_root`` of an admin whose transport passes the draft and
each page of client keys through a function that changes them: the authority of an insider
who can write the database (a DBA), or a compromised authority. A swapped recovery copy is
never re-sealed to the new recovery key; a stale or forged root-key record opens nothing
current; whatever is refused inside the unit of work leaves the vault as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from vault.authority.engineer_requests import RootCopy
from vault.authority.root_rotation_requests import ClientPage, RootDraft
from vault.errors import DecryptionFailed, IntegrityError, UntrustedRecord
from vault.storage import models as m


class TamperingTransport:
    """Forwards to the real transport; the draft and each page go through ``tamper``."""

    def __init__(self, real: Any, tamper: Callable[[Any], Any]) -> None:
        self.real, self.tamper = real, tamper

    def rotate_root(self, request: Any, seal: Any, unit: Any = None) -> Any:
        tamper = self.tamper

        class Seal:
            def plan(self, draft: RootDraft) -> Any:
                return seal.plan(tamper(draft))

            def reseal(self, page: ClientPage) -> Any:
                return seal.reseal(tamper(page))

        return self.real.rotate_root(request, Seal(), unit)


@dataclasses.dataclass
class Scene:
    team: Any
    acme: int
    beta: int


@pytest.fixture
def scene(team: Any) -> Scene:
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta Ltd")
    admin.secrets.add("acme/s0", password="acme-Pw-0")
    admin.secrets.add("beta/s0", password="beta-Pw-0")
    with admin.store.transaction() as s:
        ids = [int(i) for i in s.scalars(select(m.Client.id).order_by(m.Client.id))]
    return Scene(team, ids[0], ids[1])


def _keys(scene: Scene) -> Any:
    return scene.team.admin.root_rotator.keys


def _tamper_with(scene: Scene, tamper: Callable[[Any], Any]) -> None:
    keyholder = scene.team.admin.root_rotator.keyholder
    real = keyholder.transport
    while isinstance(real, TamperingTransport):
        real = real.real
    keyholder.transport = TamperingTransport(real, tamper)
    _keys(scene).client_keys.clear()  # the copies are opened as a fresh session would: from the recovery key


def _state(scene: Scene) -> tuple[Any, ...]:
    with scene.team.admin.store.transaction() as s:
        roots = s.execute(select(m.RootKey.version, m.RootKey.state).order_by(m.RootKey.version)).all()
        seals = s.execute(
            select(m.ClientKeySeal.client_id, m.ClientKeySeal.version, m.ClientKeySeal.recipient_id)
        ).all()
        org = s.scalar(select(m.VaultInfo.org_signing_public))
        tags = s.execute(select(m.Client.id, m.Client.slug_tag)).all()
        head = s.scalar(select(m.AuditHead.seq))
    return tuple(roots), sorted(seals), org, sorted(tags), head


def _pages_only(change: Callable[[ClientPage], ClientPage]) -> Callable[[Any], Any]:
    return lambda value: change(value) if isinstance(value, ClientPage) else value


def _swap_copies(page: ClientPage, one: tuple[int, int], two: tuple[int, int]) -> ClientPage:
    blobs = {(k.record.client_id, k.record.version): k.blob for k in page.keys}
    swapped = {one: blobs[two], two: blobs[one]}
    keys = tuple(
        dataclasses.replace(k, blob=swapped.get((k.record.client_id, k.record.version), k.blob)) for k in page.keys
    )
    return dataclasses.replace(page, keys=keys)


def test_recovery_copies_swapped_between_clients_are_never_resealed(scene: Scene) -> None:
    """A DBA swaps acme's and beta's recovery-sealed key copies in the page the authority
    returns: neither opens as its row (the copy is bound to client and version), so the
    rotation is refused whole and nothing is sealed to a new recovery key."""
    before = _state(scene)
    _tamper_with(scene, _pages_only(lambda p: _swap_copies(p, (scene.acme, 1), (scene.beta, 1))))
    with pytest.raises((UntrustedRecord, DecryptionFailed)):
        scene.team.admin.keys.rotate_root()
    assert _state(scene) == before
    _tamper_with(scene, lambda value: value)  # the control
    assert scene.team.admin.keys.rotate_root().refused == ()
    assert scene.team.admin.checkouts.reveal("beta/s0", reason="after the rotation") == "beta-Pw-0"


def test_a_swapped_copy_of_a_retiring_version_is_refused_and_never_resealed(scene: Scene) -> None:
    """acme has a retiring version 1 (a rotation under way) and a current version 2; a DBA
    puts version 2's recovery copy in version 1's place. Version 1 does not open as itself:
    it is named, not re-sealed, and its copies are deleted; version 2 is re-sealed."""
    admin = scene.team.admin
    with admin.store.transaction() as s:
        admin.keys.start_client_rotation(s, admin.clients.client(s, "acme"))
    _tamper_with(
        scene,
        _pages_only(
            lambda p: dataclasses.replace(
                p,
                keys=tuple(
                    dataclasses.replace(k, blob=next(o.blob for o in p.keys if o.record.version == 2))
                    if (k.record.client_id, k.record.version) == (scene.acme, 1)
                    else k
                    for k in p.keys
                ),
            )
        ),
    )
    result = admin.keys.rotate_root()
    assert result.refused == (f"client #{scene.acme} key version 1",)
    with admin.store.transaction() as s:
        recovery = {
            (c, v)
            for c, v in s.execute(
                select(m.ClientKeySeal.client_id, m.ClientKeySeal.version).where(
                    m.ClientKeySeal.recipient_kind == "recovery", m.ClientKeySeal.recipient_id == result.root_version
                )
            )
        }
    assert recovery == {(scene.acme, 2), (scene.beta, 1)}


def _old_root(scene: Scene) -> RootCopy:
    with scene.team.admin.store.transaction() as s:
        root = s.scalars(select(m.RootKey).where(m.RootKey.state == "active")).one()
        me = s.scalars(select(m.Engineer).where(m.Engineer.name == scene.team.admin.engineer_name)).one()
        sealed = s.get(m.RootSeal, (root.version, me.id))
        assert sealed is not None
        return RootCopy(root.version, root.recovery_public, sealed.blob)


def test_a_stale_root_key_record_is_refused(scene: Scene) -> None:
    """A DBA kept the previous root-key record and this admin's sealed copy of it, and the
    authority hands them back after a rotation: the bundle it opens holds an organisation key
    that is no longer current (and this session holds a newer one): nothing is written."""
    stale = _old_root(scene)
    scene.team.admin.keys.rotate_root()
    before = _state(scene)
    _tamper_with(scene, lambda v: dataclasses.replace(v, root=stale) if isinstance(v, RootDraft) else v)
    with pytest.raises(UntrustedRecord, match="older root key"):
        scene.team.admin.keys.rotate_root()
    assert _state(scene) == before
    _keys(scene).root = None  # a fresh session, which has not held the newer bundle
    with pytest.raises(UntrustedRecord, match="does not match"):
        scene.team.admin.keys.rotate_root()
    assert _state(scene) == before


def test_a_forged_root_key_record_is_refused(scene: Scene) -> None:
    """The authority names another recovery public key than the bundle sealed to the admin
    holds (a DBA rewrote the root-key row): refused before anything is made."""
    before = _state(scene)
    _keys(scene).root = None
    _tamper_with(
        scene,
        lambda v: (
            dataclasses.replace(v, root=dataclasses.replace(v.root, recovery_public=b"\x09" * 32))
            if isinstance(v, RootDraft)
            else v
        ),
    )
    with pytest.raises(UntrustedRecord, match="does not match"):
        scene.team.admin.keys.rotate_root()
    assert _state(scene) == before


def test_a_page_of_another_root_key_is_refused(scene: Scene) -> None:
    """The authority hands a page whose copies it says are for another recovery key."""
    before = _state(scene)
    _tamper_with(scene, _pages_only(lambda p: dataclasses.replace(p, root_version=p.root_version + 1)))
    with pytest.raises(UntrustedRecord, match="another root key"):
        scene.team.admin.keys.rotate_root()
    assert _state(scene) == before


def test_a_roster_row_raised_to_admin_gets_no_root_copy(scene: Scene) -> None:
    """A DBA raises bob's row to admin: his certificate no longer verifies, so the new bundle
    is not sealed to him and his certificate is not re-issued."""
    team = scene.team
    team.engineer("bob")
    _tamper_with(
        scene,
        lambda v: (
            dataclasses.replace(
                v, engineers=tuple(e._replace(role="admin") if e.name == "bob" else e for e in v.engineers)
            )
            if isinstance(v, RootDraft)
            else v
        ),
    )
    result = team.admin.keys.rotate_root()
    assert "bob" not in result.admins and any("bob" in entry for entry in result.refused)


def test_an_admins_removal_that_skips_the_root_rotation_is_reported(scene: Scene, monkeypatch: Any) -> None:
    """A compromised authority removes admin2 but skips the root rotation (admin2 still holds
    the current root bundle): the removing admin's keyholder holds no newer bundle after the
    answer, and says so."""
    team = scene.team
    team.engineer("admin2", role="admin")
    removal = team.admin.engineers._engineer_keyholder().transport.removal
    monkeypatch.setattr(removal.seams, "rotate_root", lambda s: None)
    with pytest.raises(IntegrityError, match="did not rotate the root key"):
        team.admin.engineers.remove("admin2")
    monkeypatch.undo()
    team.engineer("admin3", role="admin")
    team.admin.engineers.remove("admin3")  # the control: an honest authority rotates it
