"""The signed request a format-3 event keeps, checked again by ``audit verify``
(vault/wire/eventrequest.py over httpsig.verify_recorded; docs/format.md §8.2).

The insider is the compromised server (or a DBA): it holds the engineer's genuinely signed
requests and records them against events they were not made for. Each case changes one thing
and expects the check that names it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from vault.authority.report_requests import STALE, STATUS, ReportRequest
from vault.authority.requests import Caller, CheckoutRequest, ReleaseRequest
from vault.crypto.signing import SigningKey
from vault.errors import InvalidInput
from vault.wire import codec, httpsig
from vault.wire.eventrequest import (
    CONTENT_TYPE,
    EVENT_WINDOW,
    KEPT_BODY_MAX,
    RecordedRequest,
    keyid_of,
    operation_of,
    parse_sig,
    record,
    request_problem,
    route_path,
)

HOST, NOW = "vault.example.com", 1_733_400_000
EVE = SigningKey(bytes([4]) * 32)
MALLORY = SigningKey(bytes([5]) * 32)
EVE_ID, EVE_GEN, CLIENT, OTHER_CLIENT = 7, 2, 12, 13
REQUEST_ID = bytes([1]) * 16


def _body(action: str = "checkout", client_id: int | None = CLIENT, caller: Caller | None = None) -> object:
    who = caller or Caller(EVE_ID, EVE_GEN)
    if action in ("checkin", "break_checkout"):
        named = "checkin" if action == "checkin" else "checkout-break"
        return ReleaseRequest(named, who, client_id, None, bytes(32), True, b"ring", (), bytes(32))
    return CheckoutRequest(action, who, client_id, None, bytes(32), None, None, False, True, b"ring", (), bytes(32))


def _signed(
    operation: str = "checkouts.checkout",
    *,
    body: object | None = None,
    key: SigningKey = EVE,
    keyid: str | None = None,
    created: int = NOW,
    request_id: bytes = REQUEST_ID,
    keep_body: bool = True,
) -> RecordedRequest:
    envelope = codec.envelope(operation, body if body is not None else _body(), request_id)
    path = route_path(operation)
    headers = httpsig.sign_request(
        "POST", HOST, path, CONTENT_TYPE, envelope, key, keyid or keyid_of(EVE_ID, EVE_GEN), created=created
    )
    return record("POST", HOST, path, headers, envelope, request_id, keep_body=keep_body)


def _problem(r: RecordedRequest, **event: Any) -> str | None:
    e = {"engineer_id": EVE_ID, "key_generation": EVE_GEN, "action": "checkout", "client_id": CLIENT}
    e |= {"at_us": NOW * 1_000_000, "public": EVE.public} | event
    return request_problem(
        e["engineer_id"],
        e["key_generation"],
        e["action"],
        e["client_id"],
        e["at_us"],
        r.request_id,
        r.digest,
        r.sig,
        r.body,
        e["public"],
    )


def test_a_recorded_request_verifies_with_and_without_its_body() -> None:
    assert _problem(_signed()) is None
    assert _problem(_signed(keep_body=False)) is None
    reveal = _signed("checkouts.reveal", body=_body("reveal"))
    assert _problem(reveal, action="reveal") is None


def test_a_check_in_records_both_of_its_events() -> None:
    checkin = _signed("checkouts.checkin", body=_body("checkin"))
    assert _problem(checkin, action="checkin") is None
    assert _problem(checkin, action="secret-update") is None
    assert "another operation" in str(_problem(checkin, action="checkout"))


def test_a_report_records_its_release_event_only() -> None:
    """On a layered vault a report appends ``report-<kind>``; its body names the kind (``status``)."""
    status = _signed("reports.status", body=ReportRequest(STATUS, Caller(EVE_ID, EVE_GEN), (), bytes(32)))
    assert _problem(status, action="report-status", client_id=None) is None
    assert "another operation" in str(_problem(status, action="report-stale", client_id=None))
    # a stale body signed for the status route: the route appends report-status, the body names stale
    crossed = _signed("reports.status", body=ReportRequest(STALE, Caller(EVE_ID, EVE_GEN), (), bytes(32)))
    assert "another action" in str(_problem(crossed, action="report-status", client_id=None))


def test_the_record_keeps_the_signed_headers_and_route_on_three_lines() -> None:
    r = _signed()
    lines = parse_sig(r.sig)
    assert lines is not None and (lines.method, lines.authority, lines.path) == ("POST", HOST, "/v1/checkouts/checkout")
    assert lines.signature_input.startswith('cv=("@method"') and lines.signature.startswith("cv=:")
    assert r.digest == hashlib.sha256(r.body or b"").digest() and "kept_body=True" in repr(r)
    assert operation_of("/v1/checkouts/checkout") == "checkouts.checkout"
    assert operation_of("/v1/backups/restore") is None and operation_of("/v2/checkouts/checkout") is None


def test_a_body_larger_than_kept_is_recorded_as_its_digest() -> None:
    big = _body("checkout")
    big = dataclasses.replace(big, audit_keys_blob=bytes(KEPT_BODY_MAX))  # type: ignore[type-var]
    r = _signed(body=big)
    assert r.body is None and _problem(r) is None


def test_the_record_refuses_a_body_that_is_not_the_one_signed() -> None:
    envelope = codec.envelope("checkouts.checkout", _body(), REQUEST_ID)
    headers = httpsig.sign_request("POST", HOST, "/v1/checkouts/checkout", CONTENT_TYPE, envelope, EVE, "e:7:2")
    with pytest.raises(InvalidInput):
        record("POST", HOST, "/v1/checkouts/checkout", headers, envelope + b" ", REQUEST_ID)


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"public": MALLORY.public}, "request signature is invalid"),
        ({"engineer_id": 8}, "another engineer's key"),
        ({"key_generation": 1}, "another engineer's key"),
        ({"engineer_id": None}, "unknown engineer key"),
        ({"action": "reveal"}, "another operation"),
        ({"client_id": OTHER_CLIENT}, "another client"),
        ({"at_us": (NOW + EVENT_WINDOW + 1) * 1_000_000}, "old request replayed"),
        ({"at_us": (NOW - EVENT_WINDOW - 1) * 1_000_000}, "old request replayed"),
        ({"public": b"\x01" + bytes(31)}, "request signature is invalid"),
    ],
)
def test_a_request_recorded_against_another_event_is_refused(event: dict[str, Any], problem: str) -> None:
    assert problem in str(_problem(_signed(), **event))


def test_the_event_window_is_inclusive() -> None:
    assert _problem(_signed(), at_us=(NOW + EVENT_WINDOW) * 1_000_000) is None


def _with(r: RecordedRequest, **change: Any) -> RecordedRequest:
    return dataclasses.replace(r, **change)


def test_a_rewritten_record_is_refused() -> None:
    r = _signed()
    other = _signed(request_id=bytes([2]) * 16, body=_body(client_id=None))
    lines = r.sig.split("\n")
    cases = {
        "request signature is invalid": [
            _with(r, digest=other.digest, body=None),
            _with(r, sig="\n".join([lines[0].replace(HOST, "other.example.com"), *lines[1:]])),
            _with(r, sig="\n".join([lines[0], other.sig.split("\n")[1], lines[2]])),
            _with(r, sig="\n".join([lines[0], lines[1], other.sig.split("\n")[2]])),
            _with(r, sig="\n".join([lines[0], lines[1].replace("created=", "created=1"), lines[2]])),
        ],
        "another operation": [
            _with(r, sig="\n".join([lines[0].replace("checkout", "reveal"), *lines[1:]])),
            _with(r, sig="\n".join([lines[0].replace("POST", "GET"), *lines[1:]])),
            _with(r, sig="\n".join([lines[0].replace("/v1/", "/v1/../v1/"), *lines[1:]])),
        ],
        "keeps no signed request": [
            _with(r, sig=None),
            _with(r, sig=r.sig + "\n"),
            _with(r, sig=lines[0] + "\n" + lines[1]),
            _with(r, request_id=None),
            _with(r, digest=None),
        ],
        "body is not the one signed": [_with(r, body=other.body), _with(r, body=r.body + b" ")],  # type: ignore[operator]
        "request id is not the one": [_with(r, request_id=other.request_id)],
    }
    for problem, forgeries in cases.items():
        for forged in forgeries:
            assert problem in str(_problem(forged)), (problem, forged.sig)


def test_a_body_of_another_route_or_caller_is_refused() -> None:
    # eve signs a reveal's envelope at the checkout route: the envelope names another operation
    wrong_type = codec.envelope("checkouts.reveal", _body("reveal"), REQUEST_ID)
    headers = httpsig.sign_request(
        "POST", HOST, "/v1/checkouts/checkout", CONTENT_TYPE, wrong_type, EVE, "e:7:2", created=NOW
    )
    r = record("POST", HOST, "/v1/checkouts/checkout", headers, wrong_type, REQUEST_ID)
    assert "not an envelope of its route" in str(_problem(r))
    # a body naming another key generation of eve's than the keyid (and the event) it is signed under
    r = _signed(body=_body(caller=Caller(EVE_ID, EVE_GEN + 1)))
    assert "another caller" in str(_problem(r))
    r = _signed(body=_body(action="reveal"))  # a checkout route whose body says reveal
    assert "another action" in str(_problem(r))


def test_verify_recorded_is_the_request_profile_without_window_or_nonce_store() -> None:
    r = _signed(created=NOW - 10 * 365 * 86400)
    lines = parse_sig(r.sig)
    assert lines is not None
    verified = httpsig.verify_recorded(
        "POST",
        HOST,
        lines.path,
        CONTENT_TYPE,
        httpsig.digest_field(r.digest),
        lines.signature_input,
        lines.signature,
        EVE.public,
    )
    assert verified.keyid == keyid_of(EVE_ID, EVE_GEN) and verified.created == NOW - 10 * 365 * 86400
    assert httpsig.digest_field(r.digest) == httpsig.content_digest(r.body or b"")
