"""A ``credvault serve`` process SIGKILLed in the middle of a checkout (docs/server.md §7 "SIGKILL").

The server subprocess is armed with the test-only fault seam (``vault/server/faults.py``:
``CREDVAULT_TEST_FAULTS=1``, ``CREDVAULT_FAULT=<point>``) and kills itself at one point of
alice's checkout: before the unit commits, after it committed (before the answer's first
byte), or half-way through the answer. Alice's keyholder gets no answer in every case. Then:

* no answer without its committed event: before the commit nothing at all was written (row
  counts, the audit head, the request's nonce); after it, the one event and the hold are there;
* no acknowledged write lost: a server started again on the same port (what alice signed for)
  keeps every committed row, and ``audit verify`` accepts the chain;
* a retry gives one event, not two. Re-sending the *same signed request* (same nonce) is a
  replay: refused (401 ``replayed``) if the first copy committed, answered once if it did not.
  A retry as the design defines it (server.md §3 "Retries are not replays": the same envelope
  and ``request_id`` under a new signature and nonce) is answered from the event already
  written, and the same ``request_id`` with another body is refused (409 ``request-id-reused``).

A check-in killed after its commit is answered the same way from its ``checkin`` event.

The after-commit cases run by default (SQLite and PostgreSQL); the two others are ``slow``.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from serve_process import ServedVault, ServeProcess
from server_harness import JSON, database_state, without_nonces
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from vault.authority.requests import CHECKIN
from vault.errors import StoreUnavailable
from vault.service.checkouts import https_checkin_keyholder
from vault.storage import models as m
from vault.transport.https import RETRIES
from vault.wire import codec, httpsig

CHECKOUT, CHECKIN_PATH = "/v1/checkouts/checkout", "/v1/checkouts/checkin"
REASON = "T-77 crash test"
SIGNED = ("content-type", "content-digest", "signature-input", "signature")
POINTS = [
    pytest.param("after-commit", id="after_commit"),
    pytest.param("before-commit", id="before_commit", marks=pytest.mark.slow),
    pytest.param("mid-response", id="mid_response", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def vaulted(module_team, test_ca, tmp_path_factory) -> Iterator[tuple[ServedVault, Any, Any]]:  # type: ignore[no-untyped-def]
    admin = module_team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password="pw of acme/fw01")
    alice = module_team.engineer("alice")
    admin.grants.grant("alice", "acme")
    served = ServedVault.certify(admin, module_team.url, tmp_path_factory.mktemp("serve"), test_ca)
    try:
        yield served, alice, admin
    finally:
        served.stop_all()


def killed_checkout(served: ServedVault, alice: Any, point: str) -> tuple[ServeProcess, httpx.Request]:
    """Alice's checkout through a server armed at ``point``: it gets no answer; the request sent."""
    process = served.start(CREDVAULT_TEST_FAULTS="1", CREDVAULT_FAULT=point)
    https = served.transport(process, alice)
    sent: list[httpx.Request] = []
    https.client.event_hooks["request"].append(sent.append)
    try:
        with pytest.raises(StoreUnavailable, match="could not be reached"):
            served.keyholder(https, alice).checkout(
                "acme/fw01", reason=REASON, field="password", version=None, hold=True, hold_for=None
            )
    finally:
        https.close()
    assert process.proc.wait(20) == -signal.SIGKILL  # it died at the fault, not of something else
    copies = [r for r in sent if r.url.path == CHECKOUT]
    # the client sent it again after the lost answer (HttpsTransport.RETRIES): the same envelope
    assert len(copies) == 1 + RETRIES and {r.content for r in copies} == {copies[0].content}
    return process, copies[0]


def request_id_of(request: httpx.Request) -> bytes:
    return codec.open_envelope(request.content, "checkouts.checkout").request_id


def resend(served: ServedVault, process: ServeProcess, request: httpx.Request) -> httpx.Response:
    """The very request sent before (its bytes and signature: the same nonce)."""
    with served.client(process) as client:
        return client.post(CHECKOUT, content=request.content, headers={k: request.headers[k] for k in SIGNED})


