"""The checkout over HTTPS, end to end (issue 14 step 4, "the checkout noun first").

One server per engine over a team whose vault has gone to the team server: acme (default
policy: a reason, not exclusive) and excl (exclusive) with their secrets, alice granted
both, bob granted excl, carol granted nothing; then the admin certifies the server key, and
the server runs with it (``--server-key``). An engineer's ``CheckoutKeyholder`` checks out
through ``HttpsTransport``: the server appends a format-3 event in the checkout's unit,
commits, answers; the keyholder verifies and decrypts. Raw requests are signed as the
insider would sign them (``server_harness.signed_post``); each refusal asserts its status and
that nothing was written (every row count and the audit head).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from server_harness import (
    Keyed,
    Sent,
    Served,
    database_state,
    events,
    keyholder,
    keyid_of,
    loopback_socket,
    running,
    signed_headers,
    signed_post,
    without_nonces,
)
from sqlalchemy import delete, event, exc, func, insert, select, update

from vault import Vault
from vault.authority.checkout_context import ContextRequest
from vault.authority.requests import AnswerRefusedRequest, Caller
from vault.errors import (
    AccessDenied,
    AuditUnavailable,
    CheckoutConflict,
    ConfigurationError,
    DecryptionFailed,
    UntrustedRecord,
    VaultError,
)
from vault.keyholder.checkouts import CheckoutKeyholder
from vault.server.app import build_app
from vault.server.running import ServeOptions
from vault.storage import models as m
from vault.storage.engine import Store
from vault.transport.https import HttpsTransport
from vault.transport.https_checkouts import HttpsCheckoutTransport
from vault.wire import codec
from vault.wire.eventrequest import request_problem
from vault.wire.httpsig import MemoryNonceStore

CHECKOUT, REVEAL = "/v1/checkouts/checkout", "/v1/checkouts/reveal"
REASON = "T-1234 reset VPN"


def checkout(holder: CheckoutKeyholder, ref: str, *, hold: bool = True, reason: str | None = REASON) -> str:
    return holder.checkout(ref, reason=reason, field="password", version=None, hold=hold, hold_for=None).value




def event_count(served: Served) -> int:
    return len(events(served))


def checkout_body(served: Served, sent: Sent, who: Any) -> bytes:
    """The last checkout body ``sent`` carried, now naming ``who`` as its caller, with a new request id."""
    request = next(r for r in reversed(sent.requests) if r.url.path == CHECKOUT)
    opened = codec.open_envelope(request.content, "checkouts.checkout")
    me = who.keyholder.me()
    body = dataclasses.replace(opened.body, caller=Caller(me.engineer_id, me.key_generation))
    return codec.envelope("checkouts.checkout", body, os.urandom(codec.REQUEST_ID_BYTES))


# -- the checkout and the reveal, end to end ------------------------------------------------------------


def test_checkout_and_reveal_over_https_return_the_value_after_a_format3_event(keyed: Keyed) -> None:
    served = keyed.served
    holder, sent = keyholder(served, served.alice)
    before = event_count(served)
    assert checkout(holder, "acme/fw01") == "pw of acme/fw01"
    assert checkout(holder, "acme/fw02", hold=False) == "pw of acme/fw02"
    new = events(served)[before:]
    assert [e.action for e in new] == ["checkout", "reveal"]
    me = served.alice.keyholder.me()
    for e, request in zip(new, [r for r in sent.requests if r.url.path in (CHECKOUT, REVEAL)], strict=True):
        assert (e.engineer_id, e.server_key_version) == (me.engineer_id, 1)
        assert e.request_body == request.content  # the envelope the engineer signed, kept
        public = served.alice.keyholder.my_signing_key().public
        problem = request_problem(
            e.engineer_id, e.key_generation, e.action, e.client_id, e.at_us, e.request_id,
            e.request_digest, e.request_sig, e.request_body, public,
        )  # fmt: skip
        assert problem is None
    assert json.loads(new[0].details_json)["exclusive"] is False
    assert set(json.loads(new[1].details_json)) == {"version"}
    assert served.admin.audit.verify().ok
    shown = {entry.seq: entry for entry in served.admin.audit.log(limit=10)}
    for e in new:  # the details the keyholder sealed (bound to the request id) open for the admin
        assert shown[e.seq].details is not None and shown[e.seq].details["reason"] == REASON


def test_the_details_are_sealed_and_name_no_reason_in_clear(keyed: Keyed) -> None:
    served = keyed.served
    holder, _ = keyholder(served, served.alice)
    before = event_count(served)
    checkout(holder, "acme/fw01", hold=False)
    e = events(served)[before]
    assert e.details_blob is not None and REASON.encode() not in e.details_blob
    assert e.details_json is not None and REASON not in e.details_json and e.request_body is not None
    assert REASON.encode() not in e.request_body


# -- refusals: nothing written ------------------------------------------------------------------------


def test_an_engineer_without_a_grant_gets_404_and_nothing_is_written(keyed: Keyed) -> None:
    served = keyed.served
    holder, sent = keyholder(served, served.alice)
    checkout(holder, "acme/fw01")
    body = checkout_body(served, sent, keyed.carol)
    before = database_state(served.db_url)
    response = signed_post(served, CHECKOUT, body, keyed.carol)
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "NotFound"
    assert database_state(served.db_url) == before


def test_a_grant_the_dba_planted_is_refused_by_the_server_and_nothing_is_written(keyed: Keyed) -> None:
    """The DBA copies alice's acme grant for carol: its admin signature covers alice, so the
    server's check (``ServerChecks.first_valid_grant``) refuses it before anything is read or written."""
    served = keyed.served
    holder, sent = keyholder(served, served.alice)
    checkout(holder, "acme/fw01")
    body = checkout_body(served, sent, keyed.carol)
    me, carol = served.alice.keyholder.me(), keyed.carol.keyholder.me()
    store = Store(served.db_url)
    try:
        with store.transaction() as s:
            grant = s.scalars(select(m.Grant).where(m.Grant.engineer_id == me.engineer_id)).first()
            columns = {c.name: getattr(grant, c.name) for c in m.Grant.__table__.columns if c.name != "id"}
            planted = s.execute(
                insert(m.Grant).values(columns | {"engineer_id": carol.engineer_id})
            ).inserted_primary_key
        before = database_state(served.db_url)
        response = signed_post(served, CHECKOUT, body, keyed.carol)
        assert response.status_code == 500, response.text
        assert response.json()["error"] == "UntrustedRecord"
        assert database_state(served.db_url) == before
    finally:
        with store.transaction() as s:
            s.execute(delete(m.Grant).where(m.Grant.id == planted[0]))
        store.close()


