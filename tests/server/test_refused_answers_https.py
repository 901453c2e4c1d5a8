"""Answers the engineer's client refuses, on record through the server (``audit.answer_refused``).

The ``keyed`` team (conftest.py); the engineer's ``RemoteVault`` pins the server key. Between it
and the server sits ``Between``: whoever answers in the server's place (a man in the middle, a
proxy holding the TLS key) or a compromised server signing what it likes. Whatever it does to an
answer, the engineer gets the opaque refusal, and the log then holds an ``answer-refused`` event
by the engineer, naming the refused request's operation, the reason and, when the server had
committed one, the refused event's seq. The report carries ids and names only. An insider's raw
reports that name another's request, another operation, or nothing sensible write nothing. A
report that cannot be made never hides the refusal. Both engines.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import httpx
import pytest
from server_harness import (
    Keyed,
    caller_of,
    database_state,
    envelope,
    events,
    signed_post,
    without_nonces,
)

from vault.authority.requests import Caller, RefusedAnswerRequest
from vault.authority.secret_requests import SecretListPage, SecretRows
from vault.errors import AccessDenied, IntegrityError, InvalidInput, NotFound, UntrustedRecord
from vault.service.remote import RemoteVault
from vault.service.secretparts import over_https
from vault.storage import models as m
from vault.transport.https import HttpsTransport
from vault.wire import codec
from vault.wire.httpsig_response import sign_response

REPORT = "/v1/audit/answer_refused"
REASON = "T-6021 refused answers"
Change = Callable[[httpx.Request, httpx.Response | None], httpx.Response]


class Between(httpx.BaseTransport):
    """Hands every request to the server, except that ``change`` answers those to ``path``: with
    the server's own answer (None if ``forward`` is False: the server never saw the request)."""

    def __init__(self, inner: httpx.BaseTransport, path: str, change: Change, *, forward: bool = True) -> None:
        self.inner, self.path, self.change, self.forward = inner, path, change, forward
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.sent.append(request)
        if request.url.path != self.path:
            return self.inner.handle_request(request)
        response = None
        if self.forward:
            response = self.inner.handle_request(request)
            response.read()
        return self.change(request, response)

    def close(self) -> None:
        self.inner.close()


def changed_body(request: httpx.Request, response: httpx.Response | None) -> httpx.Response:
    """The server's answer with one byte of its body changed (its signature no longer verifies)."""
    assert response is not None
    kept = [(n, v) for n, v in response.headers.multi_items() if n.lower() != "content-length"]
    return httpx.Response(response.status_code, headers=kept, content=response.content.replace(b'"v":1', b'"v":1 '))


def forged(request: httpx.Request, response: httpx.Response | None) -> httpx.Response:
    """An answer made up in the server's place, unsigned."""
    return httpx.Response(200, headers={"content-type": "application/json"}, content=b'{"type":"x"}')


@pytest.fixture
def remote(remote_alice: Callable[..., RemoteVault]) -> Callable[..., tuple[RemoteVault, Between]]:
    """alice's ``RemoteVault`` (unlocked) through a ``Between`` of ``path`` and ``change``."""

    def make(path: str, change: Change, *, forward: bool = True) -> tuple[RemoteVault, Between]:
        made: list[Between] = []

        def wrap(inner: httpx.BaseTransport) -> Between:
            made.append(Between(inner, path, change, forward=forward))
            return made[0]

        return remote_alice(wrap), made[0]

    return make


def new_events(keyed: Keyed, before: int) -> list[m.AuditEvent]:
    return [e for e in events(keyed.served) if e.seq > before]


def last_seq(keyed: Keyed) -> int:
    found = events(keyed.served)
    return found[-1].seq if found else 0


def reports(between: Between) -> list[httpx.Request]:
    return [r for r in between.sent if r.url.path == REPORT]


# --- an answer refused, on record -----------------------------------------------------------------


def test_an_unsigned_answer_to_a_read_is_refused_and_then_on_record(keyed: Keyed, remote: Callable) -> None:
    vault, between = remote("/v1/secrets/show", changed_body)
    before = last_seq(keyed)
    with pytest.raises(UntrustedRecord, match="not signed by the pinned server key"):
        vault.secrets.show("acme/fw01")
    view, refused = new_events(keyed, before)
    me = keyed.served.alice.keyholder.me().engineer_id
    assert (view.action, refused.action) == ("secret-view", "answer-refused")
    assert (refused.engineer_id, refused.client_id) == (me, view.client_id)
    assert json.loads(refused.details_json) == {"operation": "secrets.show", "reason": "unsigned",
                                                "refused_seq": view.seq}  # fmt: skip
    # the report names the refused request by its id, and carries nothing of the answer
    (sent,) = reports(between)
    report = json.loads(sent.content)["body"]
    assert sorted(report) == ["caller", "operation", "reason", "refused_request"]
    assert codec.open_envelope(sent.content, "audit.answer_refused").body.refused_request == view.request_id
    assert refused.request_body == sent.content and len(sent.content) < 400
    assert keyed.served.admin.audit.verify().ok


