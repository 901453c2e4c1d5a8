"""``policies.get``/``unsigned`` and ``purge.preview``/``receipts`` over HTTPS (issue 14 step 6).

On ``read_world`` (acme: a signed policy, alice granted; beta: bob granted; and gamma, purged
by the admin in this module so that a receipt exists): through ``HttpsPolicyTransport`` and
``HttpsPurgeTransport`` the keyholders get the in-process answers. Raw requests signed as an
insider would sign them: an engineer asking for another client's policy gets 404, as
in-process (nothing tells whether the client exists); ``policies.unsigned``,
``purge.preview`` and ``purge.receipts`` are an admin's (403 to an engineer); another caller
in the body is 403; a request of another action, or a malformed body, is 400; nothing is
written by any of them (``database_state``).
"""

from __future__ import annotations

import dataclasses

import pytest
from server_harness import ReadWorld, caller_of, database_state, envelope, signed_post, with_extra_field

from vault.authority.policy_requests import GET, SET, UNSIGNED, PolicyRequest
from vault.authority.purge_requests import CLIENT, PREVIEW, PurgeRequest, PurgeTarget, ReceiptRequest
from vault.errors import AccessDenied, NotFound
from vault.service.policyadmin import https_policy_keyholder
from vault.service.purge import https_purge_keyholder
from vault.transport.https import HttpsTransport


@pytest.fixture(scope="module")
def world(read_world: ReadWorld) -> ReadWorld:
    admin = read_world.served.admin
    admin.clients.add("gamma", "Gamma Inc")
    admin.secrets.add("gamma/x", password="pw of gamma/x")
    admin.purge.client("gamma", request="GDPR-1")
    return read_world


def _policy(vault: object, action: str, client_id: int | None) -> PolicyRequest:
    return PolicyRequest(action, caller_of(vault), client_id, vault.keyholder.me().org_signing_public)  # type: ignore[attr-defined]


def _preview(vault: object, client_id: int) -> PurgeRequest:
    pin = vault.keyholder.me().org_signing_public  # type: ignore[attr-defined]
    return PurgeRequest(PREVIEW, caller_of(vault), (PurgeTarget(client_id, ()),), "", pin)


def _receipts(vault: object) -> ReceiptRequest:
    return ReceiptRequest(caller_of(vault), None, vault.keyholder.me().org_signing_public)  # type: ignore[attr-defined]


def _over(world: ReadWorld, vault: object) -> HttpsTransport:
    return world.https(vault)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("who", "client"), [("alice", "acme"), ("bob", "beta"), ("admin", "acme"), ("admin", "beta")])
def test_a_policy_over_https_is_the_in_process_policy(world: ReadWorld, who: str, client: str) -> None:
    vault = getattr(world.served, who)
    https = _over(world, vault)
    try:
        over_https = https_policy_keyholder(vault.policies, https).get(client)
    finally:
        https.close()
    assert over_https == vault.policies.get(client)
    assert (over_https.stale_days == 1) is (client == "acme")


def test_the_unsigned_policies_purge_preview_and_receipts_over_https_are_the_in_process_ones(
    world: ReadWorld,
) -> None:
    admin = world.served.admin
    https = _over(world, admin)
    try:
        policies, purge = https_policy_keyholder(admin.policies, https), https_purge_keyholder(admin.purge, https)
        assert policies.unsigned() == admin.policies.unsigned()
        assert purge.preview("acme") == admin.purge.preview("acme")
        receipts = purge.receipts()
    finally:
        https.close()
    assert receipts == admin.purge.receipts() and len(receipts) == 1


@pytest.mark.parametrize(("who", "client"), [("alice", "beta"), ("bob", "acme"), ("carol", "acme"), ("alice", "none")])
def test_another_clients_policy_is_404_as_in_process(world: ReadWorld, who: str, client: str) -> None:
    served = world.served
    vault = world.carol if who == "carol" else getattr(served, who)
    client_id = {"acme": world.acme, "beta": world.beta, "none": 10**6}[client]
    request = _policy(vault, GET, client_id)
    before = database_state(served.db_url)
    response = signed_post(served, "/v1/policies/get", envelope("policies.get", request), vault)
    assert response.status_code == 404, response.text
    assert response.json()["type"] == "urn:credvault:not-found"
    assert database_state(served.db_url) == before
    with pytest.raises(NotFound):  # the in-process authority's answer to the same request
        vault.policies.keyholder.transport.read(request)


@pytest.mark.parametrize("route", ["policies.unsigned", "purge.preview", "purge.receipts"])
def test_an_admins_read_is_403_to_an_engineer_and_nothing_is_written(world: ReadWorld, route: str) -> None:
    served = world.served
    alice = served.alice
    body = {
        "policies.unsigned": lambda: envelope(route, _policy(alice, UNSIGNED, None)),
        "purge.preview": lambda: envelope(route, _preview(alice, world.acme)),
        "purge.receipts": lambda: envelope(route, _receipts(alice)),
    }[route]()
    before = database_state(served.db_url)
    response = signed_post(served, "/v1/" + route.replace(".", "/"), body, alice)
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "urn:credvault:access-denied"
    assert database_state(served.db_url) == before
    with pytest.raises(AccessDenied):
        {"policies.unsigned": alice.policies.unsigned, "purge.preview": lambda: alice.purge.preview("acme"),
         "purge.receipts": alice.purge.receipts}[route]()  # fmt: skip


@pytest.mark.parametrize("route", ["policies.get", "purge.preview"])
def test_another_caller_in_the_body_is_403_and_nothing_is_written(world: ReadWorld, route: str) -> None:
    served = world.served
    if route == "policies.get":  # bob's request for beta, signed by alice
        body = envelope(route, _policy(served.bob, GET, world.beta))
    else:  # the admin's preview, signed by alice
        body = envelope(route, _preview(served.admin, world.acme))
    before = database_state(served.db_url)
    response = signed_post(served, "/v1/" + route.replace(".", "/"), body, served.alice)
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "urn:credvault:access-denied"
    assert database_state(served.db_url) == before


@pytest.mark.parametrize(
    "change",
    ["unsigned to the get route", "set to the get route", "a purge to the preview route", "extra field", "client 0"],
)
def test_another_action_or_a_malformed_body_is_400_and_nothing_is_written(world: ReadWorld, change: str) -> None:
    served = world.served
    admin = served.admin
    route = "purge.preview" if "purge" in change else "policies.get"
    if change == "unsigned to the get route":
        body = envelope(route, _policy(admin, UNSIGNED, None))
    elif change == "set to the get route":
        body = envelope(route, _policy(admin, SET, world.acme))
    elif change == "a purge to the preview route":
        body = envelope(route, dataclasses.replace(_preview(admin, world.acme), kind=CLIENT, request_ref="GDPR-2"))
    elif change == "extra field":
        body = with_extra_field(envelope(route, _policy(admin, GET, world.acme)))
    else:
        body = envelope(route, _policy(admin, GET, 0))
    before = database_state(served.db_url)
    response = signed_post(served, "/v1/" + route.replace(".", "/"), body, admin)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:credvault:invalid-input"
    assert database_state(served.db_url) == before