def test_the_context_route_answers_the_clients_rows_and_writes_nothing(keyed: Keyed) -> None:
    served = keyed.served
    holder, _ = keyholder(served, served.alice)
    before_events = event_count(served)
    checkout(holder, "acme/fw02", hold=False)
    client_id = events(served)[before_events].client_id
    me = served.alice.keyholder.me()
    https = HttpsTransport(served.url, served.alice.keyholder, ca_file=str(served.ca.ca_file))
    transport = HttpsCheckoutTransport(https)
    try:
        state = without_nonces(database_state(served.db_url))
        answer = transport.context(
            ContextRequest(Caller(me.engineer_id, me.key_generation), client_id, None, (), me.org_signing_public)
        )
        assert (answer.client.id, answer.me.id) == (client_id, me.engineer_id)
        assert answer.grant is not None and answer.grant.engineer_id == me.engineer_id
        assert answer.sealed_keys  # the client key this request did not say it holds, sealed to alice
        bob = served.bob.keyholder.me()
        with pytest.raises(AccessDenied):  # alice's signature, bob named as the caller
            transport.context(
                ContextRequest(Caller(bob.engineer_id, bob.key_generation), client_id, None, (), me.org_signing_public)
            )
        assert without_nonces(database_state(served.db_url)) == state  # a read: its nonce only
    finally:
        https.close()


def test_another_engineers_caller_in_a_body_signed_by_alice_is_403(keyed: Keyed) -> None:
    served = keyed.served
    holder, sent = keyholder(served, served.alice)
    checkout(holder, "excl/sw05")
    body = checkout_body(served, sent, served.bob)
    before = database_state(served.db_url)
    response = signed_post(served, CHECKOUT, body, served.alice)
    assert response.status_code == 403, response.text
    assert response.json()["error"] == AccessDenied.__name__
    assert database_state(served.db_url) == before


