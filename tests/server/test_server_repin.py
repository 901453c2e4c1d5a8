"""An engineer's machine after a server key rotation: a newer key is taken only with its certificate.

docs/server.md §5–§6. The server signs with the version the vault holds active; when an answer
names a newer version than the pinned one, ``RemoteVault`` reads ``/v1/identity``, believes the
new key only with its certificate under the pinned organisation key for the pinned vault, checks
the answer under it and re-pins it (vault id and CA copy kept). Attacks, each refused with
``UntrustedRecord`` and a hint, the pins unchanged: a key the organisation key did not certify
(a DBA's row), a certificate for another vault, an older version offered again (rollback), an
answer whose signature names a version the identity does not certify. Both engines.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from server_harness import CertificateFiles, loopback_socket, running
from sqlalchemy import update

from vault.crypto import serverkey
from vault.crypto.serverkey import ServerKeyring, ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.errors import UntrustedRecord
from vault.server.app import build_app
from vault.server.running import ServeOptions
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.service.serverkeys import certify_server_key
from vault.service.serverpins import ServerPin, ServerPins
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m
from vault.storage.engine import Store
from vault.wire.nonces import DbNonceStore

REASON = "T-4711 rotation"


@dataclass
class Rotating:
    """A server running with a key file's ring (v1 certified, v2 not yet), alice's machine pinned to v1."""

    team: object
    store: Store
    url: str
    ring: ServerKeyring
    pin: ServerPin
    passphrase: str
    opened: list[RemoteVault] = dataclasses.field(default_factory=list)  # closed before the server stops

    @property
    def older(self) -> ServerSigningKey:
        return self.ring.keys[0]

    @property
    def newer(self) -> ServerSigningKey:
        return self.ring.keys[1]

    def remote(
        self, transport: httpx.BaseTransport | None = None, sessions: MemorySessionStore | None = None
    ) -> RemoteVault:
        """alice's vault on this machine, unlocked (or, given ``sessions`` she unlocked in, opened)."""
        vault = RemoteVault(ServerPins.load().get(self.url), engineer="alice",
                            sessions=sessions or MemorySessionStore(), transport=transport)  # fmt: skip
        self.opened.append(vault)
        if sessions is None:
            vault.engineers.unlock("alice", self.passphrase)
        return vault

    def certify_newer(self) -> None:
        """The admin certifies v2 on the host (the certification recorded under v1); the server's
        answers use it from its next read of the choice (within a second)."""
        admin = self.team.admin  # type: ignore[attr-defined]
        admin.core.server_key = self.ring
        try:
            certify_server_key(admin, self.newer.version, self.newer.public)
        finally:
            admin.core.server_key = None
        time.sleep(1.05)

    def dba_certifies(self, version: int, public: bytes, certificate: bytes, at: int) -> None:
        """What a database writer can do: a server key row of its own making, made the active one."""
        with self.store.transaction() as s:
            s.execute(update(m.ServerKey).values(state="retired"))
            s.merge(m.ServerKey(version=version, signing_public=public, certified_at=at, certificate=certificate,
                                state="active"))  # fmt: skip
        time.sleep(1.05)

    def org_and_vault(self) -> tuple[SigningKey, bytes]:
        admin = self.team.admin  # type: ignore[attr-defined]
        with self.store.read() as s:
            return admin.keyholder.root_bundle(s).org, admin.core.vid(s)


@pytest.fixture
def rotating(team, test_ca: CertificateFiles, cli_home: Path) -> Iterator[Rotating]:  # type: ignore[no-untyped-def]
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password="pw of acme/fw01")
    alice = team.engineer("alice")
    admin.grants.grant("alice", "acme")
    ring = ServerKeyring((ServerSigningKey.generate(1), ServerSigningKey.generate(2)))
    certify_server_key(admin, 1, ring.keys[0].public)
    store, sock = Store(team.url), loopback_socket()
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    app = build_app(store, public_url=url, nonce_store=DbNonceStore(store), server_key=ring)
    options = ServeOptions(team.url, bind=url.split("//")[1], tls_cert=str(test_ca.cert_file),
                           tls_key=str(test_ca.key_file))  # fmt: skip
    try:
        with running(app, options, sock):
            pin = serverjoin.pin(url, serverjoin.trust(url, str(test_ca.ca_file)), str(test_ca.ca_file))
            assert pin.server_key == (1, ring.keys[0].public)
            serverjoin.join(pin, alice, "alice", team.passphrases["alice"])
            world = Rotating(team, store, pin.url, ring, pin, team.passphrases["alice"])
            try:
                yield world
            finally:
                for vault in world.opened:
                    vault.close()
    finally:
        store.close()


