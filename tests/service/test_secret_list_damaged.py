"""``secret list`` against an insider who deletes a secret's current version row.

A writer of the database (no key needed) removes the row of a secret's current version.
Before the listing streamed, opening that secret failed and the whole listing said so;
a listing that joins secrets with their current version and passes over the secret
without one hides it from everyone who lists, in silence. It must be loud: the secret is
reported as damaged, for an admin and for an engineer with a grant, with a client filter
and without, and no ``secret-list`` event claims a listing that was not shown.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from vault.errors import IntegrityError
from vault.storage import models as m


@pytest.fixture
def damaged(team: Any) -> Any:
    team.admin.clients.add("acme", "Acme Ltd")
    for name in ("fw01", "sw01", "vpn"):
        team.admin.secrets.add(f"acme/{name}", password=f"{name}-Pw-1")
    team.admin.secrets.update("acme/sw01", password="sw01-Pw-2")
    with team.admin.store.transaction() as s:  # the insider: one DELETE, no key
        secret = s.scalars(select(m.Secret).where(m.Secret.current_version == 2)).one()
        s.execute(
            delete(m.SecretVersion).where(
                m.SecretVersion.secret_id == secret.id, m.SecretVersion.version == secret.current_version
            )
        )
    return team


def _lists(team: Any) -> int:
    with team.admin.store.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(m.AuditEvent).where(m.AuditEvent.action == "secret-list")))


def test_the_listing_of_a_secret_without_its_current_version_is_loud(damaged: Any) -> None:
    alice = damaged.engineer("alice")
    damaged.admin.grants.grant("alice", "acme")
    before = _lists(damaged)
    for vault in (damaged.admin, alice):
        for client in (None, "acme"):
            with pytest.raises(IntegrityError, match="damaged: its current version 2 is missing") as raised:
                vault.secrets.list(client)
            assert "sw01-Pw" not in str(raised.value)
    assert _lists(damaged) == before, "a secret-list event was written for a listing not shown"


def test_a_secret_whose_current_version_is_present_lists(damaged: Any) -> None:
    """The control: the same secret, pointed back at its version 1 (still stored), lists again."""
    with damaged.admin.store.transaction() as s:
        s.execute(update(m.Secret).where(m.Secret.current_version == 2).values(current_version=1))
    assert [info.name for info in damaged.admin.secrets.list("acme")] == ["fw01", "sw01", "vpn"]