def failures_of(keyed: Keyed, vault: Vault) -> int:
    """The failed authentications counted for ``vault``'s engineer (every window)."""
    me = vault.keyholder.me().engineer_id
    with keyed.store.read() as s:
        return int(
            s.scalar(select(func.coalesce(func.sum(m.AuthFailure.count), 0)).where(m.AuthFailure.engineer_id == me))
        )


def test_a_replayed_checkout_is_401_and_makes_one_event(keyed: Keyed) -> None:
    served = keyed.served
    holder, sent = keyholder(served, served.alice)
    before = event_count(served)
    checkout(holder, "acme/fw02")
    assert event_count(served) == before + 1
    request = next(r for r in reversed(sent.requests) if r.url.path == CHECKOUT)
    state, failed = database_state(served.db_url), failures_of(keyed, served.alice)
    with served.client() as client:
        response = client.post(CHECKOUT, content=request.content, headers=dict(request.headers))
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "replayed"  # the nonce the checkout's unit kept with its event
    after = database_state(served.db_url)
    after.pop("auth_failures"), state.pop("auth_failures")
    assert after == state  # no event, no checkout row: only the failed authentication is counted
    assert failures_of(keyed, served.alice) == failed + 1  # a replay is a failed authentication
    assert event_count(served) == before + 1


def test_a_refused_checkout_keeps_no_nonce_and_a_kept_one_commits_with_its_event(keyed: Keyed) -> None:
    """The nonce goes into the checkout's own unit: none is kept for a refusal (409 here), one
    with a checkout's event. (A ``checkouts.context`` read the keyholder makes on the way
    writes nothing else, so its nonce is stored in a short transaction: counted apart.)"""
    served = keyed.served
    bob, _ = keyholder(served, served.bob)
    alice, sent = keyholder(served, served.alice)
    checkout(bob, "excl/sw03")  # exclusive
    nonces = nonce_count(served)
    with pytest.raises(CheckoutConflict):
        checkout(alice, "excl/sw03")
    assert nonce_count(served) == nonces + contexts(sent)
    nonces, events_before = nonce_count(served), event_count(served)
    sent.requests.clear()
    checkout(alice, "acme/fw01", hold=False)
    assert (nonce_count(served), event_count(served)) == (nonces + 1 + contexts(sent), events_before + 1)


def nonce_count(served: Served) -> int:
    count = database_state(served.db_url)["request_nonces"]
    assert isinstance(count, int)
    return count


def contexts(sent: Sent) -> int:
    return sum(1 for r in sent.requests if r.url.path == "/v1/checkouts/context")


def test_a_changed_body_is_401(keyed: Keyed) -> None:
    served = keyed.served
    holder, sent = keyholder(served, served.alice)
    checkout(holder, "acme/fw02", hold=False)
    request = next(r for r in reversed(sent.requests) if r.url.path == REVEAL)
    changed = request.content.replace(b'"has_reason":true', b'"has_reason":false')
    assert changed != request.content
    headers = signed_headers(
        served, REVEAL, request.content, key=served.alice.keyholder.my_signing_key(), keyid=keyid_of(served.alice)
    )
    state, failures = database_state(served.db_url), failures_of(keyed, served.alice)
    with served.client() as client:
        response = client.post(REVEAL, content=changed, headers=headers)
    assert response.status_code == 401, response.text
    after = database_state(served.db_url)
    after.pop("auth_failures"), state.pop("auth_failures")  # a row per window: new, or counted up
    assert after == state  # nothing else written
    assert failures_of(keyed, served.alice) == failures + 1  # the failed authentication is counted


def test_a_reveal_body_sent_to_the_checkout_route_is_refused(keyed: Keyed) -> None:
    served = keyed.served
    holder, sent = keyholder(served, served.alice)
    checkout(holder, "acme/fw02", hold=False)
    request = next(r for r in reversed(sent.requests) if r.url.path == REVEAL)
    body = codec.open_envelope(request.content, "checkouts.reveal").body
    envelope = codec.envelope("checkouts.checkout", body, os.urandom(codec.REQUEST_ID_BYTES))
    state = database_state(served.db_url)
    response = signed_post(served, CHECKOUT, envelope, served.alice)
    assert response.status_code == 400, response.text
    assert database_state(served.db_url) == state


