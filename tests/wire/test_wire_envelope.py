"""The envelope around a body, and the insider's bodies that a laxer parser would read as the value.

The attacks: an engineer with a certified key (or a compromised server) sends a body whose
bytes differ from the canonical encoding but which a lax JSON reader (last duplicate wins,
1.0 == 1, padding tolerated, true == 1) reads as the same value — so that a signature
checked over one reading and an action taken on another, or a cache keyed by the bytes,
could disagree. Each must be refused; the checks named below hold even with
``canonical=False``, so the canonical-bytes comparison is not the only guard.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from vault.authority.requests import BREAK, CHECKOUT, Caller, CheckoutRequest, ListRequest, ReleaseRequest
from vault.errors import InvalidInput
from vault.wire import codec
from vault.wire.codec import REQUEST_ID_BYTES, Envelope, Registry, decode, encode, envelope, open_envelope

RID = bytes(range(REQUEST_ID_BYTES))


def _request() -> CheckoutRequest:
    return CheckoutRequest(
        action=CHECKOUT,
        caller=Caller(engineer_id=7, key_generation=2),
        client_id=3,
        slug_tag=None,
        name_tag=b"\xff\xfe",
        version=1,
        hold_seconds=None,
        has_reason=True,
        field_is_password=False,
        audit_keys_blob=b"ring",
        known_key_versions=(1, 2),
        org_pin=b"\x00" * 32,
    )


def _lax(data: bytes) -> dict[str, Any]:
    """What a lenient reader makes of a CheckoutRequest body: json.loads, padding-tolerant base64."""
    tree: dict[str, Any] = json.loads(data)
    for key in ("name_tag", "audit_keys_blob", "org_pin"):
        tree[key] = base64.urlsafe_b64decode(tree[key] + "==")
    return tree


# Each: (what the insider changes, into what, which check refuses it even with canonical=False).
LAX_TWINS = [
    (b'"version":1', b'"version":5,"version":1', "duplicate"),  # a first-wins reader sees 5
    (b'"version":1', b'"version":1.0', "not an integer"),
    (b'"version":1', b'"version":1e0', "not an integer"),
    (b'"version":1', b'"version":true', "expected an integer"),
    (b'"has_reason":true', b'"has_reason":1', "true or false"),
    (b'"name_tag":"__4"', b'"name_tag":"__4="', "padding"),
    (b'"name_tag":"__4"', b'"name_tag":"__7"', "canonical"),  # stray low bits: decodes to ff fe too
    (b'"caller":{"engineer_id":7', b'"caller":{"engineer_id":8,"engineer_id":7', "duplicate"),
]


@pytest.mark.parametrize(("old", "new", "check"), LAX_TWINS)
def test_a_lax_twin_of_a_request_is_refused(old: bytes, new: bytes, check: str) -> None:
    canonical = encode(_request())
    assert old in canonical
    twin = canonical.replace(old, new, 1)
    assert twin != canonical and _lax(twin) == _lax(canonical)  # the attack: a lax reader sees the same value
    for strict in (True, False):
        with pytest.raises(InvalidInput, match=check):
            decode(twin, CheckoutRequest, canonical=strict)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"action":"checkout"', b'"action":"\\u0063heckout"'),  # an escaped letter
        (b'{"action"', b'{ "action"'),  # whitespace
        (b'"version":1}', b'"version":1 }'),
    ],
)
def test_a_spelling_twin_is_refused_by_the_canonical_bytes(old: bytes, new: bytes) -> None:
    canonical = encode(_request())
    twin = canonical.replace(old, new, 1)
    assert twin != canonical and _lax(twin) == _lax(canonical)
    with pytest.raises(InvalidInput, match="canonical"):
        decode(twin, CheckoutRequest)


def test_an_envelope_round_trips() -> None:
    data = envelope("checkouts.checkout", _request(), RID)
    tree = json.loads(data)
    assert list(tree) == ["body", "request_id", "type", "v"]
    assert tree["type"] == "checkouts.checkout" and tree["v"] == 1
    assert base64.urlsafe_b64decode(tree["request_id"] + "==") == RID
    opened = open_envelope(data, "checkouts.checkout")
    assert opened == Envelope("checkouts.checkout", 1, RID, _request())
    assert "ring" not in repr(opened)


def test_an_envelope_is_opened_only_as_the_route_expects() -> None:
    data = envelope("checkouts.reveal", _request(), RID)
    with pytest.raises(InvalidInput, match=r"envelope\.type: not the operation of this route"):
        open_envelope(data, "checkouts.checkout")  # a reveal replayed to the checkout route
    with pytest.raises(InvalidInput, match="not a registered operation"):
        open_envelope(data, "checkouts.steal")


def _tampered(old: bytes, new: bytes) -> bytes:
    data = envelope("checkouts.checkout", _request(), RID)
    assert old in data
    return data.replace(old, new, 1)


DUPLICATE_TYPE = b'"type":"checkouts.list","type":"checkouts.checkout"'
RID_TEXT = base64.urlsafe_b64encode(RID).rstrip(b"=")


@pytest.mark.parametrize("canonical", [True, False])
@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        # a duplicate type: a last-wins reader routes a checkout, a first-wins one a list
        (
            _tampered(b'"type":"checkouts.checkout"', b'"type":"checkouts.list","type":"checkouts.checkout"'),
            "duplicate",
        ),
        (_tampered(b'"v":1', b'"v":2'), "envelope.v: not wire version 1"),
        (_tampered(b'"v":1', b'"v":true'), "envelope.v: expected an integer"),
        (_tampered(b'"v":1', b'"v":1.0'), "not an integer"),
        (_tampered(RID_TEXT, RID_TEXT[:-3]), "envelope.request_id: not 16 bytes"),
        (_tampered(RID_TEXT, RID_TEXT + b"="), "envelope.request_id: not base64url"),
        (_tampered(b'"v":1', b'"v":1,"admin":true'), "envelope: an unknown field"),
        (_tampered(b',"v":1', b""), "envelope.v: a missing field"),
        (_tampered(b'"version":1', b'"version":"1"'), "envelope.body.version: expected an integer"),
        (_tampered(b'"caller":{', b'"caller":{"role":"admin",'), "envelope.body.caller: an unknown field"),
        (b"[]", "envelope: expected an object"),
    ],
)
def test_a_tampered_envelope_is_refused(data: bytes, fragment: str, canonical: bool) -> None:
    with pytest.raises(InvalidInput, match=fragment.replace(".", r"\.")):
        open_envelope(data, "checkouts.checkout", canonical=canonical)


def test_an_envelope_in_another_key_order_is_refused_unless_asked() -> None:
    tree = json.loads(envelope("checkouts.checkout", _request(), RID))
    reordered = json.dumps({k: tree[k] for k in ("type", "v", "request_id", "body")}, separators=(",", ":")).encode()
    with pytest.raises(InvalidInput, match="canonical"):
        open_envelope(reordered, "checkouts.checkout")
    assert open_envelope(reordered, "checkouts.checkout", canonical=False).body == _request()


def test_an_envelope_over_the_limit_is_refused() -> None:
    data = envelope("checkouts.checkout", _request(), RID)
    assert open_envelope(data, "checkouts.checkout", max_bytes=len(data)).request_id == RID
    with pytest.raises(InvalidInput, match="over the limit"):
        open_envelope(data, "checkouts.checkout", max_bytes=len(data) - 1)


def test_the_sender_cannot_put_a_body_of_another_class_in_an_envelope() -> None:
    release = ReleaseRequest(BREAK, Caller(1, 1), 3, None, b"n", False, b"r", (), b"p")
    with pytest.raises(TypeError):
        envelope("checkouts.checkout", release, RID)
    with pytest.raises(ValueError, match="16 bytes"):
        envelope("checkouts.checkout", _request(), RID[:15])
    listed = envelope("checkouts.list", ListRequest(Caller(1, 1), ((3, 1),), b"p"), RID)
    with pytest.raises(InvalidInput, match=r"envelope\.body"):
        open_envelope(listed.replace(b'"checkouts.list"', b'"checkouts.checkout"'), "checkouts.checkout")


def test_a_separate_registry_knows_only_its_own_names() -> None:
    registry = Registry()
    registry.register("checkouts.checkout", CheckoutRequest)
    data = registry.envelope("checkouts.checkout", _request(), RID)
    assert data == envelope("checkouts.checkout", _request(), RID)
    with pytest.raises(InvalidInput, match="not a registered operation"):
        registry.open_envelope(data, "checkouts.list")
    assert codec.REGISTRY.open_envelope(data, "checkouts.checkout").body == _request()