def events_of(served: ServedVault, request_id: bytes) -> list[tuple[int, str, int | None, bytes | None]]:
    return [e for e in served.events() if e[3] == request_id]


def nonce_of(request: httpx.Request) -> str:
    return request.headers["signature-input"].split('nonce="')[1].split('"')[0]


def nonce_kept(url: str, nonce: str) -> bool:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(select(m.RequestNonce).where(m.RequestNonce.nonce == nonce)).first() is not None
    finally:
        engine.dispose()


def holds_named(url: str) -> set[int]:
    """The events that checkout rows name."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {int(s) for s in conn.execute(select(m.Checkout.event_seq)).scalars()}
    finally:
        engine.dispose()


# Rows a starting server's pruner may delete (``wire/nonces.Pruner``, at start and every minute): the
# nonces past their retention and the failure counts of past windows, such as the replay counted by
# an earlier test of this module. Found in session 17: "nothing written" compared their row counts
# across a restart and failed when a window of ``authlimits.PERIOD`` ended between the two reads.
PRUNED = ("request_nonces", "auth_failures")
Kept = tuple[dict[str, object], dict[str, frozenset[tuple[Any, ...]]]]


def kept_state(url: str) -> Kept:
    """``database_state`` but for the pruned tables, and the pruned tables' rows."""
    state = database_state(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = {
                "request_nonces": frozenset(tuple(r) for r in conn.execute(select(m.RequestNonce.__table__))),
                "auth_failures": frozenset(tuple(r) for r in conn.execute(select(m.AuthFailure.__table__))),
            }
    finally:
        engine.dispose()
    return {k: v for k, v in state.items() if k not in PRUNED}, rows


def assert_nothing_written(url: str, before: Kept, *, nonces: bool = True) -> None:
    """Every row count and the audit head as ``before``; of the pruned tables no row added or changed
    (a pruner may have deleted some). ``nonces=False``: the request's nonce may have been kept (a read)."""
    counts, rows = kept_state(url)
    assert counts == before[0]
    for table in PRUNED if nonces else ("auth_failures",):
        assert rows[table] <= before[1][table], f"{table}: {sorted(rows[table] - before[1][table])} written"


def failures_added(url: str, before: Kept) -> int:
    """Failed authentications counted in ``auth_failures`` since ``before`` (a window's count that
    grew, or a new window's), whatever the pruner deleted meanwhile."""
    counts = {(engineer, window): count for engineer, window, count in before[1]["auth_failures"]}
    now = kept_state(url)[1]["auth_failures"]
    return sum(int(count) - int(counts.get((engineer, window), 0)) for engineer, window, count in now)


@pytest.mark.parametrize("point", POINTS)
def test_a_server_killed_in_a_checkout_loses_no_committed_event_and_a_resent_request_gives_one(
    vaulted, point: str
) -> None:  # type: ignore[no-untyped-def]
    served, alice, admin = vaulted
    admin_state = database_state(served.url)
    admin_kept = kept_state(served.url)
    process, request = killed_checkout(served, alice, point)
    request_id = request_id_of(request)
    after_kill = database_state(served.url)
    committed = point != "before-commit"
    if committed:  # the event and the hold are durable; only the answer was lost
        ((seq, action, engineer_id, _),) = events_of(served, request_id)
        assert (action, engineer_id) == ("checkout", alice.keyholder.me().engineer_id)
        assert seq in holds_named(served.url)  # the hold row names the committed event
        assert after_kill["audit_events"] == admin_state["audit_events"] + 1
        assert after_kill["checkouts"] == admin_state["checkouts"] + 1
        assert after_kill["audit_head"] != admin_state["audit_head"]
        assert nonce_kept(served.url, nonce_of(request))
    else:  # no event, no hold, no nonce: nothing of the checkout was written
        assert events_of(served, request_id) == []
        assert_nothing_written(served.url, admin_kept)
        assert not nonce_kept(served.url, nonce_of(request))

    failures_before = kept_state(served.url)
    restarted = served.start(port=process.port)  # the same address: what the request was signed for
    try:
        again = resend(served, restarted, request)
        if committed:
            assert again.status_code == 401 and again.json()["code"] == "replayed"
            assert failures_added(served.url, failures_before) == 1  # a replay is a failed authentication
            now = without_nonces(database_state(served.url))
            assert now.pop("auth_failures") >= 1
            assert now == {k: v for k, v in without_nonces(after_kill).items() if k != "auth_failures"}
        else:
            assert again.status_code == 200, again.text
            assert codec.open_envelope(again.content, "checkouts.checkout.response").request_id == request_id
            third = resend(served, restarted, request)
            assert third.status_code == 401 and third.json()["code"] == "replayed"
        assert len(events_of(served, request_id)) == 1  # one event for the request, whatever happened
        seqs = [e[0] for e in served.events()]
        assert seqs == list(range(1, len(seqs) + 1))
        assert admin.audit.verify().ok
    finally:
        restarted.stop()


def signed_anew(served: ServedVault, alice: Any, port: int, body: bytes, path: str = CHECKOUT) -> dict[str, str]:
    """Headers of ``body`` signed again by alice for ``path``: a new signature, a new nonce."""
    me = alice.keyholder.me()
    keyid = f"e:{me.engineer_id}:{me.key_generation}"
    signed = httpsig.sign_request(
        "POST", f"127.0.0.1:{port}", path, JSON, body, alice.keyholder.my_signing_key(), keyid
    )
    return {"Content-Type": JSON} | signed


def test_a_retry_under_a_new_signature_is_answered_from_the_committed_event(vaulted) -> None:  # type: ignore[no-untyped-def]
    """server.md §3 "Retries are not replays": alice got no answer (the server died after the
    commit); she re-sends the same envelope under a new signature and nonce to the server started
    again: the answer is the committed event's (its seq, the version it names), nothing is
    appended, and her keyholder's checks of the answer pass."""
    served, alice, admin = vaulted
    process, request = killed_checkout(served, alice, "after-commit")
    request_id = request_id_of(request)
    ((seq, _, _, _),) = events_of(served, request_id)
    before = kept_state(served.url)
    restarted = served.start(port=process.port)
    try:
        with served.client(restarted) as client:
            retried = client.post(
                CHECKOUT, content=request.content, headers=signed_anew(served, alice, process.port, request.content)
            )
        assert retried.status_code == 200, retried.text
        answer = codec.open_envelope(retried.content, "checkouts.checkout.response")
        assert answer.request_id == request_id and answer.body.seq == seq
        assert answer.body.version.version == 1 and answer.body.expires_us is not None
        assert events_of(served, request_id) == [(seq, "checkout", alice.keyholder.me().engineer_id, request_id)]
        assert_nothing_written(served.url, before, nonces=False)  # no event, no hold, no touch
        assert admin.audit.verify().ok
    finally:
        restarted.stop()


def test_a_request_id_sent_again_with_another_body_is_refused_and_writes_nothing(vaulted) -> None:  # type: ignore[no-untyped-def]
    served, alice, _admin = vaulted
    process, request = killed_checkout(served, alice, "after-commit")
    envelope = codec.open_envelope(request.content, "checkouts.checkout")
    changed = dataclasses.replace(envelope.body, hold_seconds=3600)
    body = codec.envelope("checkouts.checkout", changed, envelope.request_id)
    before = kept_state(served.url)
    restarted = served.start(port=process.port)
    try:
        headers = signed_anew(served, alice, process.port, body)
        with served.client(restarted) as client:
            refused = client.post(CHECKOUT, content=body, headers=headers)
        assert refused.status_code == 409
        assert (refused.json()["error"], refused.json()["code"]) == ("AlreadyExists", "request-id-reused")
        assert_nothing_written(served.url, before)  # not even the nonce: the unit rolled back
        assert not nonce_kept(served.url, nonce_of(httpx.Request("POST", CHECKOUT, headers=headers)))
    finally:
        restarted.stop()


def test_a_server_killed_after_committing_a_checkin_answers_its_retry_from_the_event(vaulted) -> None:  # type: ignore[no-untyped-def]
    """The check-in's noun too: the server dies after committing alice's check-in; her client sends
    it again (to the dead server: no answer); re-sent under a new signature to the server started
    again, it is answered from the committed ``checkin`` (its seq, the hold it released), with
    nothing appended or released again."""
    served, alice, admin = vaulted
    normal = served.start()
    https = served.transport(normal, alice)
    try:
        served.keyholder(https, alice).checkout(
            "acme/fw01", reason=REASON, field="password", version=None, hold=True, hold_for=None
        )
    finally:
        https.close()
        normal.stop()
    process = served.start(CREDVAULT_TEST_FAULTS="1", CREDVAULT_FAULT="after-commit")
    https = served.transport(process, alice)
    sent: list[httpx.Request] = []
    https.client.event_hooks["request"].append(sent.append)
    try:
        with pytest.raises(StoreUnavailable, match="could not be reached"):
            https_checkin_keyholder(served.keyholder(https, alice)).release("acme/fw01", CHECKIN)
    finally:
        https.close()
    assert process.proc.wait(20) == -signal.SIGKILL
    copies = [r for r in sent if r.url.path == CHECKIN_PATH]
    assert len(copies) == 1 + RETRIES and {r.content for r in copies} == {copies[0].content}
    request_id = codec.open_envelope(copies[0].content, "checkouts.checkin").request_id
    ((seq, action, _, _),) = events_of(served, request_id)
    assert action == "checkin"
    before = kept_state(served.url)
    restarted = served.start(port=process.port)
    try:
        headers = signed_anew(served, alice, process.port, copies[0].content, CHECKIN_PATH)
        with served.client(restarted) as client:
            retried = client.post(CHECKIN_PATH, content=copies[0].content, headers=headers)
        assert retried.status_code == 200, retried.text
        answer = codec.open_envelope(retried.content, "checkouts.checkin.response")
        assert answer.request_id == request_id and (answer.body.seq, answer.body.released) == (seq, 1)
        assert events_of(served, request_id) == [(seq, "checkin", alice.keyholder.me().engineer_id, request_id)]
        assert_nothing_written(served.url, before, nonces=False)
        assert admin.audit.verify().ok
    finally:
        restarted.stop()


def test_the_fault_seam_is_armed_only_when_tests_enable_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vault.errors import ConfigurationError
    from vault.server import faults
    from vault.storage.engine import Store

    assert faults.chosen({}) is None
    assert faults.chosen({"CREDVAULT_FAULT": "before-commit"}) is None  # a stray variable alone does nothing
    assert faults.chosen({"CREDVAULT_TEST_FAULTS": "1", "CREDVAULT_FAULT": "mid-response"}) == "mid-response"
    with pytest.raises(ConfigurationError):
        faults.chosen({"CREDVAULT_TEST_FAULTS": "1", "CREDVAULT_FAULT": "sometime"})
    store = Store(f"sqlite:///{tmp_path / 'v.db'}")
    try:
        app = object()
        assert faults.armed(app, store, {"CREDVAULT_FAULT": "after-commit"}) is app  # type: ignore[arg-type]
        assert faults.armed(app, store, {"CREDVAULT_TEST_FAULTS": "1", "CREDVAULT_FAULT": "after-commit"}) is not app  # type: ignore[arg-type]
    finally:
        store.close()


def test_a_stopped_server_does_not_wait_for_an_idle_client(vaulted: tuple[ServedVault, Any, Any]) -> None:
    """SIGTERM with a client's kept-alive TLS connection open and idle: the server exits within its
    graceful-shutdown bound (``running.GRACEFUL_SHUTDOWN``), not when the client lets go (uvicorn's
    default waits for every connection, and an idle client never answers the TLS close)."""
    from vault.server.running import GRACEFUL_SHUTDOWN

    served, alice, _admin = vaulted
    if served.url.startswith("postgresql"):
        pytest.skip("a stop does not depend on the database (SQLite runs it)")
    process = served.start()
    https = served.transport(process, alice)
    try:
        https.whoami()  # the connection is open, kept alive, idle
        started = time.monotonic()
        process.proc.terminate()
        process.proc.wait(GRACEFUL_SHUTDOWN + 10)  # raises TimeoutExpired if it waited for the client
        assert time.monotonic() - started < GRACEFUL_SHUTDOWN + 5
        assert process.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once stopped
    finally:
        https.close()
