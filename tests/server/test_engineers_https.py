"""``engineers.list`` over HTTPS (issue 14 step 6): a read that appends its event, in format 3.

One server per engine, with its signing key certified and nonces in the database (as
``credvault serve`` runs). The in-process listings are taken before the key is certified (an
embedded append is refused after); through ``HttpsEngineerTransport`` the keyholder gets the
same engineers, and the server appends one ``engineer-list`` event per listing, signed by the
server key, keeping the engineer's signed request, which ``audit verify`` checks. Raw requests
signed as an insider would sign them: another caller in the body is 403, a ``whoami`` through
this route or a malformed body 400, a replay 401, a server without its key 503; each writes
nothing (no event, no nonce: ``database_state``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from server_harness import (
    Served,
    asgi_call,
    caller_of,
    database_state,
    envelope,
    events,
    keyid_of,
    loopback_socket,
    running,
    signed_headers,
    signed_post,
    with_extra_field,
)

from vault.authority.engineer_requests import LIST, WHOAMI, ListRequest
from vault.crypto.serverkey import ServerSigningKey
from vault.errors import ConfigurationError
from vault.server.app import build_app
from vault.server.running import ServeOptions
from vault.service.engineerparts import https_engineer_keyholder
from vault.service.serverkeys import certify_server_key
from vault.storage.engine import Store
from vault.transport.https import HttpsTransport
from vault.wire.httpsig import MemoryNonceStore
from vault.wire.nonces import DbNonceStore

LIST_PATH = "/v1/engineers/list"


@dataclasses.dataclass
class Listing:
    served: Served
    carol: Any
    in_process: dict[str, list[Any]]  # each engineer's listing, in-process, before the key was certified


@pytest.fixture(scope="module")
def listing(module_team, test_ca) -> Iterator[Listing]:  # type: ignore[no-untyped-def]
    admin = module_team.admin
    alice, bob, carol = (module_team.engineer(n) for n in ("alice", "bob", "carol"))
    in_process = {name: vault.engineers.list() for name, vault in (("admin", admin), ("alice", alice))}
    key = ServerSigningKey.generate(1)
    certify_server_key(admin, 1, key.public)
    store = Store(module_team.url)
    sock = loopback_socket()
    port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    app = build_app(store, public_url=url, nonce_store=DbNonceStore(store), server_key=key)
    options = ServeOptions(
        module_team.url, bind=f"127.0.0.1:{port}", tls_cert=str(test_ca.cert_file), tls_key=str(test_ca.key_file)
    )
    try:
        with running(app, options, sock):
            served = Served(url, port, test_ca, module_team.url, MemoryNonceStore(), admin, alice, bob)
            yield Listing(served, carol, in_process)
    finally:
        store.close()



def _request(vault: Any, action: str = LIST) -> ListRequest:
    return ListRequest(caller_of(vault), vault.keyholder.me().org_signing_public, action)


@pytest.mark.parametrize("who", ["alice", "admin"])
def test_the_listing_over_https_is_the_in_process_listing_and_appends_a_format3_event(
    listing: Listing, who: str
) -> None:
    served = listing.served
    vault = getattr(served, who)
    https = HttpsTransport(served.url, vault.keyholder, ca_file=str(served.ca.ca_file))
    sent: list[Any] = []
    https.client.event_hooks["request"].append(sent.append)
    before = len(events(served))
    try:
        over_https = https_engineer_keyholder(vault.engineers, https).list()
    finally:
        https.close()
    assert over_https == listing.in_process[who]
    new = events(served)[before:]
    assert [(e.action, e.engineer_id, e.server_key_version) for e in new] == [
        ("engineer-list", vault.keyholder.me().engineer_id, 1)
    ]
    assert new[0].request_body == sent[-1].content  # the envelope the engineer signed, kept
    assert served.admin.audit.verify().ok


def test_another_caller_in_the_body_is_403_and_nothing_is_written(listing: Listing) -> None:
    served = listing.served
    before = database_state(served.db_url)
    response = signed_post(served, LIST_PATH, envelope("engineers.list", _request(served.admin)), served.alice)
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "urn:credvault:access-denied"
    assert database_state(served.db_url) == before


@pytest.mark.parametrize("change", ["whoami through the listing", "extra field", "pin too short", "a bool generation"])
def test_a_malformed_body_is_400_and_nothing_is_written(listing: Listing, change: str) -> None:
    served = listing.served
    carol = listing.carol
    request = _request(carol)
    if change == "whoami through the listing":
        body = envelope("engineers.list", _request(carol, WHOAMI))
    elif change == "extra field":
        body = with_extra_field(envelope("engineers.list", request))
    elif change == "pin too short":
        body = envelope("engineers.list", dataclasses.replace(request, org_pin=b"\x01"))
    else:
        generation = f'"key_generation":{request.caller.key_generation}'.encode()
        body = envelope("engineers.list", request).replace(generation, b'"key_generation":true')
    before = database_state(served.db_url)
    response = signed_post(served, LIST_PATH, body, carol)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:credvault:invalid-input"
    assert database_state(served.db_url) == before


def test_a_replayed_listing_is_401_and_makes_one_event(listing: Listing) -> None:
    served = listing.served
    body = envelope("engineers.list", _request(served.bob))
    headers = signed_headers(
        served, LIST_PATH, body, key=served.bob.keyholder.my_signing_key(), keyid=keyid_of(served.bob)
    )
    before = len(events(served))
    with served.client() as client:
        assert client.post(LIST_PATH, content=body, headers=headers).status_code == 200
        state = database_state(served.db_url)
        response = client.post(LIST_PATH, content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "replayed"
    assert database_state(served.db_url) == state
    assert len(events(served)) == before + 1


def test_a_server_without_its_key_answers_503_and_writes_nothing(listing: Listing) -> None:
    served = listing.served
    store = Store(served.db_url)
    try:
        app = build_app(store, public_url="http://127.0.0.1:8443", nonce_store=MemoryNonceStore())
        body = envelope("engineers.list", _request(served.alice))
        headers = signed_headers(
            served,
            LIST_PATH,
            body,
            key=served.alice.keyholder.my_signing_key(),
            keyid=keyid_of(served.alice),
            authority="127.0.0.1:8443",
        )
        before = database_state(served.db_url)
        response = asgi_call(app, "POST", LIST_PATH, body, headers)
        assert response.status_code == 503, response.text
        assert (response.json()["error"], response.json()["code"]) == ("ConfigurationError", "no-server-key")
        assert database_state(served.db_url) == before
    finally:
        store.close()


def test_the_other_engineer_operations_are_not_served_over_https_yet(listing: Listing) -> None:
    served = listing.served
    https = HttpsTransport(served.url, served.admin.keyholder, ca_file=str(served.ca.ca_file))
    before = database_state(served.db_url)
    try:
        with pytest.raises(ConfigurationError, match="not served"):
            https_engineer_keyholder(served.admin.engineers, https).invite("dave", "engineer", dt.timedelta(days=1))
    finally:
        https.close()
    assert database_state(served.db_url) == before
