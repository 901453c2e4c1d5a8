"""``grants.list`` over HTTPS (issue 14 step 6, the read routes).

On ``read_world`` (alice granted acme, bob beta, carol nothing): the keyholder's listing
through ``HttpsGrantListTransport`` equals the in-process one, for engineers and the admin,
filtered or not. Raw requests signed as an insider would sign them: an engineer who names
another client or engineer gets what the in-process authority gives (their own rows only:
none), never a row, an engineer or a slug of another's grant; another caller in the body is
403; malformed bodies are 400; nothing is written by any of them (``database_state``).
"""

from __future__ import annotations

import dataclasses

import pytest
from server_harness import ReadWorld, caller_of, database_state, envelope, signed_post, with_extra_field

from vault.authority.grant_requests import GrantListRequest
from vault.errors import NotFound
from vault.service import clientparts
from vault.wire import codec

LIST = "/v1/grants/list"


def _request(vault: object, *, engineer: str | None = None, client_id: int | None = None) -> GrantListRequest:
    me = vault.keyholder.me()  # type: ignore[attr-defined]
    return GrantListRequest(caller_of(vault), engineer, client_id, (), me.org_signing_public)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("who", "engineer", "client"),
    [("alice", None, None), ("bob", None, "beta"), ("carol", None, None), ("admin", None, None),
     ("admin", "alice", None), ("admin", None, "beta")],
)  # fmt: skip
def test_the_listing_over_https_is_the_in_process_listing(
    read_world: ReadWorld, who: str, engineer: str | None, client: str | None
) -> None:
    vault = read_world.carol if who == "carol" else getattr(read_world.served, who)
    https = read_world.https(vault)
    try:
        over_https = clientparts.https_grant_list_keyholder(vault.grants, https).list(engineer=engineer, client=client)
    finally:
        https.close()
    in_process = vault.grants.list(engineer=engineer, client=client)
    assert over_https == in_process
    if who in ("alice", "bob"):
        assert [g.engineer for g in in_process] == [who]
    if who == "carol":
        assert in_process == []


@pytest.mark.parametrize("names", ["another client", "another engineer", "both"])
def test_an_engineer_naming_another_clients_grants_gets_none_as_in_process(read_world: ReadWorld, names: str) -> None:
    served = read_world.served
    alice = served.alice
    request = _request(
        alice,
        engineer="bob" if names != "another client" else None,
        client_id=read_world.beta if names != "another engineer" else None,
    )
    before = database_state(served.db_url)
    response = signed_post(served, LIST, envelope("grants.list", request), alice)
    assert response.status_code == 200, response.text
    answer = codec.open_envelope(response.content, "grants.list.response").body
    assert (answer.grants, answer.slugs, answer.sealed_keys) == ((), (), ())
    assert [e.name for e in answer.engineers] == []
    in_process = clientparts.grant_list_keyholder(alice.grants).transport.list(request)
    assert answer == in_process
    assert database_state(served.db_url) == before


def test_an_unknown_engineer_is_404_as_in_process(read_world: ReadWorld) -> None:
    served = read_world.served
    request = _request(served.alice, engineer="nobody")
    before = database_state(served.db_url)
    response = signed_post(served, LIST, envelope("grants.list", request), served.alice)
    assert response.status_code == 404, response.text
    assert response.json()["type"] == "urn:credvault:not-found"
    with pytest.raises(NotFound):
        clientparts.grant_list_keyholder(served.alice.grants).transport.list(request)
    assert database_state(served.db_url) == before


def test_another_caller_in_the_body_is_403_and_nothing_is_written(read_world: ReadWorld) -> None:
    served = read_world.served
    body = envelope("grants.list", _request(served.admin))  # the admin named, alice signs
    before = database_state(served.db_url)
    response = signed_post(served, LIST, body, served.alice)
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "urn:credvault:access-denied"
    assert database_state(served.db_url) == before


@pytest.mark.parametrize(
    "change", ["extra field", "another action", "client id 0", "a float", "an engineer's bad name"]
)
def test_a_malformed_body_is_400_and_nothing_is_written(read_world: ReadWorld, change: str) -> None:
    served = read_world.served
    request = _request(served.alice, client_id=read_world.acme)
    if change == "extra field":
        body = with_extra_field(envelope("grants.list", request))
    elif change == "another action":
        body = envelope("grants.list", dataclasses.replace(request, action="grant"))
    elif change == "client id 0":
        body = envelope("grants.list", dataclasses.replace(request, client_id=0))
    elif change == "a float":
        body = envelope("grants.list", request).replace(
            f'"client_id":{read_world.acme}'.encode(), f'"client_id":{read_world.acme}.0'.encode()
        )
    else:
        body = envelope("grants.list", dataclasses.replace(request, engineer="../etc"))
    before = database_state(served.db_url)
    response = signed_post(served, LIST, body, served.alice)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:credvault:invalid-input"
    assert database_state(served.db_url) == before
