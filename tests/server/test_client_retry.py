"""The client's retry of a lost answer (docs/server.md §3, "Retries are not replays").

The ``keyed`` team (conftest.py). A transport under ``HttpsTransport`` delivers the request to
the server and then loses its answer (``httpx.ReadError``), as a connection dropped after the
commit would. A checkout or reveal is sent again, the same envelope under a new signature:
the server answers it from the event it committed, so the engineer gets the value and the log
holds one event. A check-in (with or without a new value) and a break likewise: answered from
the events the first copy committed, and so are the secrets' commits (``secrets.add`` /
``update``). An operation the server does not answer again (a draft) is not re-sent: the error
is the caller's, and the log holds its one event.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest
from server_harness import Keyed
from sqlalchemy import func, select

from vault.authority.requests import BREAK, CHECKIN
from vault.errors import StoreUnavailable
from vault.service.checkouts import https_checkin_keyholder, https_checkout_keyholder
from vault.service.secretparts import over_https
from vault.storage import models as m
from vault.transport.https import HttpsTransport
from vault.wire import codec

REASON = "T-5150 lost answer"


class LosingAnswers(httpx.BaseTransport):
    """Sends every request; loses the answer to the first ``lose`` requests to ``path``."""

    def __init__(self, inner: httpx.BaseTransport, path: str, lose: int = 1) -> None:
        self.inner, self.path, self.lose = inner, path, lose
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = self.inner.handle_request(request)
        if request.url.path == self.path and self.lose > 0:
            self.lose -= 1
            response.read()
            response.close()  # the server committed and answered; the answer never arrives
            raise httpx.ReadError("connection lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def losing(keyed: Keyed, vault: Any, path: str, lose: int = 1) -> tuple[HttpsTransport, LosingAnswers]:
    inner = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(keyed.served.ca.ca_file)))
    wrapper = LosingAnswers(inner, path, lose)
    vault.keyholder.me()
    return HttpsTransport(keyed.served.url, vault.keyholder, transport=wrapper), wrapper


def event_count(keyed: Keyed) -> int:
    with keyed.store.read() as s:
        return int(s.scalar(select(func.count()).select_from(m.AuditEvent)) or 0)


def request_ids(wrapper: LosingAnswers, path: str, operation: str) -> list[bytes]:
    return [codec.open_envelope(r.content, operation).request_id for r in wrapper.sent if r.url.path == path]


@pytest.mark.parametrize("hold", [True, False], ids=["checkout", "reveal"])
def test_a_lost_answer_is_sent_again_and_answered_from_its_one_event(keyed: Keyed, hold: bool) -> None:
    served = keyed.served
    path = "/v1/checkouts/checkout" if hold else "/v1/checkouts/reveal"
    https, wrapper = losing(keyed, served.alice, path)
    holder = https_checkout_keyholder(served.alice.checkouts, https)
    ref = "acme/fw01" if hold else "acme/fw02"
    before = event_count(keyed)
    value = holder.checkout(ref, reason=REASON, field="password", version=None, hold=hold, hold_for=None).value
    assert value == f"pw of {ref}"
    operation = "checkouts.checkout" if hold else "checkouts.reveal"
    sent = request_ids(wrapper, path, operation)
    assert len(sent) == 2 and sent[0] == sent[1]  # the same envelope, sent twice
    signatures = {r.headers["signature"] for r in wrapper.sent if r.url.path == path}
    assert len(signatures) == 2  # under a new signature (and nonce): not a replay
    assert event_count(keyed) == before + 1  # one event for the request
    if hold:
        https_checkin_keyholder(holder).release(ref, CHECKIN)
    assert served.admin.audit.verify().ok


def test_an_answer_lost_every_time_is_an_error_after_the_retries_and_one_event(keyed: Keyed) -> None:
    served = keyed.served
    https, wrapper = losing(keyed, served.alice, "/v1/checkouts/reveal", lose=99)
    holder = https_checkout_keyholder(served.alice.checkouts, https)
    before = event_count(keyed)
    with pytest.raises(StoreUnavailable, match="could not be reached"):
        holder.checkout("acme/fw02", reason=REASON, field="password", version=None, hold=False, hold_for=None)
    assert len(request_ids(wrapper, "/v1/checkouts/reveal", "checkouts.reveal")) == 3  # once and twice again
    assert event_count(keyed) == before + 1  # on record once: the access happened as far as the log says


def events_since(keyed: Keyed, seq: int) -> list[tuple[str, int | None]]:
    with keyed.store.read() as s:
        found = s.execute(select(m.AuditEvent.action, m.AuditEvent.engineer_id).where(m.AuditEvent.seq > seq))
        return [(action, engineer) for action, engineer in found]


@pytest.mark.parametrize("new_value", [False, True], ids=["checkin", "checkin-with-a-new-value"])
def test_a_checkin_whose_answer_is_lost_is_sent_again_and_answered_from_its_events(
    keyed: Keyed, new_value: bool
) -> None:
    """The check-in committed (with a new value: ``secret-update`` and ``checkin``); its answer was
    lost; the same envelope is sent again under a new signature and answered from those events:
    the keyholder gets the answer it checks (the version it encrypted), and the log holds the
    request's events once."""
    served = keyed.served
    ref = "excl/sw02" if new_value else "excl/sw01"
    https, wrapper = losing(keyed, served.alice, "/v1/checkouts/checkin")
    holder = https_checkout_keyholder(served.alice.checkouts, https)
    holder.checkout(ref, reason=REASON, field="password", version=None, hold=True, hold_for=None)
    before = event_count(keyed)
    answer = https_checkin_keyholder(holder).release(ref, CHECKIN, "new pw after a lost answer" if new_value else None)
    assert (answer.released, answer.holders) == (1, ())
    sent = request_ids(wrapper, "/v1/checkouts/checkin", "checkouts.checkin")
    assert len(sent) == 2 and sent[0] == sent[1]  # the same envelope, sent twice
    signatures = {r.headers["signature"] for r in wrapper.sent if r.url.path == "/v1/checkouts/checkin"}
    assert len(signatures) == 2  # under a new signature (and nonce): not a replay
    me = served.alice.keyholder.me().engineer_id
    expected = ["secret-view", "secret-update", "checkin"] if new_value else ["checkin"]
    assert events_since(keyed, before) == [(action, me) for action in expected]
    assert answer.seq == before + len(expected)  # the first copy's event
    if new_value:
        assert answer.version == 2 and not answer.must_change
        value = holder.checkout(ref, reason=REASON, field="password", version=None, hold=False, hold_for=None).value
        assert value == "new pw after a lost answer"
    assert served.admin.audit.verify().ok


