"""The team server under test: a real uvicorn on loopback over TLS (docs/server.md §7, third mode).

``test_ca``: a CA and a server certificate for 127.0.0.1 made with ``cryptography``, written
to files (uvicorn reads files). ``served``: one server per test module and engine, over that
module's team (``module_team``: an admin; alice and bob enrolled here), uvicorn in a thread
on a socket bound before it starts (``server.run(sockets=[sock])``), ready once
``server.started``, stopped with ``server.should_exit``. ``signed_post`` signs a raw request
as an engineer (any part of it can be changed, the way an insider with a key would), and
``database_state`` is every table's row count and the audit head: "nothing written"
(both in ``server_harness.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from served import ADMIN, ADMIN_PASS, CertificateFiles, ServedVault, loopback_socket, make_test_ca, running, served_team
from server_harness import KEYED_METADATA, Keyed, ReadWorld, Served, ticking
from sqlalchemy import select

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.crypto.serverkey import ServerSigningKey
from vault.server.app import build_app
from vault.server.running import ServeOptions
from vault.service.serverkeys import certify_server_key
from vault.storage import models as m
from vault.storage.engine import Store
from vault.wire.authlimits import AddressLimit, AuthenticationLimits, EngineerLimit
from vault.wire.httpsig import MemoryNonceStore
from vault.wire.nonces import DbNonceStore


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    """A CA, and a certificate it signed for 127.0.0.1 and localhost."""
    return make_test_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def served(module_team, test_ca: CertificateFiles) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    """A TLS server on loopback over ``module_team``'s database (SQLite and PostgreSQL)."""
    alice, bob = module_team.engineer("alice"), module_team.engineer("bob")
    store = Store(module_team.url)
    nonces = MemoryNonceStore()
    sock = loopback_socket()
    port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    app = build_app(store, public_url=url, nonce_store=nonces)
    options = ServeOptions(
        module_team.url, bind=f"127.0.0.1:{port}", tls_cert=str(test_ca.cert_file), tls_key=str(test_ca.key_file)
    )
    try:
        with running(app, options, sock):
            yield Served(url, port, test_ca, module_team.url, nonces, module_team.admin, alice, bob)
    finally:
        store.close()


@pytest.fixture(scope="module")
def read_world(served: Served, module_team) -> ReadWorld:  # type: ignore[no-untyped-def]
    """``served``'s team with something to read (``server_harness.ReadWorld``), made in-process."""
    admin = served.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta GmbH")
    admin.policies.set("acme", stale_days=1)
    admin.secrets.add("acme/fw01", password="pw of acme/fw01")
    admin.secrets.add("beta/db01", password="pw of beta/db01")
    admin.grants.grant("alice", "acme")
    admin.grants.grant("bob", "beta")
    ids = []
    for who, ref in ((served.alice, "acme/fw01"), (served.bob, "beta/db01")):
        who.checkouts.checkout(ref, reason="T-1 read routes")
        ids.append(_last_event_client(served.db_url))
    admin.keys.rotate_client("acme")
    carol = module_team.engineer("carol")
    return ReadWorld(served, carol, *ids)


def _last_event_client(url: str) -> int:
    store = Store(url)
    try:
        with store.read() as s:
            found = s.scalar(select(m.AuditEvent.client_id).order_by(m.AuditEvent.seq.desc()).limit(1))
    finally:
        store.close()
    assert isinstance(found, int)
    return found


