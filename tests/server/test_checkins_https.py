"""Check-in and break over HTTPS (issue 14): the release noun of the checkout, through the team server.

The ``keyed`` team (conftest.py): acme (a reason, not exclusive), excl (exclusive), alice
granted both, bob excl, carol nothing, the server running with a certified key. A release
through the server is a format-3 event (``checkin`` or ``checkout-break``) appended in the
release's unit with the signed request kept, committed before the answer. An embedded
release on a server-keyed vault would write a format-2 event after format-3 ones (a
downgrade ``audit verify`` refuses): it is refused, nothing written. A check-in with a new
value is encrypted for a ``secrets.update_draft`` and committed with the check-in; a crafted
one without its version is refused. A release re-sent under a new signature (the same request id)
is answered from its committed events, nothing appended; the same id with another body is 409.
Each refusal asserts that nothing was written (every row count and the audit head; a read's
nonce aside).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from server_harness import (
    CertificateFiles,
    Keyed,
    Sent,
    Served,
    database_state,
    events,
    keyholder,
    loopback_socket,
    running,
    signed_post,
    without_nonces,
)
from sqlalchemy import delete, update

from vault.authority.requests import BREAK, CHECKIN, Caller
from vault.authority.server_keys import ServerKeyRow
from vault.crypto import serverkey
from vault.crypto.serverkey import ServerSigningKey
from vault.errors import AccessDenied, CheckoutConflict, ConfigurationError, InvalidInput, NotFound
from vault.keyholder.checkins import CheckinKeyholder
from vault.keyholder.checkouts import CheckoutKeyholder
from vault.server.app import build_app
from vault.server.running import ServeOptions
from vault.service.checkouts import https_checkin_keyholder
from vault.storage import models as m
from vault.storage.engine import Store
from vault.wire import codec
from vault.wire.eventrequest import request_problem
from vault.wire.nonces import DbNonceStore

CHECKIN_PATH, BREAK_PATH = "/v1/checkouts/checkin", "/v1/checkouts/break_checkout"
REASON = "T-2001 patch firewall"


def holders(served: Served, vault: Any) -> tuple[CheckoutKeyholder, CheckinKeyholder, Sent]:
    holder, sent = keyholder(served, vault)
    return holder, https_checkin_keyholder(holder), sent


def checkout(holder: CheckoutKeyholder, ref: str) -> str:
    return holder.checkout(ref, reason=REASON, field="password", version=None, hold=True, hold_for=None).value


def release_body(sent: Sent, path: str, operation: str, **changes: Any) -> bytes:
    """The last body ``sent`` carried to ``path``, changed, under a new request id."""
    request = next(r for r in reversed(sent.requests) if r.url.path == path)
    opened = codec.open_envelope(request.content, operation)
    return codec.envelope(operation, dataclasses.replace(opened.body, **changes), os.urandom(codec.REQUEST_ID_BYTES))


def test_a_checkin_through_the_server_releases_the_hold_after_a_format3_event(keyed: Keyed) -> None:
    served = keyed.served
    holder, checkins, sent = holders(served, served.alice)
    assert checkout(holder, "acme/fw01") == "pw of acme/fw01"
    before = len(events(served))
    answer = checkins.release("acme/fw01", CHECKIN)
    assert (answer.released, answer.holders) == (1, ())
    new = events(served)[before:]
    assert [e.action for e in new] == ["checkin"]
    e, me = new[0], served.alice.keyholder.me()
    assert (e.seq, e.engineer_id, e.server_key_version) == (answer.seq, me.engineer_id, 1)
    request = next(r for r in reversed(sent.requests) if r.url.path == CHECKIN_PATH)
    assert e.request_body == request.content  # the envelope alice signed, kept in the chain
    public = served.alice.keyholder.my_signing_key().public
    problem = request_problem(
        e.engineer_id, e.key_generation, e.action, e.client_id, e.at_us, e.request_id,
        e.request_digest, e.request_sig, e.request_body, public,
    )  # fmt: skip
    assert problem is None
    assert json.loads(e.details_json) == {"new_version": False, "released": 1}
    assert served.admin.audit.verify().ok
    with pytest.raises(NotFound, match="you hold no checkout"):  # released: nothing left to check in
        checkins.release("acme/fw01", CHECKIN)


def test_an_admin_breaks_an_exclusive_hold_through_the_server(keyed: Keyed) -> None:
    served = keyed.served
    bob, _, _ = holders(served, served.bob)
    alice, _, _ = holders(served, served.alice)
    _, admin, _ = holders(served, served.admin)
    assert checkout(bob, "excl/sw01") == "pw of excl/sw01"
    answer = admin.release("excl/sw01", BREAK)
    assert (answer.released, answer.holders) == (1, ("bob",))
    last = events(served)[-1]
    assert (last.action, json.loads(last.details_json)) == ("checkout-break", {"holders": ["bob"]})
    assert checkout(alice, "excl/sw01") == "pw of excl/sw01"  # the hold no longer blocks
    assert served.admin.audit.verify().ok


def test_an_engineer_cannot_break_and_nothing_is_written(keyed: Keyed) -> None:
    served = keyed.served
    bob, _, _ = holders(served, served.bob)
    _, alice, _ = holders(served, served.alice)
    checkout(bob, "excl/sw02")
    before = without_nonces(database_state(served.db_url))
    with pytest.raises(AccessDenied, match="admin"):
        alice.release("excl/sw02", BREAK)
    assert without_nonces(database_state(served.db_url)) == before


def test_checking_in_another_engineers_hold_is_404_and_nothing_is_written(keyed: Keyed) -> None:
    served = keyed.served
    bob, _, _ = holders(served, served.bob)
    _, alice, _ = holders(served, served.alice)
    checkout(bob, "excl/sw03")
    before = without_nonces(database_state(served.db_url))
    with pytest.raises(NotFound, match="you hold no checkout"):
        alice.release("excl/sw03", CHECKIN)
    assert without_nonces(database_state(served.db_url)) == before


def test_a_checkin_with_a_new_value_stores_it_through_a_draft(keyed: Keyed) -> None:
    """The new value is encrypted for a ``secrets.update_draft`` (its ``secret-view`` on record)
    and committed with the check-in: ``secret-update`` and ``checkin`` in the release's unit."""
    served = keyed.served
    holder, checkins, sent = holders(served, served.alice)
    checkout(holder, "acme/fw02")
    before = len(events(served))
    answer = checkins.release("acme/fw02", CHECKIN, new_value="a new password")
    assert (answer.released, answer.holders, answer.must_change) == (1, (), False)
    new = events(served)[before:]
    assert [e.action for e in new] == ["secret-view", "secret-update", "checkin"]
    assert json.loads(new[1].details_json) == {"version": answer.version, "password_changed": True}
    assert json.loads(new[2].details_json) == {"new_version": True, "released": 1}
    assert [r.url.path for r in sent.requests[-2:]] == ["/v1/secrets/update_draft", CHECKIN_PATH]
    assert checkout(holder, "acme/fw02") == "a new password"
    assert checkins.release("acme/fw02", CHECKIN).released == 1
    assert served.admin.audit.verify().ok


