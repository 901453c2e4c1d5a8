"""``auditchain.check_rows`` over format-3 events, pure (no store): docs/format.md §8.2.

Rows are made here as the server would append them (hash in format 3, the server key's
signature, the engineer's signed request) and as an engineer's machine would (format 2), then
one thing is changed per case, as an insider who holds the server key or an engineer key would.
"""

from __future__ import annotations

import os
from typing import Any

from vault.authority.requests import Caller, CheckoutRequest, ReleaseRequest
from vault.crypto import chain
from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.keyholder import auditchain
from vault.wire import codec, httpsig
from vault.wire.eventrequest import CONTENT_TYPE, keyid_of, record, route_path

VAULT = bytes(range(16))
EVE, EVE_ID, GEN, CLIENT = SigningKey(bytes([31]) * 32), 7, 1, 12
SERVER = ServerSigningKey(1, SigningKey(bytes([32]) * 32))
T0 = 1_733_400_000_000_000
KEYS: auditchain.Keys = {(EVE_ID, GEN): (EVE.public, 1, auditchain.NEVER)}
SERVERS = {1: (SERVER.public, T0)}
CODEC = chain.EventCodec(VAULT)


def _request(action: str = "checkout", request_id: bytes | None = None, created: int = T0 // 1_000_000) -> Any:
    body = CheckoutRequest(action, Caller(EVE_ID, GEN), CLIENT, None, bytes(32), None, None, False, True, b"r", (), b"")
    request_id = request_id or os.urandom(16)
    envelope = codec.envelope(f"checkouts.{action}", body, request_id)
    path = route_path(f"checkouts.{action}")
    headers = httpsig.sign_request(
        "POST", "h", path, CONTENT_TYPE, envelope, EVE, keyid_of(EVE_ID, GEN), created=created
    )
    return record("POST", "h", path, headers, envelope, request_id)


class Chain:
    """Events appended in order, each hashed and signed as its format says."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    @property
    def prev(self) -> bytes:
        return self.rows[-1][11] if self.rows else chain.GENESIS

    def v3(self, action: str = "checkout", request: Any = None, at_us: int | None = None, key: Any = SERVER) -> int:
        seq, at = len(self.rows) + 1, T0 + len(self.rows) if at_us is None else at_us
        r = request or _request(action)
        fields = (at, EVE_ID, GEN, action, CLIENT, None, None, None, None)
        digest = chain.event_hash_v3(
            VAULT, seq, *fields, request_id=r.request_id, request_digest=r.digest, prev_hash=self.prev
        )
        signature = key.sign_event(VAULT, seq, digest)
        self.rows.append((seq, *fields, self.prev, digest, signature, r.request_id, r.digest, r.sig, r.body, 1))
        return seq

    def v2(self, action: str = "checkout") -> int:
        seq, at = len(self.rows) + 1, T0 + len(self.rows)
        fields = (at, EVE_ID, GEN, action, CLIENT, None, None, None, None)
        digest = chain.event_hash(VAULT, seq, *fields, prev_hash=self.prev)
        signature = chain.sign_event(EVE.seed, VAULT, seq, digest)
        self.rows.append((seq, *fields, self.prev, digest, signature, None, None, None, None, None))
        return seq

    def check(self, servers: Any = SERVERS) -> auditchain.RangeResult:
        return auditchain.check_rows(self.rows, CODEC, KEYS, 1, None, servers)


def test_format_2_then_format_3_checks_out_and_ends_in_format_3() -> None:
    c = Chain()
    c.v2(), c.v2(), c.v3(), c.v3("reveal")
    r = c.check()
    assert r.problem is None and r.good == 4 and (r.first_format, r.last_format) == (2, 3)
    assert len(r.head_requests) == 2 and len(r.tail_requests) == 2


def test_a_format_2_event_after_format_3_is_a_downgrade_but_a_local_unlock_is_not() -> None:
    c = Chain()
    c.v3(), c.v2("unlock")
    r = c.check()
    assert r.problem is None and r.last_format == 3  # the chain stays in format 3 after a local unlock
    bad = c.v2("checkout")
    r = c.check()
    assert (r.bad_seq, r.good) == (bad, 2) and "a downgrade" in str(r.problem)


def test_without_its_certified_server_key_a_format_3_event_is_refused() -> None:
    c = Chain()
    c.v3()
    assert "not certified" in str(c.check({}).problem)
    assert "not certified" in str(c.check({2: SERVERS[1]}).problem)
    assert "server signature is invalid" in str(c.check({1: (ServerSigningKey.generate(1).public, T0)}).problem)


def test_an_event_dated_before_its_server_key_was_certified_is_refused() -> None:
    c = Chain()
    c.v3(at_us=T0 - 1)
    assert "before its server key was certified" in str(c.check().problem)


def test_an_event_whose_server_signature_is_missing_or_by_another_key_is_refused() -> None:
    c = Chain()
    c.v3(key=ServerSigningKey.generate(1))
    assert "server signature is invalid" in str(c.check().problem)
    c = Chain()
    c.v3()
    c.rows[0] = (*c.rows[0][:12], None, *c.rows[0][13:])
    assert "server signature is invalid" in str(c.check().problem)


def test_a_request_appended_twice_in_one_run_is_named_at_its_second_event() -> None:
    c = Chain()
    request = _request()
    c.v3(request=request), c.v3(), c.v3(request=request)
    r = c.check()
    assert (r.bad_seq, r.good) == (3, 2) and "(event 1)" in str(r.problem)


def test_one_request_may_append_each_of_its_actions_once() -> None:
    """A check-in with a new value appends a secret-update and a checkin for one request."""
    body = ReleaseRequest("checkin", Caller(EVE_ID, GEN), CLIENT, None, bytes(32), True, b"r", (), b"")
    request_id = os.urandom(16)
    envelope = codec.envelope("checkouts.checkin", body, request_id)
    path = route_path("checkouts.checkin")
    headers = httpsig.sign_request(
        "POST", "h", path, CONTENT_TYPE, envelope, EVE, keyid_of(EVE_ID, GEN), created=T0 // 1_000_000
    )
    checkin = record("POST", "h", path, headers, envelope, request_id)
    c = Chain()
    c.v3("secret-update", request=checkin), c.v3("checkin", request=checkin)
    assert c.check().problem is None
    c.v3("checkin", request=checkin)
    r = c.check()
    assert r.bad_seq == 3 and "already has a checkin event (event 2)" in str(r.problem)


def test_an_engineer_key_retired_before_the_event_fails_the_request() -> None:
    c = Chain()
    c.v3(), c.v3()
    retired = {(EVE_ID, GEN): (EVE.public, 1, 2)}
    r = auditchain.check_rows(c.rows, CODEC, retired, 1, None, SERVERS)
    assert r.bad_seq == 2 and "its request: it is signed by a key the chain retired at event 2" in str(r.problem)


def test_a_request_signed_by_another_key_than_the_events_engineer_is_refused() -> None:
    c = Chain()
    c.v3()
    mallory = {(EVE_ID, GEN): (SigningKey(bytes([33]) * 32).public, 1, auditchain.NEVER)}
    r = auditchain.check_rows(c.rows, CODEC, mallory, 1, None, SERVERS)
    assert r.bad_seq == 1 and "request signature is invalid" in str(r.problem)
