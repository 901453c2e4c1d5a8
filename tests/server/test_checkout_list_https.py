"""``checkouts.list`` over HTTPS (issue 14 step 6, the read routes): the open checkouts.

On ``read_world`` (acme: alice granted and holding fw01; beta: bob holding db01; carol, no
grant): the keyholder's listing through ``HttpsCheckoutTransport`` equals the in-process one
for an engineer (their own) and an admin (all). Raw requests signed as an insider would sign
them (``signed_post``): an engineer never gets another's checkout; another caller in the body
is 403, a malformed body 400; each asserts that nothing was written (``database_state``; the
module's server keeps nonces in memory, so a read writes no row at all).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from server_harness import ReadWorld, caller_of, database_state, envelope, signed_post, with_extra_field

from vault.authority.requests import ListRequest
from vault.service.checkouts import https_checkin_keyholder, https_checkout_keyholder
from vault.wire import codec

LIST = "/v1/checkouts/list"


def _request(read_world: ReadWorld, who: object) -> ListRequest:
    me = who.keyholder.me()  # type: ignore[attr-defined]
    return ListRequest(caller_of(who), (), me.org_signing_public)  # type: ignore[arg-type]


@pytest.mark.parametrize("who", ["alice", "bob", "admin"])
def test_the_listing_over_https_is_the_in_process_listing(read_world: ReadWorld, who: str) -> None:
    vault = getattr(read_world.served, who)
    https = read_world.https(vault)
    try:
        over_https = https_checkin_keyholder(https_checkout_keyholder(vault.checkouts, https)).list()
    finally:
        https.close()
    in_process = vault.checkouts.list()
    assert over_https == in_process
    assert len(in_process) == (2 if who == "admin" else 1)


def test_an_engineer_gets_only_their_own_checkouts_and_nothing_is_written(read_world: ReadWorld) -> None:
    served = read_world.served
    before = database_state(served.db_url)
    for vault, expected in ((served.alice, 1), (read_world.carol, 0)):
        response = signed_post(served, LIST, envelope("checkouts.list", _request(read_world, vault)), vault)
        assert response.status_code == 200, response.text
        answer = codec.open_envelope(response.content, "checkouts.list.response").body
        assert {c.engineer_id for c in answer.checkouts} <= {vault.keyholder.me().engineer_id}
        assert len(answer.checkouts) == expected
        assert {k.record.client_id for k in answer.sealed_keys} <= ({read_world.acme} if expected else set())
    assert database_state(served.db_url) == before


def test_another_caller_in_the_body_is_403_and_nothing_is_written(read_world: ReadWorld) -> None:
    served = read_world.served
    body = envelope("checkouts.list", _request(read_world, served.bob))
    before = database_state(served.db_url)
    response = signed_post(served, LIST, body, served.alice)
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "urn:credvault:access-denied"
    assert database_state(served.db_url) == before


@pytest.mark.parametrize("change", ["extra field", "key version as a string", "pin too short"])
def test_a_malformed_body_is_400_and_nothing_is_written(read_world: ReadWorld, change: str) -> None:
    served = read_world.served
    request = _request(read_world, served.alice)
    if change == "extra field":
        body = with_extra_field(envelope("checkouts.list", request))
    elif change == "key version as a string":
        body = envelope("checkouts.list", request).replace(b'"known_key_versions":[]', b'"known_key_versions":"1"')
    else:
        body = envelope("checkouts.list", dataclasses.replace(request, org_pin=b"short"))
    before = database_state(served.db_url)
    response = signed_post(served, LIST, body, served.alice)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:credvault:invalid-input"
    assert database_state(served.db_url) == before


def test_a_vault_opened_in_process_does_not_load_httpx() -> None:
    """The HTTPS transports' shared helpers (``https_calls.py``) import no httpx: ``import vault``
    and the service nouns stay as quick to load as before the read routes."""
    code = "import sys, vault.service.vault; print('httpx' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert found.stdout.strip() == "False"
