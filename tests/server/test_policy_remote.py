"""A client's policy through the team server (``RemoteVault.policies.get``, ``credvault policy show``).

On the ``keyed`` team (acme: the default policy; excl: exclusive, signed by the admin; alice granted
both, bob excl): alice's policies through the server are her in-process ones; bob asking for acme,
which no grant of his names, gets ``NotFound`` as in-process, and the server is asked nothing that
would tell him whether it exists. A compromised server that signs an answer whose stored policy it
loosened (excl no longer exclusive) is not believed: the policy's admin signature does not verify,
so the strict policy applies (``signed`` False), as in-process for a row changed in the database.
The CLI's ``policy show`` through the server prints what the library returns.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_harness import joined, ok, refused, run
from server_harness import Keyed, events
from test_audit_remote import resigned, through

from vault.authority.policy_requests import PolicyRows
from vault.errors import NotFound
from vault.service.remote import RemoteVault


@pytest.mark.parametrize("client", ["acme", "excl"])
def test_a_policy_through_the_server_is_the_in_process_policy(
    keyed: Keyed, remote_alice: Callable[..., RemoteVault], client: str
) -> None:
    alice = remote_alice(lambda inner: inner)
    before = len(events(keyed.served))
    assert alice.policies.get(client) == keyed.served.alice.policies.get(client)
    assert alice.policies.get("excl").exclusive and alice.policies.get("excl").signed
    assert len(events(keyed.served)) == before  # a policy read appends nothing, as in-process


def test_a_client_no_grant_names_is_not_found(keyed: Keyed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from server_harness import remote_engineer

    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    bob = remote_engineer(keyed, keyed.served.bob, "bob", "pass of bob")
    with pytest.raises(NotFound):
        keyed.served.bob.policies.get("acme")
    with pytest.raises(NotFound):
        bob.policies.get("acme")
    assert bob.policies.get("excl") == keyed.served.bob.policies.get("excl")


def _loosened(rows: object) -> PolicyRows:
    assert isinstance(rows, PolicyRows) and len(rows.policies) == 1
    p = rows.policies[0]
    assert p.stored is not None and p.stored.exclusive
    stored = p.stored._replace(exclusive=False, checkout_minutes=12 * 60)
    return dataclasses.replace(rows, policies=(dataclasses.replace(p, stored=stored),))


def test_a_policy_the_server_loosened_is_not_believed(keyed: Keyed, remote_alice: Callable[..., RemoteVault]) -> None:
    alice = through(remote_alice, "/v1/policies/get", resigned(keyed, "policies.get", _loosened))
    shown = alice.policies.get("excl")
    assert (shown.exclusive, shown.signed) == (True, False)  # the strict policy applies
    assert shown.checkout_minutes != 12 * 60


def test_policy_show_through_the_server(keyed: Keyed, cli_home: Path, tmp_path: Path) -> None:
    secret = joined(keyed, tmp_path)
    ok(run("unlock", "alice", "--keyring", "--passphrase-file", secret))
    shown = json.loads(ok(run("policy", "show", "excl", "--json")).output)
    assert shown == keyed.served.alice.policies.get("excl").to_json()
    refused(run("policy", "show", "nosuch"), "nosuch")