def test_the_server_without_a_key_answers_503_and_writes_nothing(keyed: Keyed, test_ca) -> None:  # type: ignore[no-untyped-def]
    served = keyed.served
    holder, sent = keyholder(served, served.alice)
    checkout(holder, "acme/fw01", hold=False)
    request = next(r for r in reversed(sent.requests) if r.url.path == REVEAL)
    store = Store(served.db_url)
    sock = loopback_socket()
    port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    app = build_app(store, public_url=url, nonce_store=MemoryNonceStore())
    options = ServeOptions(
        served.db_url, bind=f"127.0.0.1:{port}", tls_cert=str(test_ca.cert_file), tls_key=str(test_ca.key_file)
    )
    try:
        with running(app, options, sock):
            keyless = dataclasses.replace(served, url=url, port=port)
            body = codec.envelope(
                "checkouts.reveal", codec.open_envelope(request.content, "checkouts.reveal").body, os.urandom(16)
            )
            state = database_state(served.db_url)
            response = signed_post(keyless, REVEAL, body, served.alice)
            assert response.status_code == 503, response.text
            problem = response.json()
            assert (problem["error"], problem["code"]) == (ConfigurationError.__name__, "no-server-key")
            assert database_state(served.db_url) == state
            with keyless.client() as client:
                assert "server_key" not in client.get("/v1/identity").json()
    finally:
        store.close()


def test_identity_names_the_server_key(keyed: Keyed) -> None:
    with keyed.served.client() as client:
        found = client.get("/v1/identity").json()["server_key"]
    assert {k: found[k] for k in ("version", "public")} == {
        "version": 1,
        "public": base64.urlsafe_b64encode(keyed.key.public).rstrip(b"=").decode(),
    }
    with keyed.store.read() as s:  # and the organisation key's certificate of it, as certified
        row = s.get(m.ServerKey, 1)
        assert row is not None
        assert base64.urlsafe_b64decode(found["certificate"] + "==") == row.certificate
        assert found["certified_at"] == row.certified_at


def test_a_checkout_conflict_is_409_and_appends_no_event(keyed: Keyed) -> None:
    served = keyed.served
    bob, _ = keyholder(served, served.bob)
    alice, sent = keyholder(served, served.alice)
    assert checkout(bob, "excl/sw01") == "pw of excl/sw01"
    before = database_state(served.db_url)
    with pytest.raises(CheckoutConflict, match="bob"):
        checkout(alice, "excl/sw01")
    assert without_nonces(database_state(served.db_url)) == without_nonces(before)
    assert nonce_count(served) == before["request_nonces"] + contexts(sent)  # the refused checkout's: none


def test_an_in_process_checkout_on_a_server_keyed_vault_is_refused(keyed: Keyed) -> None:
    served = keyed.served
    before = database_state(served.db_url)
    with pytest.raises(ConfigurationError, match="team server"):
        served.alice.checkouts.checkout("acme/fw01", reason=REASON)
    assert database_state(served.db_url) == before


@contextmanager
def watched_server(keyed: Keyed, test_ca: Any, store: Store) -> Iterator[str]:
    """The server's app over ``store`` (one the test watches: its listeners see the server's
    statements and commits) on loopback TLS, with the team's server key; its URL."""
    sock = loopback_socket()
    port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    app = build_app(store, public_url=url, nonce_store=MemoryNonceStore(), server_key=keyed.key)
    options = ServeOptions(
        keyed.served.db_url, bind=f"127.0.0.1:{port}", tls_cert=str(test_ca.cert_file), tls_key=str(test_ca.key_file)
    )
    with running(app, options, sock):
        yield url


def test_the_answer_is_sent_only_after_the_commit(keyed: Keyed, test_ca) -> None:  # type: ignore[no-untyped-def]
    """A commit that fails (a fault at the commit) answers an error, and the client gets no value."""
    served = keyed.served
    store = Store(served.db_url)
    failing = {"on": False}

    def commit(conn: Any) -> None:
        if failing["on"]:
            raise exc.OperationalError("COMMIT", {}, Exception("disk I/O error (fault seam)"))

    event.listen(store.engine, "commit", commit)
    try:
        with watched_server(keyed, test_ca, store) as url:
            holder, _ = keyholder(served, served.alice, url)
            holder.keys.session()  # the session is loaded before the fault is armed
            count = event_count(served)
            failing["on"] = True
            with pytest.raises((AuditUnavailable, VaultError)) as raised:
                checkout(holder, "acme/fw01", hold=False)
            failing["on"] = False
            assert "pw of" not in str(raised.value)
            assert event_count(served) == count
    finally:
        store.close()