def test_a_newer_certified_key_is_repinned_and_the_answer_accepted(rotating: Rotating) -> None:
    vault = rotating.remote()
    rotating.certify_newer()
    assert vault.checkouts.checkout("acme/fw01", reason=REASON).value == "pw of acme/fw01"
    renewed = dataclasses.replace(rotating.pin, server_key=(2, rotating.newer.public))
    assert ServerPins.load().get(rotating.url) == renewed  # the vault id and the CA copy kept
    assert vault.pin == renewed and vault.https.server_key == (2, rotating.newer.public)
    assert vault.checkouts.checkin("acme/fw01") is None  # the next answers under the new pin
    assert rotating.remote().engineers.whoami().engineer == "alice"  # a new process starts from it


def test_a_newer_key_not_certified_by_the_organisation_key_is_refused(rotating: Rotating) -> None:
    vault = rotating.remote()
    _, vault_id = rotating.org_and_vault()
    at = int(dt.datetime.now(dt.UTC).timestamp())
    rogue = serverkey.certify(SigningKey.generate(), vault_id, 2, rotating.newer.public, at)
    rotating.dba_certifies(2, rotating.newer.public, rogue, at)
    with pytest.raises(UntrustedRecord, match="no valid certificate") as raised:
        vault.engineers.whoami()
    assert "server trust" in (raised.value.hint or "")
    assert ServerPins.load().get(rotating.url) == rotating.pin and vault.pin == rotating.pin
    assert vault.https.server_key == (1, rotating.older.public)


def test_a_certificate_for_another_vault_is_refused(rotating: Rotating) -> None:
    vault = rotating.remote()
    org, _ = rotating.org_and_vault()
    at = int(dt.datetime.now(dt.UTC).timestamp())
    elsewhere = serverkey.certify(org, bytes(16), 2, rotating.newer.public, at)  # the right organisation key
    rotating.dba_certifies(2, rotating.newer.public, elsewhere, at)
    with pytest.raises(UntrustedRecord, match="no valid certificate"):
        vault.checkouts.checkout("acme/fw01", reason=REASON)
    assert ServerPins.load().get(rotating.url) == rotating.pin and vault.pin == rotating.pin


def test_an_older_version_offered_again_is_refused(rotating: Rotating) -> None:
    vault = rotating.remote()
    rotating.certify_newer()
    assert vault.engineers.whoami().engineer == "alice"
    renewed = ServerPins.load().get(rotating.url)
    assert renewed.server_key == (2, rotating.newer.public)
    with rotating.store.transaction() as s:  # the database put back on version 1
        s.execute(update(m.ServerKey).where(m.ServerKey.version == 2).values(state="retired"))
        s.execute(update(m.ServerKey).where(m.ServerKey.version == 1).values(state="active"))
    time.sleep(1.05)
    with pytest.raises(UntrustedRecord, match="older than the pinned version 2") as raised:
        vault.engineers.whoami()
    assert raised.value.hint and "rolled back" in raised.value.hint
    with pytest.raises(UntrustedRecord, match="older"):  # a new process, from the pins file: the same
        rotating.remote()
    assert ServerPins.load().get(rotating.url) == renewed


class KeyidRewriter(httpx.HTTPTransport):
    """A TLS-terminating proxy that makes every signed answer name server key version 2."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        value = response.headers.get("signature-input")
        if value is not None:
            response.headers["signature-input"] = value.replace('keyid="s:1"', 'keyid="s:2"')
        return response


def test_an_answer_naming_a_version_the_identity_does_not_certify_is_refused(rotating: Rotating, test_ca) -> None:  # type: ignore[no-untyped-def]
    proxy = KeyidRewriter(verify=ssl.create_default_context(cafile=str(test_ca.ca_file)))
    with pytest.raises(UntrustedRecord, match="does not certify the key version 2"):
        rotating.remote(proxy)  # the unlock's whoami: v2 is in the key file, but not certified
    assert ServerPins.load().get(rotating.url) == rotating.pin


class SignatureBreaker(KeyidRewriter):
    """The proxy also alters each signed answer's signature (one character), naming version 2."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        value = response.headers.get("signature")
        if value is not None and request.url.path != "/v1/identity":
            head, body = value[:4], value[4:]
            response.headers["signature"] = head + ("B" if body[0] == "A" else "A") + body[1:]
        return response


def test_a_forged_answer_under_a_certified_newer_key_is_refused_and_nothing_pinned(rotating: Rotating, test_ca) -> None:  # type: ignore[no-untyped-def]
    sessions = MemorySessionStore()
    plain = RemoteVault(rotating.pin, engineer="alice", sessions=sessions)
    rotating.opened.append(plain)
    plain.engineers.unlock("alice", rotating.passphrase)
    proxy = SignatureBreaker(verify=ssl.create_default_context(cafile=str(test_ca.ca_file)))
    breaking = rotating.remote(proxy, sessions)  # the session unlocked without the proxy
    rotating.certify_newer()  # v2 certified: the identity shows it
    with pytest.raises(UntrustedRecord, match="does not verify"):
        breaking.engineers.whoami()
    assert ServerPins.load().get(rotating.url) == rotating.pin and breaking.pin == rotating.pin
