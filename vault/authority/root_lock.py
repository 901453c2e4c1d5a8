"""The active recovery key's row as a lock between a root rotation and what seals to it.

A root rotation re-seals every client key's recovery copy (and every admin's root bundle) to the
new recovery key, then deletes every copy sealed to the old one, in one unit. On PostgreSQL (read
committed) a unit that seals a copy to the old key concurrently — a client added, a client key
rotated, an admin confirmed — and commits after the rotation's walk passed it would otherwise have
its copy re-sealed by nobody and then deleted: a client left with no recovery copy. SQLite
serialises writers, so there the race cannot happen.

So the rotation takes the active ``root_keys`` row ``FOR UPDATE`` first thing (``take_root``), and
every unit that seals to the recovery key takes that row ``FOR SHARE`` before it writes
(``hold_root``): it waits while a rotation runs, and once the rotation committed it finds the
version no longer active and refuses with ``ConcurrentChange`` (retried, then "try again"): nothing
is sealed to a destroyed key. On SQLite both are plain reads.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.errors import ConcurrentChange, UntrustedRecord
from vault.storage import models as m
from vault.storage.rows import ACTIVE

ROTATED = "the recovery key was rotated while this change was made"


def take_root(s: Session) -> m.RootKey:
    """The active root key's row, locked for a rotation (``FOR UPDATE`` on PostgreSQL)."""
    query = select(m.RootKey).where(m.RootKey.state == ACTIVE).order_by(m.RootKey.version.desc())
    root = s.scalars(query.with_for_update()).first()
    if root is None:
        raise UntrustedRecord("the vault has no active recovery key")
    return root


def hold_root(s: Session, version: int | None) -> int:
    """``version``, if it is still the active root key, its row held against a rotation until the
    unit ends (``FOR SHARE`` on PostgreSQL); else ``ConcurrentChange``."""
    if version is None:
        raise UntrustedRecord("the vault has no active recovery key")
    query = select(m.RootKey.state).where(m.RootKey.version == version).with_for_update(read=True)
    if s.scalar(query) != ACTIVE:
        raise ConcurrentChange(ROTATED)
    return version
