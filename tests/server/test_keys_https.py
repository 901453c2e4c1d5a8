"""``keys.list`` and ``keys.versions`` over HTTPS (issue 14 step 6, the read routes).

On ``read_world`` (acme's key rotated once; alice granted acme, bob beta, carol nothing):
through ``HttpsRotationTransport`` the admin's rotations and anyone's versions of a granted
client equal the in-process answers. Raw requests signed as an insider would sign them:
``keys.list`` (an admin's) is 403 to an engineer; the versions of a client the engineer holds
no grant for are 404, as in-process (nothing tells whether the client exists); another
caller in the body is 403; malformed bodies are 400; nothing is written by any of them.
"""

from __future__ import annotations

import pytest
from server_harness import ReadWorld, caller_of, database_state, envelope, signed_post, with_extra_field

from vault.authority.rotation_requests import ListRequest, VersionsRequest
from vault.errors import AccessDenied, ConfigurationError, NotFound
from vault.service import rotationparts
from vault.wire import codec

LIST, VERSIONS = "/v1/keys/list", "/v1/keys/versions"


@pytest.mark.parametrize("running_only", [False, True])
def test_the_admins_rotations_over_https_are_the_in_process_ones(read_world: ReadWorld, running_only: bool) -> None:
    admin = read_world.served.admin
    https = read_world.https(admin)
    try:
        over_https = rotationparts.https_rotation_keyholder(admin.keys, https).list(running_only=running_only)
    finally:
        https.close()
    in_process = rotationparts.rotation_keyholder(admin.keys).list(running_only=running_only)
    assert over_https == in_process
    assert len(in_process) == (0 if running_only else 1)


@pytest.mark.parametrize(("who", "client"), [("alice", "acme"), ("bob", "beta"), ("admin", "acme"), ("admin", "beta")])
def test_the_versions_over_https_are_the_in_process_ones(read_world: ReadWorld, who: str, client: str) -> None:
    vault = getattr(read_world.served, who)
    https = read_world.https(vault)
    try:
        over_https = rotationparts.https_rotation_keyholder(vault.keys, https).versions(client)
    finally:
        https.close()
    in_process = vault.keys.versions(client)
    assert [(row.version, row.state) for row in over_https] == in_process
    assert len(in_process) == (2 if client == "acme" else 1)


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_the_rotations_are_403_to_an_engineer_and_nothing_is_written(read_world: ReadWorld, who: str) -> None:
    served = read_world.served
    vault = read_world.carol if who == "carol" else served.alice
    before = database_state(served.db_url)
    response = signed_post(served, LIST, envelope("keys.list", ListRequest(caller_of(vault), False)), vault)
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "urn:credvault:access-denied"
    assert database_state(served.db_url) == before
    with pytest.raises(AccessDenied):
        vault.keys.list()


@pytest.mark.parametrize(("who", "client"), [("alice", "beta"), ("bob", "acme"), ("carol", "acme"), ("alice", "none")])
def test_another_clients_versions_are_404_as_in_process(read_world: ReadWorld, who: str, client: str) -> None:
    served = read_world.served
    vault = read_world.carol if who == "carol" else getattr(served, who)
    client_id = {"acme": read_world.acme, "beta": read_world.beta, "none": 10**6}[client]
    request = VersionsRequest(caller_of(vault), client_id)
    before = database_state(served.db_url)
    response = signed_post(served, VERSIONS, envelope("keys.versions", request), vault)
    assert response.status_code == 404, response.text
    assert response.json()["type"] == "urn:credvault:not-found"
    assert database_state(served.db_url) == before
    with pytest.raises(NotFound):  # the in-process authority's answer to the same request
        rotationparts.rotation_keyholder(vault.keys).transport.versions(request)


def test_an_admins_answer_names_the_versions(read_world: ReadWorld) -> None:
    served = read_world.served
    request = VersionsRequest(caller_of(served.admin), read_world.acme)
    response = signed_post(served, VERSIONS, envelope("keys.versions", request), served.admin)
    assert response.status_code == 200, response.text
    answer = codec.open_envelope(response.content, "keys.versions.response").body
    assert [(v.version, v.state) for v in answer.versions] == served.admin.keys.versions("acme")


@pytest.mark.parametrize("route", [LIST, VERSIONS])
def test_another_caller_in_the_body_is_403_and_nothing_is_written(read_world: ReadWorld, route: str) -> None:
    served = read_world.served
    if route == LIST:
        body = envelope("keys.list", ListRequest(caller_of(served.admin), False))
    else:
        body = envelope("keys.versions", VersionsRequest(caller_of(served.alice), read_world.acme))
    before = database_state(served.db_url)
    response = signed_post(served, route, body, served.bob)
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "urn:credvault:access-denied"
    assert database_state(served.db_url) == before


@pytest.mark.parametrize("change", ["extra field", "client id 0", "client id as a string", "a bool for an int"])
def test_a_malformed_body_is_400_and_nothing_is_written(read_world: ReadWorld, change: str) -> None:
    served = read_world.served
    alice = served.alice
    acme = read_world.acme
    if change == "extra field":
        body = with_extra_field(envelope("keys.versions", VersionsRequest(caller_of(alice), acme)))
    elif change == "client id 0":
        body = envelope("keys.versions", VersionsRequest(caller_of(alice), 0))
    else:
        body = envelope("keys.versions", VersionsRequest(caller_of(alice), acme))
        wrong = b'"1"' if change == "client id as a string" else b"true"
        body = body.replace(f'"client_id":{acme}'.encode(), b'"client_id":' + wrong)
    before = database_state(served.db_url)
    response = signed_post(served, VERSIONS, body, alice)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:credvault:invalid-input"
    assert database_state(served.db_url) == before


def test_a_rotation_through_a_server_without_its_signing_key_writes_nothing(read_world: ReadWorld) -> None:
    """The rotation is served (tests/server/test_rotation_https.py); a server that cannot sign its
    event answers the draft (a read) and refuses the commit, with nothing written."""
    admin = read_world.served.admin
    https = read_world.https(admin)
    before = database_state(read_world.served.db_url)
    try:
        with pytest.raises(ConfigurationError, match="no signing key"):
            rotationparts.https_rotation_keyholder(admin.keys, https).rotate("beta")
    finally:
        https.close()
    assert database_state(read_world.served.db_url) == before