def test_a_checkout_answer_changed_on_the_way_is_refused_and_names_its_committed_event(
    keyed: Keyed, remote: Callable
) -> None:
    vault, _ = remote("/v1/checkouts/reveal", changed_body)
    before = last_seq(keyed)
    with pytest.raises(UntrustedRecord, match="not signed by the pinned server key"):
        vault.checkouts.reveal("acme/fw02", reason=REASON)
    reveal, refused = new_events(keyed, before)
    assert (reveal.action, refused.action, refused.client_id) == ("reveal", "answer-refused", reveal.client_id)
    assert json.loads(refused.details_json) == {"operation": "checkouts.reveal", "reason": "unsigned",
                                                "refused_seq": reveal.seq}  # fmt: skip
    assert keyed.served.admin.audit.verify().ok


def test_an_answer_made_up_in_the_servers_place_is_on_record_naming_no_event(keyed: Keyed, remote: Callable) -> None:
    """The request never reached the server: the report names the request and no seq."""
    vault, between = remote("/v1/secrets/history", forged, forward=False)
    before = last_seq(keyed)
    with pytest.raises(UntrustedRecord, match="lacks content-digest"):
        vault.secrets.history("acme/fw01")
    (refused,) = new_events(keyed, before)
    assert (refused.action, refused.client_id) == ("answer-refused", None)
    assert json.loads(refused.details_json) == {"operation": "secrets.history", "reason": "unsigned"}
    assert len(reports(between)) == 1
    assert keyed.served.admin.audit.verify().ok


def test_rows_a_compromised_server_signs_are_refused_by_the_keyholder_and_on_record(
    keyed: Keyed, remote: Callable
) -> None:
    """The server's key signs an answer whose secret row was changed: the signature verifies, the
    keyholder refuses the row, and says so."""

    def tampered(request: httpx.Request, response: httpx.Response | None) -> httpx.Response:
        assert response is not None and response.status_code == 200
        answer = codec.open_envelope(response.content, "secrets.show.response")
        rows = answer.body
        assert isinstance(rows, SecretRows)
        bad = dataclasses.replace(rows, secret=rows.secret._replace(name_tag=os.urandom(len(rows.secret.name_tag))))
        content = codec.envelope("secrets.show.response", bad, answer.request_id)
        bound = request.headers["signature"].removeprefix("cv=")
        signed = sign_response(200, content, bound, keyed.key)
        return httpx.Response(200, headers={"content-type": "application/json", **signed}, content=content)

    vault, _ = remote("/v1/secrets/show", tampered)
    before = last_seq(keyed)
    with pytest.raises(IntegrityError) as refused_error:
        vault.secrets.show("acme/fw01")
    assert "not signed" not in str(refused_error.value)  # the keyholder's refusal, not the transport's
    view, refused = new_events(keyed, before)
    assert (view.action, refused.action) == ("secret-view", "answer-refused")
    assert json.loads(refused.details_json) == {"operation": "secrets.show", "reason": "untrusted",
                                                "refused_seq": view.seq}  # fmt: skip
    assert keyed.served.admin.audit.verify().ok


def test_a_page_of_a_listing_that_does_not_open_is_refused_and_on_record(keyed: Keyed, remote: Callable) -> None:
    """A compromised server signs a page whose secret's metadata was changed: it does not open
    (``undecryptable``), and the report names that page's request and event."""

    def tampered(request: httpx.Request, response: httpx.Response | None) -> httpx.Response:
        assert response is not None and response.status_code == 200
        answer = codec.open_envelope(response.content, "secrets.list_page.response", max_bytes=1 << 20)
        listing = answer.body
        assert isinstance(listing, SecretListPage) and listing.page.secrets
        first = listing.page.secrets[0]
        assert first.version is not None
        blob = first.version.metadata_blob
        changed = first.version._replace(metadata_blob=blob[:-1] + bytes([blob[-1] ^ 1]))
        rows = (dataclasses.replace(first, version=changed), *listing.page.secrets[1:])
        bad = dataclasses.replace(listing, page=dataclasses.replace(listing.page, secrets=rows))
        content = codec.envelope("secrets.list_page.response", bad, answer.request_id)
        signed = sign_response(200, content, request.headers["signature"].removeprefix("cv="), keyed.key)
        return httpx.Response(200, headers={"content-type": "application/json", **signed}, content=content)

    vault, _ = remote("/v1/secrets/list_page", tampered)
    before = last_seq(keyed)
    with pytest.raises(IntegrityError):
        vault.secrets.list("acme")
    listing, refused = new_events(keyed, before)
    assert (listing.action, refused.action) == ("secret-list", "answer-refused")
    assert json.loads(refused.details_json) == {"operation": "secrets.list_page", "reason": "undecryptable",
                                                "refused_seq": listing.seq}  # fmt: skip
    assert keyed.served.admin.audit.verify().ok