def test_a_new_value_committed_on_a_stale_draft_is_409_and_nothing_is_written(keyed: Keyed) -> None:
    served = keyed.served
    holder, checkins, sent = holders(served, served.alice)
    checkout(holder, "acme/fw01")
    checkins.release("acme/fw01", CHECKIN, new_value="fw01 second")
    stale = release_body(sent, CHECKIN_PATH, "checkouts.checkin")  # its draft was of the version before
    checkout(holder, "acme/fw01")
    before = database_state(served.db_url)
    response = signed_post(served, CHECKIN_PATH, stale, served.alice)
    assert response.status_code == 409, response.text
    assert (response.json()["error"], response.json()["code"]) == ("ConcurrentChange", "stale-draft")
    assert database_state(served.db_url) == before  # its nonce too: rolled back with the unit
    assert checkins.release("acme/fw01", CHECKIN).released == 1
    assert checkout(holder, "acme/fw01") == "fw01 second"
    checkins.release("acme/fw01", CHECKIN)


def test_a_crafted_new_value_release_is_400_and_nothing_is_written(keyed: Keyed) -> None:
    served = keyed.served
    holder, checkins, sent = holders(served, served.alice)
    checkout(holder, "excl/sw04")
    checkins.release("excl/sw04", CHECKIN)
    checkout(holder, "excl/sw04")
    body = release_body(sent, CHECKIN_PATH, "checkouts.checkin", new_value=True)
    before = database_state(served.db_url)
    response = signed_post(served, CHECKIN_PATH, body, served.alice)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == InvalidInput.__name__
    assert database_state(served.db_url) == before  # its nonce too: rolled back with the unit


