"""The suite's third mode: a team whose engineers work through a real team server (docs/server.md §7).

``ServedTeam`` has the interface of conftest's ``Team`` (``url``, ``admin``, ``clock``,
``passphrases``, ``open``, ``engineer``, ``unlocked``), so a test written for ``team`` runs
unchanged over HTTPS when it takes ``team3`` (conftest.py: SQLite, PostgreSQL, then HTTPS over
SQLite). The vault is made in-process, as ``credvault init`` makes it; the admin certifies a
server key and then works on the server's host with it (``Core.server_key``, as ``credvault
--server-key FILE``); the server is ``credvault serve``'s app under uvicorn on a loopback socket
over TLS (a test CA), its nonces in the database, every data key under its layer (a master key in
the key file), sharing the test's clock. Each engineer is
enrolled through the server (``enroll_over_https``, what ``credvault engineer enroll`` does
with a pinned server), confirmed by the admin on the host, and works as a ``RemoteVault``: no
database, every answer checked against the pinned server key.

Also here, shared with ``tests/server/``: the test CA (``make_test_ca``), a loopback socket
bound before uvicorn starts, and uvicorn in a thread (``running``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vault import Vault
from vault.crypto.keyrecord import Argon2Params
from vault.crypto.serverkey import ServerSigningKey
from vault.server.app import build_app
from vault.server.host import on_host
from vault.server.keyfile import ServerKeyFile
from vault.server.layer import MasterKey, ServerLayer
from vault.server.running import ServeOptions, uvicorn_config
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.service.serverkeys import certify_server_key
from vault.service.serverpins import ServerPin
from vault.service.sessions import MemorySessionStore
from vault.storage.engine import Store
from vault.wire.authlimits import AddressLimit, AuthenticationLimits, EngineerLimit
from vault.wire.nonces import DbNonceStore


@dataclass(frozen=True)
class CertificateFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_test_ca(folder: Path) -> CertificateFiles:
    """A CA, and a certificate it signed for 127.0.0.1 and localhost, written to ``folder``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("credvault test CA"))
        .issuer_name(name("credvault test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    found = CertificateFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    found.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    found.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    found.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    found.key_file.chmod(0o600)
    return found


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY on TCP only
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def running(app: object, options: ServeOptions, sock: socket.socket) -> Iterator[None]:
    """``app`` under uvicorn (configured as ``credvault serve`` configures it) in a thread, on ``sock``."""
    server = uvicorn.Server(uvicorn_config(app, options))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    try:
        yield
    finally:
        # force_exit: without it uvicorn waits for every open connection to close, and an idle TLS
        # connection of a client the test still holds waits for its peer's close_notify (20 s each
        # here, the join's bound, in about forty places of the suite). The test is over: no request
        # is in flight.
        server.should_exit = server.force_exit = True
        thread.join(20)
        sock.close()


@dataclass
class ServedTeam:
    """``Team``'s interface through a running team server (module docstring)."""

    url: str
    admin: Vault
    clock: Callable[[], dt.datetime]
    passphrases: dict[str, str]
    pin: ServerPin
    server_key: ServerSigningKey
    kdf_params: Argon2Params
    server_store: Store
    opened: list[RemoteVault] = field(default_factory=list)

    served = True

    def open(self, name: str | None = None) -> RemoteVault:
        """A fresh, locked ``RemoteVault`` (its own caches) for ``name``."""
        vault = RemoteVault(self.pin, engineer=name, sessions=MemorySessionStore(), clock=self.clock)
        vault.engineers.kdf_params = self.kdf_params  # a key record made through it (enroll) as the suite's
        self.opened.append(vault)
        return vault

    def engineer(self, name: str, *, role: str = "engineer", passphrase: str | None = None) -> RemoteVault:
        """Invite (admin, on the host), enrol through the server, confirm, unlock: their ``RemoteVault``."""
        passphrase = passphrase or f"pass of {name}"
        code = self.admin.engineers.invite(name, role=role)
        fingerprint = self.open(name).engineers.enroll(name, code, passphrase)  # through the server
        self.admin.engineers.confirm(name, fingerprint)
        self.passphrases[name] = passphrase
        return self.unlocked(name)

    def unlocked(self, name: str) -> RemoteVault:
        """A fresh ``RemoteVault`` for ``name`` (enrolled before), unlocked with their passphrase."""
        mine = self.open(name)
        mine.engineers.unlock(name, self.passphrases[name])
        return mine

    def remote(self, name: str) -> RemoteVault:
        """``name`` (made on the host, e.g. the vault's first admin) working through the server: their key
        record copied to this machine once (``credvault server join``), then unlocked."""
        serverjoin.join(self.pin, self.admin, name, self.passphrases[name])
        return self.unlocked(name)

    def close(self) -> None:
        for vault in self.opened:
            vault.close()


@contextlib.contextmanager
def served_team(
    url: str, admin: Vault, clock: Callable[[], dt.datetime], passphrases: dict[str, str], ca: CertificateFiles,
    kdf_params: Argon2Params,
) -> Iterator[ServedTeam]:  # fmt: skip
    """``admin``'s vault behind a team server: the server key certified and the admin on the host with it.
    ``CREDVAULT_HOME`` must point at a private folder (the pins and key records go there)."""
    key = ServerSigningKey.generate(1)
    keys = ServerKeyFile(key, MasterKey(1, os.urandom(32)))  # every data key stored is layered under it
    certify_server_key(admin, 1, key.public)
    on_host(admin, keys)  # as `credvault --server-key FILE` on the server's host
    store = Store(url)
    try:
        with serving(store, key, admin.core.host_layer, clock, ca) as (_public, pin):
            team = ServedTeam(url, admin, clock, passphrases, pin, key, kdf_params, store)
            try:
                yield team
            finally:
                team.close()
    finally:
        admin.core.server_key = admin.core.host_layer = admin.core.host_server = None
        store.close()


@contextlib.contextmanager
def serving(
    store: Store,
    key: ServerSigningKey,
    layer: ServerLayer | None,
    clock: Callable[[], dt.datetime],
    ca: CertificateFiles,
) -> Iterator[tuple[str, ServerPin]]:
    """A team server over ``store`` on loopback TLS (as ``credvault serve`` wires it, on ``clock``),
    signing with ``key`` and removing ``layer``: its public URL and this machine's pin of it."""
    sock = loopback_socket()
    port = sock.getsockname()[1]
    public = f"https://127.0.0.1:{port}"

    def now() -> float:
        return clock().timestamp()

    app = build_app(
        store,
        public_url=public,
        nonce_store=DbNonceStore(store),
        server_key=key,
        layer=layer,
        limits=AuthenticationLimits(AddressLimit(), EngineerLimit(store)),
        clock=now,
    )
    db_url = store.engine.url.render_as_string(hide_password=False)
    options = ServeOptions(db_url, bind=f"127.0.0.1:{port}", tls_cert=str(ca.cert_file), tls_key=str(ca.key_file))
    with running(app, options, sock):
        identity = serverjoin.trust(public, str(ca.ca_file))
        yield public, serverjoin.pin(public, identity, str(ca.ca_file))


# The admin of a vault made for a served test (``served_vault``, tests/server/conftest.py).
ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"


@dataclass
class ServedVault:
    """A new vault behind a running team server (``served_vault``): its ``team`` (the admin on the
    host with the key file, every stored data key layered), database ``url`` and ``engine``, the
    ``ca`` the server's certificate is under, and a private ``folder``."""

    team: ServedTeam
    url: str
    engine: str
    ca: CertificateFiles
    folder: Path

    @property
    def admin(self) -> Vault:
        return self.team.admin


def only_local(team: object, why: str) -> None:
    """Skip the HTTPS mode of a ``team3`` test, saying why (what it reaches that a server never serves)."""
    if getattr(team, "served", False):  # a ServedTeam, or tests/service's ServedShared
        pytest.skip(f"not over HTTPS: {why}")