def test_a_good_read_reports_nothing(keyed: Keyed, remote: Callable) -> None:
    vault, between = remote("/v1/none", forged)
    before = last_seq(keyed)
    assert vault.secrets.show("acme/fw01").name == "fw01"
    assert [e.action for e in new_events(keyed, before)] == ["secret-view"]
    assert reports(between) == []


# --- a report that cannot be made hides nothing -----------------------------------------------------


@pytest.mark.parametrize("failure", ["unreachable", "refused", "unsigned"])
def test_a_report_that_fails_leaves_the_original_refusal(keyed: Keyed, remote: Callable, failure: str) -> None:
    vault, between = remote("/v1/secrets/show", changed_body)
    inner = between.inner

    class Failing(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path != REPORT:
                return inner.handle_request(request)
            if failure == "unreachable":
                raise httpx.ConnectError("no route", request=request)
            response = inner.handle_request(request)
            response.read()
            if failure == "refused":  # a 404 problem, signed by the server for this request
                return httpx.Response(404, headers={"content-type": "application/problem+json"},
                                      content=b'{"error":"NotFound","detail":"x","status":404}')  # fmt: skip
            return changed_body(request, response)

    between.inner = Failing()
    before = last_seq(keyed)
    with pytest.raises(UntrustedRecord, match="not signed by the pinned server key"):
        vault.secrets.show("acme/fw01")
    actions = [e.action for e in new_events(keyed, before)]
    assert actions == (["secret-view"] if failure == "unreachable" else ["secret-view", "answer-refused"])
    assert len(reports(between)) == 1  # one report, never a report of the report


# --- an insider's raw reports -------------------------------------------------------------------------


def report_body(caller: Caller, operation: str, request_id: bytes, reason: str = "unsigned") -> bytes:
    return envelope("audit.answer_refused", RefusedAnswerRequest(caller, operation, request_id, reason))


def bobs_view(keyed: Keyed) -> m.AuditEvent:
    served = keyed.served
    https = HttpsTransport(served.url, served.bob.keyholder, ca_file=str(served.ca.ca_file))
    served.bob.keyholder.me()
    try:
        over_https(served.bob.secrets, https).show("excl/sw01")
    finally:
        https.close()
    return events(served)[-1]


@pytest.mark.parametrize(
    ("case", "status"),
    [("anothers-request", 404), ("another-operation", 404), ("bad-reason", 400), ("the-report-route", 400),
     ("unknown-operation", 400), ("short-id", 400), ("another-caller", 403)],
)  # fmt: skip
def test_an_insiders_report_that_names_no_request_of_theirs_writes_nothing(
    keyed: Keyed, case: str, status: int
) -> None:
    served = keyed.served
    view = bobs_view(keyed)
    assert view.action == "secret-view" and view.request_id is not None
    alice = caller_of(served.alice)
    body = {
        "anothers-request": report_body(alice, "secrets.show", view.request_id),
        "another-operation": report_body(caller_of(served.bob), "checkouts.reveal", view.request_id),
        "bad-reason": report_body(alice, "secrets.show", os.urandom(16), "because"),
        "the-report-route": report_body(alice, "audit.answer_refused", os.urandom(16)),
        "unknown-operation": report_body(alice, "secrets.nothing", os.urandom(16)),
        "short-id": report_body(alice, "secrets.show", os.urandom(8)),
        "another-caller": report_body(caller_of(served.bob), "secrets.show", view.request_id),
    }[case]
    signer = served.bob if case == "another-operation" else served.alice
    before = without_nonces(database_state(served.db_url))
    answer = signed_post(served, REPORT, body, signer)
    assert answer.status_code == status
    error = {404: NotFound, 400: InvalidInput, 403: AccessDenied}[status]
    assert answer.json()["error"] == error.__name__
    assert without_nonces(database_state(served.db_url)) == before


def test_an_engineer_may_report_their_own_refused_read_raw(keyed: Keyed) -> None:
    """The positive twin of the insider's cases: bob names his own read, and it is on record."""
    served = keyed.served
    view = bobs_view(keyed)
    answer = signed_post(served, REPORT, report_body(caller_of(served.bob), "secrets.show", view.request_id,
                                                     "untrusted"), served.bob)  # fmt: skip
    assert answer.status_code == 200
    refused = events(served)[-1]
    assert (refused.action, refused.engineer_id, refused.client_id) == ("answer-refused", view.engineer_id,
                                                                        view.client_id)  # fmt: skip
    assert json.loads(refused.details_json)["refused_seq"] == view.seq
    assert served.admin.audit.verify().ok