def test_a_release_naming_another_caller_is_403_and_nothing_is_written(keyed: Keyed) -> None:
    served = keyed.served
    holder, checkins, sent = holders(served, served.alice)
    checkout(holder, "excl/sw05")
    checkins.release("excl/sw05", CHECKIN)
    bob = served.bob.keyholder.me()
    body = release_body(sent, CHECKIN_PATH, "checkouts.checkin", caller=Caller(bob.engineer_id, bob.key_generation))
    before = database_state(served.db_url)
    response = signed_post(served, CHECKIN_PATH, body, served.alice)
    assert response.status_code == 403, response.text
    assert database_state(served.db_url) == before


def test_a_checkin_body_sent_to_the_break_route_is_refused(keyed: Keyed) -> None:
    served = keyed.served
    holder, checkins, sent = holders(served, served.alice)
    checkout(holder, "acme/fw02")
    checkins.release("acme/fw02", CHECKIN)
    opened = codec.open_envelope(next(r for r in reversed(sent.requests) if r.url.path == CHECKIN_PATH).content,
                                 "checkouts.checkin")  # fmt: skip
    body = codec.envelope("checkouts.break_checkout", opened.body, os.urandom(codec.REQUEST_ID_BYTES))
    before = database_state(served.db_url)
    response = signed_post(served, BREAK_PATH, body, served.alice)
    assert response.status_code == 400, response.text
    assert database_state(served.db_url) == before


def test_an_embedded_checkin_on_a_server_keyed_vault_is_refused(keyed: Keyed) -> None:
    served = keyed.served
    holder, checkins, _ = holders(served, served.alice)
    checkout(holder, "acme/fw01")
    before = database_state(served.db_url)
    with pytest.raises(ConfigurationError, match="team server"):
        served.alice.checkouts.checkin("acme/fw01")
    with pytest.raises(ConfigurationError, match="team server"):
        served.admin.checkouts.break_checkout("acme/fw01")
    assert database_state(served.db_url) == before  # no format-2 event after the format-3 ones
    assert checkins.release("acme/fw01", CHECKIN).released == 1  # the server's way still works
    assert served.admin.audit.verify().ok


def last_sent(sent: Sent, path: str) -> bytes:
    return next(r for r in reversed(sent.requests) if r.url.path == path).content


def _released_by(served: Served, kind: str) -> tuple[Any, str, Any, Sent, Any]:
    """A release of ``kind`` done through the server: (the signer, its route, its answer, what was
    sent, the releasing keyholder). Holds earlier tests left on the secret are broken first."""
    _, admin, _ = holders(served, served.admin)
    for ref in ("excl/sw01", "excl/sw03"):
        with contextlib.suppress(NotFound):
            admin.release(ref, BREAK)
    if kind == "break":
        bob, _, _ = holders(served, served.bob)
        checkout(bob, "excl/sw01")
        _, admin, sent = holders(served, served.admin)
        return served.admin, BREAK_PATH, admin.release("excl/sw01", BREAK), sent, admin
    holder, alice, sent = holders(served, served.alice)
    checkout(holder, "excl/sw03")
    new_value = "sw03 after a retry" if kind == "checkin with a new value" else None
    return served.alice, CHECKIN_PATH, alice.release("excl/sw03", CHECKIN, new_value), sent, alice


@pytest.mark.parametrize("kind", ["checkin", "checkin with a new value", "break"])
def test_a_release_sent_again_under_a_new_signature_is_answered_from_its_events(keyed: Keyed, kind: str) -> None:
    """server.md §3 "Retries are not replays": the same envelope (same request id) under a new
    signature and nonce is answered from the committed events, the first copy's answer exactly;
    nothing is appended, released or stored again (its nonce aside); the chain verifies."""
    served = keyed.served
    vault, path, answer, sent, _ = _released_by(served, kind)
    operation = "checkouts.break_checkout" if path == BREAK_PATH else "checkouts.checkin"
    body = last_sent(sent, path)
    before = without_nonces(database_state(served.db_url))
    response = signed_post(served, path, body, vault)
    assert response.status_code == 200, response.text
    again = codec.open_envelope(response.content, f"{operation}.response")
    assert again.request_id == codec.open_envelope(body, operation).request_id
    assert again.body == answer
    assert without_nonces(database_state(served.db_url)) == before
    assert served.admin.audit.verify().ok


