"""What several server processes share through the database, and the limits on failed
authentication (docs/server.md §3), through real servers on loopback, on both engines.

The insider: an engineer (or anyone who captured one of their requests) who replays a
request to the *other* server process behind the proxy, or who guesses at signatures or key
ids. Each server here is a separate app with its own ``Store`` (as a separate process has),
sharing only the database: the nonces in ``request_nonces``, the engineer's failures in
``auth_failures``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from server_harness import JSON, Served, database_state, keyid_of, loopback_socket, mid_window, running, signing_key
from sqlalchemy import create_engine, delete, func, select
from sqlalchemy.pool import NullPool

from vault.authority.engineer_requests import WhoamiRequest
from vault.crypto.signing import SigningKey
from vault.server.app import build_app
from vault.server.running import ServeOptions
from vault.storage import models as m
from vault.storage.engine import Store
from vault.wire import codec, httpsig
from vault.wire.authlimits import AddressLimit, AuthenticationLimits, ClientAddresses, EngineerLimit
from vault.wire.nonces import DbNonceStore

WHOAMI = "/v1/engineers/whoami"
PUBLIC = "https://vault.test:8443"  # what both processes are configured with, behind one proxy


@contextlib.contextmanager
def server_process(team, test_ca, pair, *, trusted: tuple[str, ...] = ()) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    """One more server over ``team``'s database, with the shared nonce store and small limits
    (2 failures per engineer, 3 per address), as ``credvault serve`` wires them."""
    store = Store(team.url)
    with store.transaction() as s:  # each test starts with no failure counted (the module shares a database)
        s.execute(delete(m.AuthFailure))
    sock = loopback_socket()
    port = sock.getsockname()[1]
    nonces = DbNonceStore(store)
    limits = AuthenticationLimits(AddressLimit(limit=3), EngineerLimit(store, limit=2), clock=mid_window())
    app = build_app(store, public_url=PUBLIC, nonce_store=nonces, limits=limits, addresses=ClientAddresses(trusted))
    options = ServeOptions(
        team.url, bind=f"127.0.0.1:{port}", tls_cert=str(test_ca.cert_file), tls_key=str(test_ca.key_file)
    )
    try:
        with running(app, options, sock):
            yield Served(f"https://127.0.0.1:{port}", port, test_ca, team.url, nonces, team.admin, *pair)  # type: ignore[arg-type]
    finally:
        store.close()


@pytest.fixture(scope="module")
def pair(module_team):  # type: ignore[no-untyped-def]
    """alice and bob, enrolled once for the module."""
    return module_team.engineer("alice"), module_team.engineer("bob")


@pytest.fixture
def processes(module_team, test_ca, pair) -> Iterator[tuple[Served, Served]]:  # type: ignore[no-untyped-def]
    with server_process(module_team, test_ca, pair) as one, server_process(module_team, test_ca, pair) as two:
        yield one, two


def whoami(
    served: Served, *, key: SigningKey, keyid: str, forwarded: str | None = None
) -> tuple[dict[str, str], bytes]:
    body = codec.envelope("engineers.whoami", WhoamiRequest(), httpsig.new_nonce().encode()[:16])
    headers = {"Content-Type": JSON} | httpsig.sign_request("POST", "vault.test:8443", WHOAMI, JSON, body, key, keyid)
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return headers, body


def post(served: Served, headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def]
    with served.client() as client:
        return client.post(WHOAMI, content=body, headers=headers)


def failures(url: str, engineer_id: int | None = None) -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            query = select(func.coalesce(func.sum(m.AuthFailure.count), 0))
            if engineer_id is not None:
                query = query.where(m.AuthFailure.engineer_id == engineer_id)
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_a_request_replayed_to_the_other_server_process_is_refused(processes) -> None:  # type: ignore[no-untyped-def]
    one, two = processes
    headers, body = whoami(one, key=signing_key(one.alice), keyid=keyid_of(one.alice))
    assert post(one, headers, body).status_code == 200
    before = database_state(one.db_url)
    again = post(two, headers, body)
    assert again.status_code == 401 and again.json()["code"] == "replayed"
    after = database_state(one.db_url)
    assert after.pop("auth_failures") == before.pop("auth_failures") + 1  # a replay is a failed authentication
    assert after == before  # and nothing else was written
    fresh, body = whoami(two, key=signing_key(two.alice), keyid=keyid_of(two.alice))
    assert post(two, fresh, body).status_code == 200  # the other process answers a new request


def test_over_the_engineer_limit_a_good_signature_is_refused_too_on_every_process(processes) -> None:  # type: ignore[no-untyped-def]
    """Someone guesses at alice's signature on one process; after 2 failures (the limit here),
    even alice's own, correctly signed request is refused with 429 on the other process,
    before any signature check: the count is in the database, not in a process."""
    one, two = processes
    alice_id = one.alice.keyholder.me().engineer_id
    start = failures(one.db_url, alice_id)
    wrong = SigningKey.generate()
    for _ in range(2):
        headers, body = whoami(one, key=wrong, keyid=keyid_of(one.alice))
        refused = post(one, headers, body)
        assert refused.status_code == 401 and refused.json()["code"] == "bad-signature"
    assert failures(one.db_url, alice_id) == start + 2
    headers, body = whoami(two, key=signing_key(two.alice), keyid=keyid_of(two.alice))
    limited = post(two, headers, body)
    assert limited.status_code == 429
    assert limited.json()["error"] == "RateLimited" and int(limited.headers["retry-after"]) >= 1
    headers, body = whoami(two, key=signing_key(two.bob), keyid=keyid_of(two.bob))
    assert post(two, headers, body).status_code == 200  # bob is not alice


def test_over_the_address_limit_and_an_unknown_key_counts_for_the_address_only(processes) -> None:  # type: ignore[no-untyped-def]
    one, _ = processes
    start = failures(one.db_url)
    for guess in range(3):
        headers, body = whoami(one, key=SigningKey.generate(), keyid=f"e:{900000 + guess}:1")
        refused = post(one, headers, body)
        assert refused.status_code == 401 and refused.json()["code"] == "unknown-key"
    assert failures(one.db_url) == start  # no engineer's count moved: the ids name nobody
    headers, body = whoami(one, key=signing_key(one.bob), keyid=keyid_of(one.bob))
    limited = post(one, headers, body)
    assert limited.status_code == 429 and limited.json()["error"] == "RateLimited"


def test_forwarded_for_from_an_untrusted_peer_counts_against_the_real_peer(processes) -> None:  # type: ignore[no-untyped-def]
    one, _ = processes
    for guess in range(3):  # a different "client" each time, as the header claims
        headers, body = whoami(
            one, key=SigningKey.generate(), keyid=f"e:{910000 + guess}:1", forwarded=f"198.51.100.{guess}"
        )
        assert post(one, headers, body).status_code == 401
    headers, body = whoami(one, key=signing_key(one.bob), keyid=keyid_of(one.bob), forwarded="203.0.113.9")
    assert post(one, headers, body).status_code == 429  # counted against 127.0.0.1, the real peer


def test_a_trusted_proxy_forwards_the_client_address_that_is_counted(module_team, test_ca, pair) -> None:  # type: ignore[no-untyped-def]
    with server_process(module_team, test_ca, pair, trusted=("127.0.0.1/32",)) as proxied:
        for guess in range(3):
            headers, body = whoami(
                proxied, key=SigningKey.generate(), keyid=f"e:{920000 + guess}:1", forwarded="198.51.100.7"
            )
            assert post(proxied, headers, body).status_code == 401
        headers, body = whoami(
            proxied, key=signing_key(proxied.bob), keyid=keyid_of(proxied.bob), forwarded="198.51.100.7"
        )
        assert post(proxied, headers, body).status_code == 429  # that client is over its limit
        headers, body = whoami(
            proxied, key=signing_key(proxied.bob), keyid=keyid_of(proxied.bob), forwarded="203.0.113.9"
        )
        assert post(proxied, headers, body).status_code == 200  # another client behind the same proxy is not
