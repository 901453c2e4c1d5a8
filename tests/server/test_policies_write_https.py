"""An admin's ``policy set`` through the team server (both engines).

The admin works from a machine with no database (``RemoteVault``): the policies keyholder finds
the client by its slug's tag under the admin's root bundle, verifies the server's draft (the
stored policy as stored), signs the new policy, seals the event's details to the commit's
request id, and commits; the server checks the caller and the signature before it writes, and
appends the format-3 ``policy-set`` event in the same unit. The attacks are raw signed requests
by insiders with valid keys, and a compromised admin's machine whose keyholder signs something
else than the server drafted: each is refused with nothing written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from remote_admin_harness import Stop, caller, post, remote, row_values
from server_harness import Keyed, database_state, events, keyid_of, signed_headers, signing_key, without_nonces

from vault import Vault
from vault.authority.policy import policy_fields
from vault.authority.policy_draft_values import PolicyCommit, PolicySetDraftRequest
from vault.crypto.labels import LABEL_SIG_POLICY
from vault.errors import AccessDenied, NotFound
from vault.service.remote import RemoteVault
from vault.transport.https_policy_writes import HttpsPolicyWriteTransport
from vault.wire import codec

pytestmark = pytest.mark.usefixtures("cli_home")

ADMIN = "root-admin"


@pytest.fixture(scope="module")
def second_admin(module_team: Any) -> Vault:
    return module_team.engineer("admin2", role="admin")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(second_admin: Vault, module_team: Any, request: pytest.FixtureRequest) -> Keyed:
    keyed: Keyed = request.getfixturevalue("keyed")
    return keyed



class _Capturing:
    """The admin's ``HttpsTransport``, except that the commit is kept, not sent."""

    def __init__(self, https: Any) -> None:
        self.https = https
        self.commit: tuple[PolicyCommit, bytes] | None = None

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == "policies.set":
            assert isinstance(body, PolicyCommit) and request_id is not None
            self.commit = (body, request_id)
            raise Stop
        return self.https.call(name, body, request_id)


def captured(admin: RemoteVault, client: str, **wanted: Any) -> tuple[PolicyCommit, bytes]:
    """The commit ``admin``'s keyholder signs for a real draft of ``policy set client`` (not sent)."""
    keyholder = admin.policies.writes.writes  # RemotePolicies -> RemotePolicyWrites -> PolicyKeyholder
    lookup = admin.policies.writes.lookup
    capture = _Capturing(admin.https)
    original = keyholder.transport
    keyholder.transport = HttpsPolicyWriteTransport(capture, lookup.slug_tag, lookup.seal_details)
    try:
        with pytest.raises(Stop):
            admin.policies.set(client, **wanted)
    finally:
        keyholder.transport = original
    assert capture.commit is not None
    return capture.commit


def written(world: Keyed) -> tuple[dict[str, object], list[tuple[object, ...]]]:
    """What a refused request must leave as it was: every table's count and every stored policy."""
    url = world.served.db_url
    return without_nonces(database_state(url)), row_values(url, "client_policies")


# -- an admin's policy change -------------------------------------------------------------------------------


def test_an_admin_sets_a_policy_with_no_database(world: Keyed, admin: RemoteVault) -> None:
    before = len(events(world.served))
    info = admin.policies.set("acme", rotate_after_checkout=True, checkout_for=dt.timedelta(minutes=45))
    assert (info.client, info.rotate_after_checkout, info.checkout_minutes, info.signed) == ("acme", True, 45, True)
    in_process = world.served.admin.policies.get("acme")
    assert in_process == info  # the admin's signature verifies where the database is
    info = admin.policies.set("acme", rotate_after_checkout=False)  # what is not given keeps its value
    assert (info.rotate_after_checkout, info.checkout_minutes) == (False, 45)
    after = events(world.served)[before:]
    me = world.served.admin.keyholder.me().engineer_id
    assert [(e.action, e.engineer_id, e.request_id is not None, e.server_key_version) for e in after] == [
        ("policy-set", me, True, 1),
        ("policy-set", me, True, 1),
    ]
    assert all(e.details_blob is not None for e in after)  # the changes, sealed: never in clear on the server
    assert world.served.admin.audit.verify().ok  # the chain, the server's signatures, the details open
    admin.policies.set("acme", checkout_for=dt.timedelta(hours=2))


def test_a_policy_of_an_unknown_client_is_not_found(world: Keyed, admin: RemoteVault) -> None:
    before = written(world)
    with pytest.raises(NotFound):
        admin.policies.set("nobody", exclusive=True)
    assert written(world) == before


# -- insiders' attacks, each refused with nothing written ---------------------------------------------------