def test_on_postgresql_the_head_lock_is_held_for_two_round_trips_before_the_commit(keyed: Keyed, test_ca) -> None:  # type: ignore[no-untyped-def]
    """Every writer queues on the audit head's lock until the commit (W16): the secret's last use,
    the lock and the after-lock read travel in one round trip, then the event, the head's move and
    the hold in one more (``prepared.pipelined``); on SQLite (one writer) one by one."""
    served = keyed.served
    store = Store(served.db_url)
    sent: list[tuple[str, bool]] = []  # (statement's first words, sent in pipeline mode)

    def keep(conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        pgconn = getattr(conn.connection.driver_connection, "pgconn", None)
        sent.append((" ".join(sql.split()[:3]).upper(), pgconn is not None and bool(pgconn.pipeline_status)))

    try:
        with watched_server(keyed, test_ca, store) as url:
            holder, _ = keyholder(served, served.alice, url)
            checkout(holder, "acme/fw01")  # the context and the connection first
            event.listen(store.engine, "before_cursor_execute", keep)
            assert checkout(holder, "acme/fw01") == "pw of acme/fw01"
    finally:
        store.close()
    pipelining = not served.db_url.startswith("sqlite")
    locked = next(i for i, (sql, _) in enumerate(sent) if sql.startswith("SELECT AUDIT_HEAD.SEQ,"))
    assert sent[locked + 2 : locked + 5] == [
        ("INSERT INTO AUDIT_EVENTS", pipelining),
        ("UPDATE AUDIT_HEAD SET", pipelining),
        ("INSERT INTO CHECKOUTS", pipelining),
    ]
    assert sent[locked - 1 : locked + 2] == [  # the secret's last use, sent with the lock
        ("UPDATE SECRETS SET", pipelining),
        ("SELECT AUDIT_HEAD.SEQ, AUDIT_HEAD.HASH", pipelining),
        ("SELECT (SELECT AUDIT_EVENTS.AT_US", pipelining),
    ]
    assert len(sent) == locked + 5


# -- the insider: planted and edited holds block nobody ------------------------------------------------


def test_a_planted_hold_pointing_at_another_secrets_format3_event_blocks_nobody(keyed: Keyed) -> None:
    served = keyed.served
    bob, _ = keyholder(served, served.bob)
    alice, _ = keyholder(served, served.alice)
    checkout(bob, "excl/sw02", hold=False)
    target = events(served)[-1].secret_id  # excl/sw02
    checkout(bob, "excl/sw03")  # a genuine exclusive hold of another secret, by bob
    genuine = events(served)[-1]
    store = Store(served.db_url)
    try:
        with store.transaction() as s:  # the DBA: a hold of sw02 by bob, pointing at bob's event for sw03
            now = dt.datetime.now(dt.UTC)
            s.execute(
                insert(m.Checkout).values(
                    secret_id=target, client_id=genuine.client_id, engineer_id=genuine.engineer_id, exclusive=True,
                    event_seq=genuine.seq, started_at=now, expires_at=now + dt.timedelta(hours=1),
                )
            )  # fmt: skip
            me = served.alice.keyholder.me()
            s.execute(  # and one by bob pointing at alice's own event (another engineer's)
                insert(m.Checkout).values(
                    secret_id=target, client_id=genuine.client_id, engineer_id=genuine.engineer_id, exclusive=True,
                    event_seq=next(e.seq for e in reversed(events(served)) if e.engineer_id == me.engineer_id),
                    started_at=now, expires_at=now + dt.timedelta(hours=1),
                )
            )  # fmt: skip
    finally:
        store.close()
    assert checkout(alice, "excl/sw02") == "pw of excl/sw02"


def test_an_edited_details_json_blocks_nobody(keyed: Keyed) -> None:
    served = keyed.served
    bob, _ = keyholder(served, served.bob)
    alice, _ = keyholder(served, served.alice)
    checkout(bob, "excl/sw04")  # exclusive: alice would be refused
    genuine = events(served)[-1]
    with pytest.raises(CheckoutConflict):
        checkout(alice, "excl/sw04")
    store = Store(served.db_url)
    try:
        with store.transaction() as s:  # the DBA moves the hold's end, in the row and in the event's facts
            row = s.scalars(select(m.Checkout).where(m.Checkout.event_seq == genuine.seq)).one()
            until = json.loads(genuine.details_json)["until"]
            row.expires_at = row.expires_at + dt.timedelta(days=1)
            facts = genuine.details_json.replace(str(until), str(until + 86400))
            assert facts != genuine.details_json and json.loads(facts)["until"] == until + 86400
            s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == genuine.seq).values(details_json=facts))
    finally:
        store.close()
    assert checkout(alice, "excl/sw04") == "pw of excl/sw04"


