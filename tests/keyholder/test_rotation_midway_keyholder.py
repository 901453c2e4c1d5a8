"""A DBA rewrites what a client-key rotation's batches share, between two of its batches.

The admin's keyholder verified the rotation's basis once, at the open of the re-wrap: the
rotation row, and each client-key version's signed record, signer and recovery copy. Each
batch names the digest of what it verified, and the authority compares it with the rows it
reads in the batch's own unit of work. The insider here has the database: between two
committed batches they rewrite the rotation row, a recovery copy or a client-key record.
The next batch must be refused (``STALE_BASIS``) with nothing written: no data key
re-wrapped, no counter moved, the cursor where it was, the basis forgotten. A resume
verifies the basis afresh (a fresh Vault object: no key cached), so a change that does not
verify is refused there too, and a harmless one lets the rotation finish.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, update

from vault.authority.rotation_requests import STALE_BASIS
from vault.errors import IntegrityError
from vault.storage import models as m

SECRETS = 6


@dataclasses.dataclass
class Midway:
    team: Any
    rotation_id: int
    acme: int
    beta: int


@pytest.fixture
def midway(team: Any) -> Midway:
    """Client acme's rotation (1 -> 2), opened, its first batch of two committed."""
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta Ltd")
    for i in range(SECRETS):
        admin.secrets.add(f"acme/s{i}", password=f"acme-Pw-{i}")
    admin.secrets.add("beta/s0", password="beta-Pw-0")
    with admin.store.transaction() as s:
        acme, beta = (int(i) for i in s.scalars(select(m.Client.id).order_by(m.Client.id)))
        rotation_id = admin.keys.start_client_rotation(s, admin.clients.client(s, "acme"))
    admin.keys._rotation_keyholder().open(rotation_id)
    assert admin.keys._rewrap_batch(rotation_id, 2, None) == 2
    return Midway(team, rotation_id, acme, beta)


def _written(mw: Midway | Any) -> tuple[Any, ...]:
    """What a batch writes: the wrapped data keys, the rotations' counters, the client keys'
    encryption counts, the audit head (``mw``: a Midway, or a team)."""
    team = getattr(mw, "team", mw)
    with team.admin.store.transaction() as s:
        keys = s.execute(
            select(m.SecretVersion.secret_id, m.SecretVersion.key_version, m.SecretVersion.wrapped_dek).order_by(
                m.SecretVersion.secret_id, m.SecretVersion.version
            )
        ).all()
        done = s.execute(select(m.Rotation.id, m.Rotation.done).order_by(m.Rotation.id)).all()
        counts = s.execute(select(m.ClientKey.client_id, m.ClientKey.version, m.ClientKey.encryptions)).all()
        head = s.scalar(select(func.max(m.AuditEvent.seq)))
    return tuple(keys), tuple(done), tuple(sorted(counts)), head


def _rotation(**values: Any) -> Callable[[Midway], Any]:
    return lambda mw: update(m.Rotation).where(m.Rotation.id == mw.rotation_id).values(**values)


def _version(version: int, **values: Any) -> Callable[[Midway], Any]:
    return lambda mw: (
        update(m.ClientKey).where(m.ClientKey.client_id == mw.acme, m.ClientKey.version == version).values(**values)
    )


def _recovery_copy_of_beta(mw: Midway) -> Any:
    seal = m.ClientKeySeal
    theirs = select(seal.blob).where(seal.client_id == mw.beta, seal.recipient_kind == "recovery").scalar_subquery()
    mine = (seal.client_id == mw.acme, seal.version == 2, seal.recipient_kind == "recovery")
    return update(seal).where(*mine).values(blob=theirs)


# The DBA's statement, and whether a fresh verification of the basis refuses it as well.
DBA_CHANGES: dict[str, tuple[Callable[[Midway], Any], bool]] = {
    "the rotation's new version set back to the old one": (_rotation(to_version=1), True),
    "the new version's recovery copy swapped for another client's": (_recovery_copy_of_beta, True),
    "the new version's record re-fingerprinted": (_version(2, fingerprint=b"\x33" * 16), True),
    "the old version's signature replaced": (_version(1, signature=b"\x00" * 64), True),
    "the old version's record marked destroyed": (_version(1, state="destroyed"), True),
    "the rotation's old version rewritten": (_rotation(from_version=9), False),
}


