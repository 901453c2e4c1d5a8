"""The server's ``auth-refused`` event (docs/server.md §3, "Failed authentication"; server/auth_refusals.py).

The ``keyed`` team (conftest.py); two more server processes on its database (``server_with``),
signing with its server key, with a small per-engineer limit (3 per window) and a clock of the
limits that the test moves to the next window. The insider guesses at bob's signature (carol's
key under bob's keyid): the failure that reaches the limit appends one ``auth-refused`` event,
signed by the server key and verified by ``audit verify``; the ones after are 429 and append
nothing; the next window gets its own event. A DBA's change to the event is named by verify.
Both engines.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from server_harness import CertificateFiles, Keyed, Served, envelope, events, server_with, signed_post
from sqlalchemy import delete, update

from vault.authority.engineer_requests import WhoamiRequest
from vault.crypto import chain
from vault.crypto.serverkey import ServerSigningKey
from vault.storage import models as m
from vault.storage.engine import Store
from vault.wire.authlimits import PERIOD, AddressLimit, AuthenticationLimits, EngineerLimit

WHOAMI = "/v1/engineers/whoami"
LIMIT = 3


class Shift:
    """The limits' clock: real time from the middle of the current window, moved on by whole
    windows (so that a test never straddles a window's real end: it would count afresh there)."""

    def __init__(self) -> None:
        now = time.time()
        self.offset = (now // PERIOD) * PERIOD + PERIOD / 2 - now
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return time.time() + self.offset

    def next_window(self) -> None:
        self.offset += PERIOD

    def window_start(self) -> int:
        return int(self() // PERIOD) * PERIOD


@contextlib.contextmanager
def guarded(keyed: Keyed, test_ca: CertificateFiles, shift: Shift, **options: object) -> Iterator[Served]:
    def limits(store: Store) -> AuthenticationLimits:
        return AuthenticationLimits(AddressLimit(limit=1000), EngineerLimit(store, limit=LIMIT), clock=shift)

    with server_with(keyed, test_ca, None, limits=limits, **options) as served:  # type: ignore[arg-type]
        yield served


@pytest.fixture
def shift(keyed: Keyed) -> Shift:
    """A fresh clock, and no failure counted yet (the module shares one database)."""
    with keyed.store.transaction() as s:
        s.execute(delete(m.AuthFailure))
    return Shift()


def guess(served: Served, keyed: Keyed) -> httpx.Response:
    """A request under bob's keyid signed by carol's key: bad-signature, counted against bob."""
    body = envelope("engineers.whoami", WhoamiRequest())
    return signed_post(served, WHOAMI, body, keyed.served.bob, key=keyed.carol.keyholder.my_signing_key())


def honest(served: Served, keyed: Keyed) -> httpx.Response:
    return signed_post(served, WHOAMI, envelope("engineers.whoami", WhoamiRequest()), keyed.served.bob)


def refusals(keyed: Keyed) -> list[m.AuditEvent]:
    return [e for e in events(keyed.served) if e.action == "auth-refused"]


def bob_id(keyed: Keyed) -> int:
    return int(keyed.served.bob.keyholder.me().engineer_id)


def test_the_failure_reaching_the_limit_appends_one_server_signed_event_per_window(
    keyed: Keyed, test_ca: CertificateFiles, shift: Shift
) -> None:
    before = len(refusals(keyed))
    with guarded(keyed, test_ca, shift) as one, guarded(keyed, test_ca, shift) as two:
        statuses = [guess(server, keyed).status_code for server in (one, two, one)]
        assert statuses == [401, 401, 401]  # the third reached the limit: still refused as itself
        assert [guess(server, keyed).status_code for server in (one, two)] == [429, 429]
        assert honest(two, keyed).status_code == 429  # over the limit, before any signature check
        found = refusals(keyed)[before:]
        assert len(found) == 1
        window = shift.window_start()
        event = found[0]
        assert (event.engineer_id, event.key_generation, event.client_id) == (bob_id(keyed), 0, None)
        assert event.details_json == f'{{"count": {LIMIT}, "window_start": {window}}}'
        assert (event.request_id, event.request_sig, event.request_body) == (None, None, None)
        assert event.server_key_version == keyed.key.version
        vault_id = keyed.served.admin.vault_id()
        assert chain.server_signature_valid(keyed.key.public, event.signature, vault_id, 1, event.seq, event.hash)

        shift.next_window()
        assert honest(one, keyed).status_code == 200  # a new window: let in again
        assert [guess(server, keyed).status_code for server in (two, one, two)] == [401, 401, 401]
        assert guess(one, keyed).status_code == 429
        found = refusals(keyed)[before:]
        assert len(found) == 2
        assert found[1].details_json == f'{{"count": {LIMIT}, "window_start": {window + PERIOD}}}'
    assert keyed.served.admin.audit.verify().ok


def test_concurrent_failures_on_two_processes_append_one_event(
    keyed: Keyed, test_ca: CertificateFiles, shift: Shift
) -> None:
    before = len(refusals(keyed))
    with guarded(keyed, test_ca, shift) as one, guarded(keyed, test_ca, shift) as two:
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(pool.map(lambda server: guess(server, keyed).status_code, [one, two] * 5))
        assert statuses.count(401) >= LIMIT and set(statuses) <= {401, 429}
        assert len(refusals(keyed)) == before + 1
    assert keyed.served.admin.audit.verify().ok


def test_a_server_without_a_key_logs_the_trip_and_appends_nothing(
    keyed: Keyed, test_ca: CertificateFiles, shift: Shift, caplog: pytest.LogCaptureFixture
) -> None:
    before = len(events(keyed.served))
    with guarded(keyed, test_ca, shift, keyless=True) as keyless, caplog.at_level(logging.WARNING):
        assert [guess(keyless, keyed).status_code for _ in range(LIMIT + 1)] == [401] * LIMIT + [429]
    assert len(events(keyed.served)) == before
    assert any("authentication limit reached: engineer" in r.getMessage() for r in caplog.records)


def test_a_server_whose_key_is_not_certified_still_enforces_the_limit(
    keyed: Keyed, test_ca: CertificateFiles, shift: Shift, caplog: pytest.LogCaptureFixture
) -> None:
    """The event cannot be appended (the key file and the database disagree): the failure is
    counted all the same, so the limit never depends on the journal; the log says what is missing."""
    before = len(events(keyed.served))
    rogue = ServerSigningKey.generate(keyed.key.version)
    with guarded(keyed, test_ca, shift, key=rogue) as server, caplog.at_level(logging.WARNING):
        assert [guess(server, keyed).status_code for _ in range(LIMIT + 1)] == [401] * LIMIT + [429]
    assert len(events(keyed.served)) == before
    assert any("auth-refused not appended (ConfigurationError)" in r.getMessage() for r in caplog.records)


def test_an_auth_refused_event_changed_by_a_dba_is_named_by_verify(
    keyed: Keyed, test_ca: CertificateFiles, shift: Shift
) -> None:
    with guarded(keyed, test_ca, shift) as server:
        for _ in range(LIMIT):
            guess(server, keyed)
    event = refusals(keyed)[-1]
    original, kept_hash = event.details_json, event.hash
    forged = original.replace(f'"count": {LIMIT}', '"count": 1')  # type: ignore[union-attr]
    try:
        with keyed.store.transaction() as s:
            s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == event.seq).values(details_json=forged))
        result = keyed.served.admin.audit.verify()
        assert not result.ok and result.first_bad_seq == event.seq, result.problem
        with keyed.store.transaction() as s:  # rehashed too: the server's signature no longer covers it
            row = s.get(m.AuditEvent, event.seq)
            assert row is not None
            fields = (row.at_us, row.engineer_id, row.key_generation, row.action, row.client_id, row.secret_id)
            row.hash = chain.event_hash_v3(
                keyed.served.admin.vault_id(), row.seq, *fields, row.key_version, row.details_blob,
                row.details_json, request_id=None, request_digest=None, prev_hash=row.prev_hash,
            )
            relinked = s.get(m.AuditEvent, event.seq + 1)
            head = s.get(m.AuditHead, 1)
            assert head is not None
            if relinked is not None:
                relinked.prev_hash = row.hash  # the DBA relinks the next event: its own hash then breaks
            else:
                head.hash = row.hash
        result = keyed.served.admin.audit.verify()
        assert not result.ok and result.first_bad_seq == event.seq
        assert "server signature is invalid" in str(result.problem)
    finally:
        with keyed.store.transaction() as s:
            row = s.get(m.AuditEvent, event.seq)
            assert row is not None
            row.details_json, row.hash = original, kept_hash
            relinked = s.get(m.AuditEvent, event.seq + 1)
            if relinked is not None:
                relinked.prev_hash = kept_hash
            else:
                s.get(m.AuditHead, 1).hash = kept_hash  # type: ignore[union-attr]
    assert keyed.served.admin.audit.verify().ok