@pytest.fixture(scope="module")
def keyed(module_team, test_ca) -> Iterator[Keyed]:  # type: ignore[no-untyped-def]
    """A team whose vault has gone to the team server: acme (a reason, not exclusive) and excl
    (exclusive) with their secrets, alice granted both, bob excl, carol nothing; the admin
    certifies the server key and the server runs with it, its nonces in the database."""
    admin = module_team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("excl", "Exclusive Ltd")
    admin.policies.set("excl", exclusive=True)
    for ref in ("acme/fw01", "acme/fw02", "excl/sw01", "excl/sw02", "excl/sw03", "excl/sw04", "excl/sw05"):
        admin.secrets.add(ref, password=f"pw of {ref}", **KEYED_METADATA.get(ref, {}))
    alice, bob, carol = (module_team.engineer(n) for n in ("alice", "bob", "carol"))
    admin.grants.grant("alice", "acme")
    admin.grants.grant("alice", "excl")
    admin.grants.grant("bob", "excl")
    key = ServerSigningKey.generate(1)
    certify_server_key(admin, 1, key.public)
    store = Store(module_team.url)
    sock = loopback_socket()
    port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    limits = AuthenticationLimits(AddressLimit(), EngineerLimit(store))
    app = build_app(  # as credvault serve wires it
        store, public_url=url, nonce_store=DbNonceStore(store), server_key=key, limits=limits
    )
    options = ServeOptions(
        module_team.url, bind=f"127.0.0.1:{port}", tls_cert=str(test_ca.cert_file), tls_key=str(test_ca.key_file)
    )
    try:
        with running(app, options, sock):
            served = Served(url, port, test_ca, module_team.url, MemoryNonceStore(), admin, alice, bob)
            yield Keyed(served, carol, key, store)
    finally:
        store.close()


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A config folder of this test's own (``CREDVAULT_HOME``) and an in-memory OS keyring, with no
    ``CREDVAULT_*`` choice from the environment: what a CLI test on a server's host or an engineer's
    machine writes (pins, key records, sessions) stays in it."""
    import keyring
    from memory_keyring import MemoryKeyring

    home = tmp_path / "home"
    monkeypatch.setenv("CREDVAULT_HOME", str(home))
    for variable in ("CREDVAULT_DB", "CREDVAULT_SERVER", "CREDVAULT_ENGINEER", "CREDVAULT_SERVER_KEY_FILE"):
        monkeypatch.delenv(variable, raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    yield home
    keyring.set_keyring(previous)


@pytest.fixture
def remote_alice(keyed: Keyed, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """alice's ``RemoteVault`` on the ``keyed`` server (pinned, joined, unlocked), each made by
    ``make(wrap)``: ``wrap`` puts a transport of the test's (a man in the middle, a lost answer)
    between it and the server, given the real one."""
    import ssl

    import httpx

    from vault.service import serverjoin
    from vault.service.remote import RemoteVault
    from vault.service.sessions import MemorySessionStore

    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    served = keyed.served
    identity = serverjoin.trust(served.url, str(served.ca.ca_file))
    pin = serverjoin.pin(served.url, identity, str(served.ca.ca_file))
    serverjoin.join(pin, served.alice, "alice", "pass of alice")
    opened: list[RemoteVault] = []

    def make(wrap):  # type: ignore[no-untyped-def]
        inner = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(served.ca.ca_file)))
        vault = RemoteVault(
            pin, engineer="alice", sessions=MemorySessionStore(), clock=ticking(served.alice.clock),
            transport=wrap(inner),
        )
        vault.engineers.unlock("alice", "pass of alice")
        opened.append(vault)
        return vault

    yield make
    for vault in opened:
        vault.close()


@pytest.fixture(scope="module")
def keyed_more(module_team, request: pytest.FixtureRequest) -> tuple[Keyed, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """``keyed``, with dave and erin (engineers, no grant) enrolled in-process just before the vault
    went to the team server: engineers whose key record a module may change (``keyed`` and their
    in-process Vaults, by name; their passphrases are ``pass of NAME``)."""
    more = {name: module_team.engineer(name) for name in ("dave", "erin")}
    return request.getfixturevalue("keyed"), more


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def served_vault(request, tmp_path, empty_databases, clock, monkeypatch) -> Iterator[ServedVault]:  # type: ignore[no-untyped-def]
    """A new vault (its admin ``served.ADMIN``, unlocked) behind a real team server on loopback TLS,
    on each engine, with ``CREDVAULT_HOME`` a folder of the test's own (``served.served_team``)."""
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    url = empty_databases(request.param)
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FLOOR)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    ca = make_test_ca(tmp_path)
    try:
        with served_team(url, admin, clock, {ADMIN: ADMIN_PASS}, ca, FLOOR) as team:
            yield ServedVault(team, url, request.param, ca, tmp_path)
    finally:
        admin.close()


@pytest.fixture(scope="module")
def world(module_team, request: pytest.FixtureRequest) -> Keyed:  # type: ignore[no-untyped-def]
    """``keyed``, named as the admin-write modules name it (a module needing more, such as a second
    admin, defines its own ``world`` over ``keyed``)."""
    keyed: Keyed = request.getfixturevalue("keyed")
    return keyed


@pytest.fixture
def admin(world: Keyed, module_team) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """The suite's first admin on a machine with no database (``remote_admin_harness.remote``: the key
    record copied once, unlocked), on the module's ``world``; closed after the test."""
    from remote_admin_harness import remote

    name = world.served.admin.engineer_name
    assert name is not None
    mine = remote(world, world.served.admin, name, module_team.passphrases[name])
    yield mine
    mine.close()