def test_a_break_whose_answer_is_lost_is_sent_again_and_answered_from_its_event(keyed: Keyed) -> None:
    served = keyed.served
    bob, _ = losing(keyed, served.bob, "/v1/none")
    https_checkout_keyholder(served.bob.checkouts, bob).checkout(
        "excl/sw03", reason=REASON, field="password", version=None, hold=True, hold_for=None
    )
    https, wrapper = losing(keyed, served.admin, "/v1/checkouts/break_checkout")
    admin = https_checkin_keyholder(https_checkout_keyholder(served.admin.checkouts, https))
    before = event_count(keyed)
    answer = admin.release("excl/sw03", BREAK)
    assert (answer.released, answer.holders, answer.seq) == (1, ("bob",), before + 1)
    sent = request_ids(wrapper, "/v1/checkouts/break_checkout", "checkouts.break_checkout")
    assert len(sent) == 2 and sent[0] == sent[1]
    assert events_since(keyed, before) == [("checkout-break", served.admin.keyholder.me().engineer_id)]
    assert served.admin.audit.verify().ok


def test_an_answer_to_a_checkin_draft_that_is_lost_is_not_sent_again(keyed: Keyed) -> None:
    """The draft of a new value (``secrets.update_draft``, its ``secret-view``) is not retried: the
    error is the caller's, the draft's event is on record once, and nothing was stored."""
    served = keyed.served
    https, wrapper = losing(keyed, served.alice, "/v1/secrets/update_draft")
    holder = https_checkout_keyholder(served.alice.checkouts, https)
    holder.checkout("excl/sw04", reason=REASON, field="password", version=None, hold=True, hold_for=None)
    before = event_count(keyed)
    with pytest.raises(StoreUnavailable):
        https_checkin_keyholder(holder).release("excl/sw04", CHECKIN, "never stored")
    assert len([r for r in wrapper.sent if r.url.path == "/v1/secrets/update_draft"]) == 1
    assert [r.url.path for r in wrapper.sent].count("/v1/checkouts/checkin") == 0
    assert events_since(keyed, before) == [("secret-view", served.alice.keyholder.me().engineer_id)]
    assert https_checkin_keyholder(holder).release("excl/sw04", CHECKIN).released == 1


@pytest.mark.parametrize("path", ["/v1/secrets/add", "/v1/secrets/update"])
def test_a_secrets_commit_whose_answer_is_lost_is_sent_again_and_answered_from_its_event(
    keyed: Keyed, path: str
) -> None:
    """An add or update committed and its answer lost: the commit (not its draft) is sent again,
    answered from its ``secret-create`` / ``secret-update``; the keyholder accepts the answer
    (the draft as committed, the version it encrypted), the log holds each event once, and the
    value reads back."""
    served = keyed.served
    https, wrapper = losing(keyed, served.alice, path)
    secrets = over_https(served.alice.secrets, https)
    before = event_count(keyed)
    if path.endswith("add"):
        info = secrets.add("acme/rt03", password="rt03 after a lost answer", kind="service")
        ref, expected = "acme/rt03", ["secret-create"]
    else:
        info = secrets.update("excl/sw05", password="sw05 after a lost answer")
        ref, expected = "excl/sw05", ["secret-view", "secret-update"]
    assert info.version == (1 if path.endswith("add") else 2)
    operation = path.removeprefix("/v1/").replace("/", ".")
    sent = request_ids(wrapper, path, operation)
    assert len(sent) == 2 and sent[0] == sent[1]  # the same envelope, sent twice
    drafts = [r for r in wrapper.sent if r.url.path == f"{path}_draft"]
    assert len(drafts) == 1  # the draft once
    me = served.alice.keyholder.me().engineer_id
    assert events_since(keyed, before) == [(action, me) for action in expected]
    holder = https_checkout_keyholder(served.alice.checkouts, https)
    value = holder.checkout(ref, reason=REASON, field="password", version=None, hold=False, hold_for=None).value
    assert value == f"{ref.split('/')[1]} after a lost answer"
    assert served.admin.audit.verify().ok