@pytest.mark.parametrize("case", DBA_CHANGES)
def test_a_dba_change_between_two_batches_refuses_the_next_batch_and_writes_nothing(midway: Midway, case: str) -> None:
    change, refused_again = DBA_CHANGES[case]
    admin, rotation_id = midway.team.admin, midway.rotation_id
    keyholder = admin.keys._rotation_keyholder()
    cursor, before = keyholder.cursors[rotation_id], _written(midway)
    with admin.store.transaction() as s:
        s.execute(change(midway))

    with pytest.raises(IntegrityError, match=re.escape(STALE_BASIS)):
        admin.keys._rewrap_batch(rotation_id, 2, None)
    assert _written(midway) == before
    assert keyholder.cursors[rotation_id] == cursor and rotation_id not in keyholder.opened

    if refused_again:  # another process resumes: the basis it is handed does not verify
        fresh = midway.team.unlocked(admin.engineer_name)
        before = _written(midway)  # the unlock's own event appended
        with pytest.raises(IntegrityError):
            fresh.keys.resume(batch_size=2)
        assert _written(midway) == before
        return
    [info] = admin.keys.resume(batch_size=2)  # the same keyholder verifies the basis afresh
    assert (info.state, info.done, info.total) == ("done", SECRETS, SECRETS)
    for i in range(SECRETS):
        assert admin.checkouts.reveal(f"acme/s{i}", reason="check after rotation") == f"acme-Pw-{i}"


def test_an_untouched_basis_lets_every_batch_through(midway: Midway) -> None:
    """The control: the same rotation, no change, finishes from where the first batch left it."""
    admin = midway.team.admin
    before = _written(midway)
    assert admin.keys._rewrap_batch(midway.rotation_id, 2, None) > 0
    assert _written(midway) != before
    [info] = admin.keys.resume(batch_size=2)
    assert (info.state, info.done) == ("done", SECRETS)


# -- during a run (rotate_client, resume): the run verifies the basis afresh, once a batch -------


def _after_the_first_batch(admin: Any, monkeypatch: pytest.MonkeyPatch, act: Callable[[], None]) -> None:
    """``act()`` once, right after the first batch of the next run commits."""
    real, acted = admin.keys._rewrap_batch, []

    def rewrap(rotation_id: int, batch_size: int, progress: Any) -> int:
        count = real(rotation_id, batch_size, progress)
        if not acted:
            acted.append(act())
        return count

    monkeypatch.setattr(admin.keys, "_rewrap_batch", rewrap)


def _acme(team: Any) -> None:
    team.admin.clients.add("acme", "Acme Ltd")
    for i in range(SECRETS):
        team.admin.secrets.add(f"acme/s{i}", password=f"acme-Pw-{i}")


def test_a_root_rotation_between_two_batches_of_a_run_is_verified_afresh_and_the_run_finishes(
    team: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root rotation re-seals every client-key version to a new recovery key: the next batch
    is refused as stale, the run opens the rotation again (verifying the new copies) and ends."""
    admin = team.admin
    _acme(team)
    keyholder = admin.keys._rotation_keyholder()
    real_open, opened = keyholder.open, []
    monkeypatch.setattr(keyholder, "open", lambda rotation_id: opened.append(rotation_id) or real_open(rotation_id))
    _after_the_first_batch(admin, monkeypatch, admin.keys.rotate_root)
    info = admin.keys.rotate_client("acme", batch_size=2)
    assert (info.state, info.done, info.total) == ("done", SECRETS, SECRETS)
    assert len(opened) == 2  # the run's open, and the one after the refused batch
    assert admin.keys.versions("acme") == [(1, "destroyed"), (2, "active")]
    fresh = team.unlocked(admin.engineer_name)
    for i in range(SECRETS):
        assert fresh.checkouts.reveal(f"acme/s{i}", reason="check after rotation") == f"acme-Pw-{i}"


def test_a_dba_change_during_a_run_that_does_not_verify_stops_it_with_nothing_more_written(
    team: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = team.admin
    _acme(team)
    seen: list[tuple[Any, ...]] = []

    def dba() -> None:  # the new version's record re-fingerprinted: its signature no longer verifies
        with admin.store.transaction() as s:
            where = (m.ClientKey.client_id == s.scalar(select(m.Client.id)), m.ClientKey.version == 2)
            s.execute(update(m.ClientKey).where(*where).values(fingerprint=b"\x33" * 16))
        seen.append(_written(team))

    _after_the_first_batch(admin, monkeypatch, dba)
    with pytest.raises(IntegrityError, match="newest admin-signed"):
        admin.keys.rotate_client("acme", batch_size=2)
    assert seen and _written(team) == seen[0]
