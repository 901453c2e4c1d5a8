"""A service identity (an RMM script, a CI job) through the team server, on both engines.

An engineer of role ``service``: invited by an admin (the role signed into the invitation and then
certified), enrolled through the server with a key file instead of a passphrase
(``vault/service/servicekeys.py``), granted clients like an engineer, and unlocked from its key file
for one process at a time. The attacks: a key file others may read, one naming another server, an
engineer's invitation enrolled as a service (and the reverse), an existing file overwritten, a
service asking for an admin's operation, a database writer promoting the service to admin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from served import ServedTeam, ServedVault
from sqlalchemy import select, update

from vault import Vault
from vault.errors import AccessDenied, ConfigurationError, InvalidInput, Unauthenticated, UntrustedRecord
from vault.service.remote import RemoteVault
from vault.storage import models as m
from vault.storage.engine import Store


@dataclass
class Services:
    team: ServedTeam
    host: Vault
    url: str
    folder: Path


@pytest.fixture
def services(served_vault: ServedVault) -> Services:
    host = served_vault.admin
    host.clients.add("acme", "Acme Ltd")
    host.secrets.add("acme/fw01", password="pw of acme/fw01")
    return Services(served_vault.team, host, served_vault.url, served_vault.folder)


def enrolled(services: Services, name: str = "rmm") -> Path:
    """``name`` invited as a service, enrolled with its key file, confirmed and granted acme: the file."""
    key_file = services.folder / f"{name}.key"
    code = services.host.engineers.invite(name, role="service")
    fingerprint = services.team.open(name).engineers.enroll_service(name, code, key_file)
    services.host.engineers.confirm(name, fingerprint)
    services.host.grants.grant(name, "acme")
    return key_file


def unlocked(services: Services, key_file: Path, name: str = "rmm") -> RemoteVault:
    vault = services.team.open(name)
    vault.engineers.unlock_key_file(key_file)
    return vault


def _row(url: str, name: str) -> m.Engineer:
    store = Store(url)
    try:
        with store.read() as s:
            return s.scalars(select(m.Engineer).where(m.Engineer.name == name)).one()
    finally:
        store.close()


def _events(url: str) -> list[m.AuditEvent]:
    store = Store(url)
    try:
        with store.read() as s:
            return list(s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq)))
    finally:
        store.close()


def test_a_service_checks_out_with_its_key_file_and_no_passphrase(services: Services) -> None:
    key_file = enrolled(services)
    assert key_file.stat().st_mode & 0o777 == 0o600
    document = json.loads(key_file.read_text(encoding="utf-8"))
    expected = ("credvault-service-key", "rmm", services.team.pin.url)
    assert (document["type"], document["name"], document["server"]) == expected
    row = _row(services.url, "rmm")
    assert (row.role, row.status) == ("service", "active") and row.certificate is not None
    vault = unlocked(services, key_file)
    assert vault.engineers.whoami().role == "service"
    assert vault.checkouts.reveal("acme/fw01", reason="RMM job 4711") == "pw of acme/fw01"
    last = _events(services.url)[-1]
    assert (last.action, last.engineer_id, last.request_id is not None) == ("reveal", row.id, True)
    assert services.host.audit.verify().ok


def test_a_key_file_others_may_read_is_refused_before_any_request(services: Services) -> None:
    key_file = enrolled(services)
    key_file.chmod(0o640)
    before = len(_events(services.url))
    with pytest.raises(InvalidInput, match="read by other users"):
        unlocked(services, key_file)
    assert len(_events(services.url)) == before


def test_a_key_file_for_another_server_is_refused(services: Services, tmp_path: Path) -> None:
    key_file = enrolled(services)
    moved = tmp_path / "moved.key"
    document = json.loads(key_file.read_text(encoding="utf-8"))
    moved.write_text(json.dumps({**document, "server": "https://elsewhere.example:8443"}), encoding="utf-8")
    moved.chmod(0o600)
    with pytest.raises(ConfigurationError, match="another server"):
        unlocked(services, moved)


def test_roles_and_enrolments_must_match(services: Services) -> None:
    """An engineer's invitation is not enrolled as a service (its keys would sit in a file without a
    passphrase), nor a service's with a passphrase; each refused before anything is committed."""
    code = services.host.engineers.invite("dave")
    with pytest.raises(InvalidInput, match="role 'engineer'"):
        services.team.open("dave").engineers.enroll_service("dave", code, services.folder / "dave.key")
    assert not (services.folder / "dave.key").exists()
    assert _row(services.url, "dave").sealing_public is None  # nothing enrolled: the code still works
    services.team.open("dave").engineers.enroll("dave", code, "pass of dave")
    service_code = services.host.engineers.invite("ci")
    services.host.engineers.invite("ci", role="service")  # renewed as a service: a new code
    code = services.host.engineers.invite("ci", role="service")
    assert code != service_code
    with pytest.raises(InvalidInput, match="role 'service'"):
        services.team.open("ci").engineers.enroll("ci", code, "a passphrase")
    assert _row(services.url, "ci").sealing_public is None


def test_an_existing_key_file_is_never_replaced(services: Services) -> None:
    taken = services.folder / "taken.key"
    taken.write_text("someone's file\n", encoding="utf-8")
    code = services.host.engineers.invite("rmm", role="service")
    with pytest.raises(ConfigurationError, match="never replaced"):
        services.team.open("rmm").engineers.enroll_service("rmm", code, taken)
    assert taken.read_text(encoding="utf-8") == "someone's file\n"
    assert _row(services.url, "rmm").sealing_public is None


def test_a_service_is_never_an_admin(services: Services) -> None:
    vault = unlocked(services, enrolled(services))
    before = len(_events(services.url))
    with pytest.raises(AccessDenied):
        vault.engineers.invite("eve")
    with pytest.raises(AccessDenied):
        vault.grants.grant("rmm", "acme")
    assert len(_events(services.url)) == before


def test_a_database_writer_cannot_promote_a_service(services: Services) -> None:
    """The role is in the certificate: a row rewritten to ``admin`` no longer verifies, and the
    service is refused rather than promoted."""
    key_file = enrolled(services)
    store = Store(services.url)
    try:
        with store.transaction() as s:
            s.execute(update(m.Engineer).where(m.Engineer.name == "rmm").values(role="admin"))
    finally:
        store.close()
    with pytest.raises((Unauthenticated, UntrustedRecord, AccessDenied)):
        unlocked(services, key_file).engineers.invite("eve")
    assert services.host.engineers.list() is not None
    assert not any(e.name == "eve" for e in services.host.engineers.list())