@pytest.mark.parametrize("kind", ["checkin", "break"])
def test_a_release_request_id_sent_again_with_another_body_is_409_and_nothing_is_written(
    keyed: Keyed, kind: str
) -> None:
    """The same request id with another body (its sealed details changed) is 409
    ``request-id-reused``, even with a hold it could release: nothing written, not even the nonce."""
    served = keyed.served
    vault, path, _, sent, releaser = _released_by(served, kind)
    operation = "checkouts.break_checkout" if path == BREAK_PATH else "checkouts.checkin"
    opened = codec.open_envelope(last_sent(sent, path), operation)
    ref = "excl/sw01" if kind == "break" else "excl/sw03"
    checkout(holders(served, served.bob if kind == "break" else served.alice)[0], ref)  # held again
    changed = dataclasses.replace(opened.body, details_blob=bytes(len(opened.body.details_blob)))
    body = codec.envelope(operation, changed, opened.request_id)
    before = database_state(served.db_url)
    response = signed_post(served, path, body, vault)
    assert response.status_code == 409, response.text
    assert (response.json()["error"], response.json()["code"]) == ("AlreadyExists", "request-id-reused")
    assert database_state(served.db_url) == before
    assert releaser.release(ref, BREAK if kind == "break" else CHECKIN).released == 1  # a new request still can


def rotate_server_key_rows(keyed: Keyed, newer: ServerSigningKey) -> None:
    """The rows a server-key rotation leaves (docs/server.md §8 step 8, not built yet): the newer
    key certified by the organisation key and active, the older one retired. Written directly:
    on a server-keyed vault the in-process ``certify_server_key`` appends no (format-2) event."""
    admin = keyed.served.admin
    with keyed.store.read() as s:
        org, vault_id = admin.keyholder.root_bundle(s).org, admin.core.vid(s)
    at = int(dt.datetime.now(dt.UTC).timestamp())
    certificate = serverkey.certify(org, vault_id, newer.version, newer.public, at)
    row = ServerKeyRow(newer.version, newer.public, at, certificate)
    with keyed.store.transaction() as s:
        s.execute(update(m.ServerKey).where(m.ServerKey.version == 1).values(state="retired"))
        s.add(m.ServerKey(**row._asdict()))


@contextlib.contextmanager
def server_signing_with(keyed: Keyed, test_ca: CertificateFiles, key: ServerSigningKey) -> Iterator[Served]:
    """A second server on the module's database, signing with ``key``."""
    served, store, sock = keyed.served, Store(keyed.served.db_url), loopback_socket()
    port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    app = build_app(store, public_url=url, nonce_store=DbNonceStore(store), server_key=key)
    options = ServeOptions(
        served.db_url, bind=f"127.0.0.1:{port}", tls_cert=str(test_ca.cert_file), tls_key=str(test_ca.key_file)
    )
    try:
        with running(app, options, sock):
            yield dataclasses.replace(served, url=url, port=port)
    finally:
        store.close()


def test_a_hold_signed_by_a_server_key_retired_since_still_blocks(keyed: Keyed, test_ca: CertificateFiles) -> None:
    """A server-key rotation retires the key that signed an open hold: the hold still blocks
    until its end (a revoked key's does not). Last in the module: it puts key 1 back after."""
    served = keyed.served
    bob, bob_in, _ = holders(served, served.bob)
    checkout(bob, "excl/sw02")  # exclusive: bob holds it, under server key 1
    newer = ServerSigningKey.generate(2)
    rotate_server_key_rows(keyed, newer)
    try:
        with server_signing_with(keyed, test_ca, newer) as rotated:
            alice, _ = keyholder(served, served.alice, url=rotated.url)
            before = without_nonces(database_state(served.db_url))
            with pytest.raises(CheckoutConflict, match="bob"):
                checkout(alice, "excl/sw02")
            assert without_nonces(database_state(served.db_url)) == before
            with keyed.store.transaction() as s:  # a revoked key vouches for nothing: the hold blocks no more
                s.execute(update(m.ServerKey).where(m.ServerKey.version == 1).values(state="revoked"))
            assert checkout(alice, "excl/sw02") == "pw of excl/sw02"
            last = events(served)[-1]
            assert (last.action, last.server_key_version) == ("checkout", 2)
    finally:
        with keyed.store.transaction() as s:
            s.execute(delete(m.ServerKey).where(m.ServerKey.version == 2))
            s.execute(update(m.ServerKey).where(m.ServerKey.version == 1).values(state="active"))
    bob_in.release("excl/sw02", CHECKIN)
