"""``audit.log``, ``audit.export`` and ``audit.head`` over HTTPS (issue 14 step 6, the read routes).

A stream is one signed request per page, the page request carrying the cursor. On
``read_world``: the keyholder's verified pages through ``HttpsAuditTransport`` (three events
a page, so a stream takes several requests) equal the in-process pages, for an engineer (their
own events) and the admin (all). Raw requests signed as an insider would sign them: an
engineer who filters on another engineer or client gets what the in-process authority gives
(their own events only: none of bob's, none of beta's); ``report access`` pages are refused
(400: the report's own event is not appended by the server yet); another caller in the body
is 403; malformed bodies are 400; nothing is written by any of them (``database_state``).
"""

from __future__ import annotations

import dataclasses

import pytest
from server_harness import ReadWorld, caller_of, database_state, envelope, signed_post, with_extra_field

from vault.authority.audit_requests import ACCESS, CHECKPOINT, EXPORT, HEAD, LOG, EventQuery, HeadRequest, PageRequest
from vault.service.audit import https_audit_keyholder
from vault.wire import codec

PAGE = "/v1/audit/log"


@pytest.mark.parametrize("reading", [LOG, EXPORT])
@pytest.mark.parametrize("who", ["alice", "bob", "carol", "admin"])
def test_the_pages_over_https_are_the_in_process_pages(read_world: ReadWorld, who: str, reading: str) -> None:
    vault = read_world.carol if who == "carol" else getattr(read_world.served, who)
    https = read_world.https(vault)
    me = vault.keyholder.me().engineer_id
    query = EventQuery(reading, caller_of(vault), engineer_id=None if who == "admin" else me)  # as Audit.log asks
    try:
        holder = https_audit_keyholder(vault.audit, https)
        holder.size = 3
        over_https = list(holder.pages(query))
    finally:
        https.close()
    in_process = vault.audit.keyholder
    in_process.size = 3
    try:
        pages = list(in_process.pages(query))
    finally:
        in_process.size = 500
    assert over_https == pages
    events = [e for page in pages for e in page]
    if who == "admin":
        assert len(pages) > 3 and {e.engineer_id for e in events} > {me}
    else:
        assert {e.engineer_id for e in events} == {me}


def test_the_head_over_https_is_the_in_process_head(read_world: ReadWorld) -> None:
    alice = read_world.served.alice
    https = read_world.https(alice)
    try:
        holder = https_audit_keyholder(alice.audit, https)
        assert holder.transport.head(HeadRequest(HEAD)) == alice.audit.keyholder.transport.head(HeadRequest(HEAD))
        assert holder.checkpoint_head(caller_of(alice)) == alice.audit.keyholder.checkpoint_head(caller_of(alice))
    finally:
        https.close()


@pytest.mark.parametrize("names", ["bob", "beta", "bob in beta"])
def test_an_engineer_filtering_on_another_gets_what_the_in_process_authority_gives(
    read_world: ReadWorld, names: str
) -> None:
    served = read_world.served
    alice = served.alice
    query = EventQuery(
        LOG,
        caller_of(alice),
        client_id=read_world.beta if "beta" in names else None,
        engineer_id=served.bob.keyholder.me().engineer_id if "bob" in names else None,
    )
    request = PageRequest(query, after=0, until=None, size=100)
    before = database_state(served.db_url)
    response = signed_post(served, PAGE, envelope("audit.log", request), alice)
    assert response.status_code == 200, response.text
    answer = codec.open_envelope(response.content, "audit.log.response").body
    assert answer.events == () and answer.restricted_to == alice.keyholder.me().engineer_id
    assert answer == alice.audit.keyholder.transport.page(request)
    assert database_state(served.db_url) == before


@pytest.mark.parametrize("route", ["log", "export"])
def test_report_access_pages_are_refused_by_the_log_routes(read_world: ReadWorld, route: str) -> None:
    served = read_world.served
    admin = served.admin
    query = EventQuery(ACCESS, caller_of(admin), engineer_id=served.alice.keyholder.me().engineer_id)
    before = database_state(served.db_url)
    body = envelope(f"audit.{route}", PageRequest(query, after=0, until=None, size=10))
    response = signed_post(served, f"/v1/audit/{route}", body, admin)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:credvault:invalid-input"
    assert database_state(served.db_url) == before


@pytest.mark.parametrize("what", ["page", "checkpoint"])
def test_another_caller_in_the_body_is_403_and_nothing_is_written(read_world: ReadWorld, what: str) -> None:
    served = read_world.served
    if what == "page":  # the admin's stream, signed by alice
        path, body = PAGE, envelope("audit.log", PageRequest(EventQuery(LOG, caller_of(served.admin)), 0, None, 10))
    else:
        path, body = "/v1/audit/head", envelope("audit.head", HeadRequest(CHECKPOINT, caller_of(served.admin)))
    before = database_state(served.db_url)
    response = signed_post(served, path, body, served.alice)
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "urn:credvault:access-denied"
    assert database_state(served.db_url) == before


@pytest.mark.parametrize(
    "change",
    ["extra field", "size 0", "size over the page limit", "a limit past the first page", "a head naming alice"],
)
def test_a_malformed_body_is_400_and_nothing_is_written(read_world: ReadWorld, change: str) -> None:
    served = read_world.served
    alice = served.alice
    request = PageRequest(EventQuery(LOG, caller_of(alice)), after=0, until=None, size=10)
    path = PAGE
    if change == "extra field":
        body = with_extra_field(envelope("audit.log", request))
    elif change == "size 0":
        body = envelope("audit.log", dataclasses.replace(request, size=0))
    elif change == "size over the page limit":
        body = envelope("audit.log", dataclasses.replace(request, size=10**6))
    elif change == "a limit past the first page":
        body = envelope("audit.log", dataclasses.replace(request, until=3, limit=2))
    else:
        path, body = "/v1/audit/head", envelope("audit.head", HeadRequest(HEAD, caller_of(alice)))
    before = database_state(served.db_url)
    response = signed_post(served, path, body, alice)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:credvault:invalid-input"
    assert database_state(served.db_url) == before