# -- an answer the keyholder refuses, after its event was committed -----------------------------------


class _Tampering:
    """The keyholder's HTTPS transport with its answers changed on the way (a proxy or a
    compromised server): ``tamper`` makes the answer the keyholder is given."""

    def __init__(self, real: HttpsCheckoutTransport, tamper: Any) -> None:
        self.real, self.tamper = real, tamper

    def call(self, request: Any, seal: Any) -> Any:
        answer = self.real.call(request, seal)
        changed = self.tamper(answer)
        self.real._sent[id(changed)] = (self.real._sent.pop(id(answer))[0], changed)  # as if received
        return changed

    def context(self, request: Any) -> Any:
        return self.real.context(request)

    def answer_refused(self, request: Any, response: Any, reason: str) -> None:
        self.real.answer_refused(request, response, reason)


def _changed_password_blob(r: Any) -> Any:
    blob = r.version.password_blob
    return dataclasses.replace(r, version=r.version._replace(password_blob=blob[:-1] + bytes([blob[-1] ^ 1])))


@pytest.mark.parametrize(
    ("tamper", "raised", "reason"),
    [
        (_changed_password_blob, DecryptionFailed, "undecryptable"),
        (lambda r: dataclasses.replace(r, grant=r.grant._replace(signature=bytes(64))), UntrustedRecord, "untrusted"),
    ],
    ids=["a ciphertext changed", "a grant's signature changed"],
)  # fmt: skip
def test_an_answer_refused_after_its_event_is_on_record_too(
    keyed: Keyed, tamper: Any, raised: type, reason: str
) -> None:
    served = keyed.served
    holder, _ = keyholder(served, served.alice)
    holder.transport = _Tampering(holder.transport, tamper)  # type: ignore[assignment]
    before = event_count(served)
    anchor = served.admin.audit.head()  # earlier tests of the module tamper with events before this
    with pytest.raises(raised):
        checkout(holder, "acme/fw01")
    new = events(served)[before:]
    assert [e.action for e in new] == ["checkout", "answer-refused"]
    assert json.loads(new[1].details_json) == {"refused_seq": new[0].seq, "reason": reason}
    assert new[1].engineer_id == new[0].engineer_id and new[1].client_id == new[0].client_id
    assert served.admin.audit.verify(since=anchor).ok  # both events verify, the refusal's kept request too


def test_a_refusal_naming_another_engineers_answer_is_404_and_writes_nothing(keyed: Keyed) -> None:
    """bob says alice's answer was refused; alice names her own event under another request id,
    or an event that does not exist: 404 each, no event."""
    served = keyed.served
    holder, _ = keyholder(served, served.alice)
    checkout(holder, "acme/fw02", hold=False)
    alices = events(served)[-1]
    assert alices.action == "reveal"
    cases = (
        (served.bob, alices.seq, alices.request_id),
        (served.alice, alices.seq, os.urandom(16)),
        (served.alice, 10**9, alices.request_id),
    )
    for who, seq, request_id in cases:
        me = who.keyholder.me()
        refusal = AnswerRefusedRequest(
            Caller(me.engineer_id, me.key_generation), alices.client_id, seq, request_id, "untrusted"
        )
        body = codec.envelope("checkouts.answer_refused", refusal, os.urandom(codec.REQUEST_ID_BYTES))
        state = without_nonces(database_state(served.db_url))
        response = signed_post(served, "/v1/checkouts/answer_refused", body, who)
        assert response.status_code == 404, response.text
        assert without_nonces(database_state(served.db_url)) == state