def test_an_engineer_who_drafts_or_commits_a_policy_is_refused(world: Keyed, admin: RemoteVault) -> None:
    """alice (a valid engineer key) asks for a draft, and sends the admin's signed commit as her own: 403."""
    commit, request_id = captured(admin, "acme", exclusive=True)
    alice = world.served.alice
    before = written(world)
    draft = PolicySetDraftRequest(caller(alice), commit.slug_tag, commit.client_id, commit.org_pin)
    answer = post(world, "policies.set_draft", draft, alice)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    as_alice = dataclasses.replace(commit, caller=caller(alice))
    assert post(world, "policies.set", as_alice, alice, request_id).status_code == 403
    assert post(world, "policies.set", commit, alice, request_id).status_code == 403  # another caller than the signer
    assert written(world) == before


def test_an_engineer_through_the_server_cannot_set_a_policy(world: Keyed) -> None:
    alice = remote(world, world.served.alice, "alice", "pass of alice")
    before = written(world)
    with pytest.raises((AccessDenied, NotFound)):
        alice.policies.set("acme", exclusive=True)
    assert written(world) == before


def test_a_commit_whose_policy_was_changed_after_signing_is_refused(world: Keyed, admin: RemoteVault) -> None:
    commit, request_id = captured(admin, "acme", exclusive=True)
    before = written(world)
    changed = dataclasses.replace(commit, row=commit.row._replace(exclusive=False, checkout_minutes=7 * 24 * 60))
    answer = post(world, "policies.set", changed, world.served.admin, request_id)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    assert written(world) == before


def test_a_policy_the_keyholder_signed_for_another_client_is_refused(world: Keyed, admin: RemoteVault) -> None:
    """A compromised admin's machine: its key signs the drafted values for excl, sent as acme's change."""
    commit, request_id = captured(admin, "acme", exclusive=True)
    excl = admin.checkouts.context("excl").client_id
    key = world.served.admin.keyholder.my_signing_key()
    vault_id = world.served.admin.vault_id()
    row = commit.row._replace(signature=None)
    forged = row._replace(signature=key.sign(LABEL_SIG_POLICY, *policy_fields(vault_id, excl, row)))
    before = written(world)
    answer = post(world, "policies.set", dataclasses.replace(commit, row=forged), world.served.admin, request_id)
    assert answer.status_code == 403
    assert written(world) == before


def test_a_policy_signed_by_another_admin_is_refused(world: Keyed, admin: RemoteVault, second_admin: Vault) -> None:
    """The root admin sends a policy admin2's key signed: as admin2's, or claiming to be their own."""
    commit, request_id = captured(admin, "acme", exclusive=True)
    other = second_admin.keyholder.my_signing_key()
    vault_id = world.served.admin.vault_id()
    before = written(world)
    for signer in (second_admin.keyholder.me().engineer_id, commit.row.signed_by):
        row = commit.row._replace(signed_by=signer, signature=None)
        row = row._replace(signature=other.sign(LABEL_SIG_POLICY, *policy_fields(vault_id, commit.client_id, row)))
        answer = post(world, "policies.set", dataclasses.replace(commit, row=row), world.served.admin, request_id)
        assert answer.status_code == 403
    assert written(world) == before


def test_a_commit_naming_another_client_than_its_slug_tag_is_refused(world: Keyed, admin: RemoteVault) -> None:
    commit, request_id = captured(admin, "acme", exclusive=True)
    excl = admin.checkouts.context("excl").client_id
    before = written(world)
    moved = dataclasses.replace(commit, client_id=excl)
    assert post(world, "policies.set", moved, world.served.admin, request_id).status_code == 400
    draft = PolicySetDraftRequest(commit.caller, commit.slug_tag, excl, commit.org_pin)
    assert post(world, "policies.set_draft", draft, world.served.admin).status_code == 400
    assert written(world) == before


def test_a_commit_over_another_draft_is_refused(world: Keyed, admin: RemoteVault) -> None:
    """The digest names a draft the server did not make (or one the stored policy moved on from): 409."""
    commit, request_id = captured(admin, "acme", exclusive=True)
    before = written(world)
    other = dataclasses.replace(commit, draft_digest=bytes(32))
    answer = post(world, "policies.set", other, world.served.admin, request_id)
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    assert written(world) == before


def test_a_replayed_commit_is_refused(world: Keyed, admin: RemoteVault) -> None:
    commit, request_id = captured(admin, "acme", exclusive=True)
    name = "policies.set"
    path = "/v1/policies/set"
    data = codec.envelope(name, commit, request_id)
    served = world.served
    headers = signed_headers(served, path, data, key=signing_key(served.admin), keyid=keyid_of(served.admin))
    with served.client() as client:
        first = client.post(path, content=data, headers=headers)
        assert first.status_code == 200
        after_first = written(world)
        again = client.post(path, content=data, headers=headers)  # the same signed request
    assert again.status_code == 401
    resent = post(world, name, commit, served.admin, request_id)  # re-signed: the stored policy moved on
    assert resent.status_code == 409
    state, policies = written(world)
    assert state.pop("auth_failures") == 1  # the replay counts as a failed authentication, and is all it wrote
    assert (state, policies) == ({k: v for k, v in after_first[0].items() if k != "auth_failures"}, after_first[1])
    assert served.admin.policies.get("acme").exclusive is True
    admin.policies.set("acme", exclusive=False)
    assert served.admin.audit.verify().ok
