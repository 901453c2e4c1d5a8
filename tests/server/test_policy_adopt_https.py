"""An admin's ``policy adopt`` through the team server (both engines).

The admin's machine lists the stored policies that do not verify (``policies.unsigned``, each slug
opened there), checks they are still exactly those shown, then signs each as stored: per client a
``policies.set`` draft and signed commit (the server checks the caller, the draft's digest, the bounds
and the signature under the caller's certified key), its ``policy-set`` details (``adopted``) sealed on
the admin's machine under the client's audit key. A DBA's change between the listing and the signing
is refused on the admin's machine with nothing signed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from remote_admin_harness import Stop, caller, post, remote
from server_harness import Keyed, database_state, events, without_nonces
from sqlalchemy import select, update

from vault.authority.policy import policy_fields
from vault.authority.policy_draft_values import PolicyCommit
from vault.crypto.labels import LABEL_SIG_POLICY
from vault.errors import AccessDenied, IntegrityError
from vault.service.remote import RemoteVault
from vault.storage import models as m

pytestmark = pytest.mark.usefixtures("cli_home")


def loosened(world: Keyed, admin: RemoteVault, slug: str, **values: object) -> None:
    """A DBA writes ``values`` into ``slug``'s stored policy: its signature no longer covers it."""
    client_id = admin.checkouts.context(slug).client_id
    with world.store.transaction() as s:
        s.execute(update(m.ClientPolicy).where(m.ClientPolicy.client_id == client_id).values(**values))


def signatures(world: Keyed) -> dict[int, bytes | None]:
    with world.store.read() as s:
        return {p.client_id: p.signature for p in s.scalars(select(m.ClientPolicy))}


def test_an_admin_adopts_the_unsigned_policies_with_no_database(world: Keyed, admin: RemoteVault) -> None:
    loosened(world, admin, "excl", stale_days=45)
    shown = admin.policies.unsigned()
    assert {p.client for p in shown} >= {"excl"} and not any(p.signed for p in shown)
    before = len(events(world.served))
    adopted = admin.policies.adopt(shown)
    assert [(p.client, p.signed) for p in adopted] == [(p.client, True) for p in shown]
    assert admin.policies.unsigned() == []
    excl = admin.policies.get("excl")  # as stored, now signed by this admin
    assert (excl.stale_days, excl.exclusive, excl.signed) == (45, True, True)
    added = [(e.action, e.request_id is not None, e.details_blob is not None) for e in events(world.served)[before:]]
    assert added == [("policy-set", True, True)] * len(shown)
    alice = remote(world, world.served.alice, "alice", "pass of alice")
    assert alice.policies.get("excl").signed  # an engineer's machine verifies the adopted policy
    alice.close()
    assert world.served.admin.audit.verify().ok


def test_policies_changed_since_shown_are_not_adopted(world: Keyed, admin: RemoteVault) -> None:
    """A DBA loosens another client's policy after the listing, or changes a listed one after the
    whole list was checked: refused on the admin's machine, nothing signed, nothing written."""
    loosened(world, admin, "acme", stale_days=30)
    shown = admin.policies.unsigned()
    assert [p.client for p in shown] == ["acme"]
    loosened(world, admin, "excl", exclusive=False)  # a new unsigned policy after the listing
    stored = signatures(world)
    before = without_nonces(database_state(world.served.db_url))
    with pytest.raises(IntegrityError):
        admin.policies.adopt(shown)
    loosened(world, admin, "acme", stale_days=31)  # the listed one changed: refused client by client too
    with pytest.raises(IntegrityError):
        admin.policies.writes.writes.adopt_one("acme", shown[0])  # the keyholder's own check
    assert signatures(world) == stored
    loosened(world, admin, "acme", stale_days=30)
    assert without_nonces(database_state(world.served.db_url)) == before
    loosened(world, admin, "excl", exclusive=True)  # excl's row as signed again


def test_an_engineer_cannot_adopt(world: Keyed, admin: RemoteVault) -> None:
    loosened(world, admin, "excl", stale_days=20)
    shown = admin.policies.unsigned()
    stored = signatures(world)
    alice = remote(world, world.served.alice, "alice", "pass of alice")
    with pytest.raises(AccessDenied):
        alice.policies.adopt(shown)
    alice.close()
    assert signatures(world) == stored


class _Kept:
    """The policy transport's calls, except that the commit is kept, not sent."""

    def __init__(self, https: Any) -> None:
        self.https = https
        self.commit: tuple[PolicyCommit, bytes] | None = None

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == "policies.set":
            assert isinstance(body, PolicyCommit) and request_id is not None
            self.commit = (body, request_id)
            raise Stop
        return self.https.call(name, body, request_id)


def test_insiders_adoption_commits_are_refused_with_nothing_written(world: Keyed, admin: RemoteVault) -> None:
    """The commit an adoption signs, posted by an engineer, in an engineer's name, with the row changed
    or signed by another key, after the stored row changed (409); then as signed, then replayed."""
    loosened(world, admin, "excl", stale_days=12)
    shown = admin.policies.unsigned()
    excl = next(p for p in shown if p.client == "excl")
    transport = admin.policies.writes.writes.transport
    kept = _Kept(transport.https)
    original, transport.https = transport.https, kept
    try:
        with pytest.raises(Stop):
            admin.policies.writes.writes.adopt_one("excl", excl)
    finally:
        transport.https = original
    assert kept.commit is not None
    commit, request_id = kept.commit
    served, alice = world.served, world.served.alice
    before = without_nonces(database_state(served.db_url))
    assert post(world, "policies.set", commit, alice, request_id).status_code == 403  # not the signer
    as_alice = dataclasses.replace(commit, caller=caller(alice))
    assert post(world, "policies.set", as_alice, alice, request_id).status_code == 403  # an engineer's
    changed = dataclasses.replace(commit, row=commit.row._replace(stale_days=90))
    assert post(world, "policies.set", changed, served.admin, request_id).status_code == 403
    row = commit.row._replace(signature=None)
    forged = alice.keyholder.my_signing_key().sign(
        LABEL_SIG_POLICY, *policy_fields(admin.vault_id(), commit.client_id, row)
    )
    assert post(world, "policies.set", dataclasses.replace(commit, row=row._replace(signature=forged)), served.admin,
                request_id).status_code == 403  # fmt: skip
    loosened(world, admin, "excl", stale_days=13)
    answer = post(world, "policies.set", commit, served.admin, request_id)
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    loosened(world, admin, "excl", stale_days=12)
    assert without_nonces(database_state(served.db_url)) == before
    assert post(world, "policies.set", commit, served.admin, request_id).status_code == 200  # as signed
    after = without_nonces(database_state(served.db_url))
    assert post(world, "policies.set", commit, served.admin, request_id).status_code in (401, 409)  # replayed
    assert without_nonces(database_state(served.db_url)) == after
    assert admin.policies.get("excl").signed
