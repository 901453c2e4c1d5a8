"""An admin's backup through the team server (``backups.context``, ``backups.create`` streamed), both engines.

The admin works from a machine with no database (``RemoteVault``). The server commits the
``backup-create`` event before any row leaves, streams the rows of one snapshot (its data keys still
under the server's layer), and the admin's keyholder checks and seals every section into a temporary
file, checks the stream's signed end line, and only then links the file under its name (0600, never
replacing one). The file restores on the host exactly as a host-made backup does.

The attacks: an engineer asking for a backup (403 before any row is read, nothing written); a
compromised server's stream cut short, changed in a line, or re-signed with a client left out (each
refused, no file and no temporary file left); a replayed request (refused, no second event).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from served import ADMIN, ADMIN_PASS, ServedTeam, ServedVault
from sqlalchemy import select
from test_layered_backup import Backed, checkout_through, restored, server_rows

from vault.authority.backup_requests import CREATE, BackupCommit, BackupRequest, NewBackupKeys
from vault.authority.requests import Caller
from vault.crypto.labels import LABEL_SIG_BACKUP_STREAM
from vault.crypto.serverkey import ServerSigningKey
from vault.errors import AccessDenied, AlreadyExists, ConcurrentChange, ConfigurationError, UntrustedRecord
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.service.serverpins import KeyRecordFile
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m
from vault.wire import backupstream

PASSWORD = "layered pw 4711"


def _events(team: ServedTeam, action: str) -> list[m.AuditEvent]:
    with team.server_store.read() as s:
        return list(s.scalars(select(m.AuditEvent).where(m.AuditEvent.action == action).order_by(m.AuditEvent.seq)))


def _setup(served_vault: ServedVault) -> ServedTeam:
    team, admin = served_vault.team, served_vault.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password=PASSWORD, kind="equipment")
    admin.clients.add("beta", "Beta GmbH")
    admin.secrets.add("beta/sw01", password="beta pw 0815")
    return team


Wrap = Callable[[httpx.BaseTransport], httpx.BaseTransport]


def _remote_admin(team: ServedTeam, wrap: Wrap | None = None) -> RemoteVault:
    """The admin on a machine with no database (their key record copied from the host once)."""
    if not KeyRecordFile.path(team.pin.vault_id, ADMIN).exists():
        serverjoin.join(team.pin, team.admin, ADMIN, ADMIN_PASS)
    if wrap is None:
        return team.unlocked(ADMIN)
    import ssl

    inner = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(team.pin.ca_file)))
    sessions = MemorySessionStore()
    vault = RemoteVault(team.pin, engineer=ADMIN, sessions=sessions, clock=team.clock, transport=wrap(inner))
    team.opened.append(vault)
    vault.engineers.unlock(ADMIN, ADMIN_PASS)
    return vault


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part") or p.suffix == ".cvbk")


# -- the backup, restored on the host ----------------------------------------------------------------------


def test_an_admin_backs_up_through_the_server_and_the_host_restores_it(
    served_vault: ServedVault, empty_databases, clock  # type: ignore[no-untyped-def]
) -> None:
    team = _setup(served_vault)
    folder = served_vault.folder
    bob = team.engineer("bob")
    served_vault.admin.grants.grant("bob", "acme")
    assert bob.checkouts.checkout("acme/fw01", reason="T-1 before the backup").value == PASSWORD
    bob.checkouts.checkin("acme/fw01")
    mine = _remote_admin(team)
    target = folder / "served.cvbk"
    info = mine.backups.create(target)
    assert (info.clients, info.secrets) == (2, 2)
    assert target.stat().st_mode & 0o777 == 0o600
    raw = target.read_bytes()
    for plain in (PASSWORD.encode(), b"beta pw 0815", b"acme", b"Acme Ltd"):
        assert plain not in raw
    assert _left(folder) == ["served.cvbk"]  # no temporary file left
    [event] = _events(team, CREATE)
    assert (event.seq, event.server_key_version, event.request_id is not None) == (info.audit_head, 1, True)
    # never replaced: a second backup to the same name is refused, the first untouched, nothing left over
    with pytest.raises(AlreadyExists):
        mine.backups.create(target)
    assert target.read_bytes() == raw and _left(folder) == ["served.cvbk"]
    # restored on the host exactly as a host-made backup: the layer and the server keys as stored
    served_vault.admin.backups.export_keys(folder / "vault.keys")
    backed = Backed(team, served_vault.engine, target, folder / "vault.keys", served_vault.admin.core.host_layer)
    assert bob.checkouts.checkout("acme/fw01", reason="T-2 after the backup").value == PASSWORD
    vault = restored(backed, empty_databases(served_vault.engine), clock)
    try:
        client_keys, signing = server_rows(vault.core.store)
        assert signing == server_rows(team.server_store)[1] and len(client_keys) == 2
        vault.engineers.unlock(ADMIN, ADMIN_PASS)
        assert vault.audit.verify().ok  # its format-3 events, the backup's own among them
        actions = [e.action for e in vault.audit.log()]
        assert actions.count(CREATE) == 1 and actions.count("checkout") == 1  # as of the backup: T-2 is after it
        with vault.core.store.read() as s, team.server_store.read() as live:
            def versions(unit: Any) -> list[tuple[int, int, bytes]]:
                return sorted((v.secret_id, v.version, v.wrapped_dek) for v in unit.scalars(select(m.SecretVersion)))

            assert versions(s) == versions(live)  # the data keys as stored: under the server's layer
        # a server with the same key file over the restored database serves bob as before
        assert checkout_through(backed, vault, served_vault.admin.core.host_layer, clock) == PASSWORD
        assert vault.audit.verify().ok
    finally:
        vault.close()


def test_restore_and_key_export_say_they_run_on_the_host(served_vault: ServedVault) -> None:
    mine = _remote_admin(_setup(served_vault))
    folder = served_vault.folder
    with pytest.raises(ConfigurationError, match="host operation"):
        mine.backups.restore(folder / "x.cvbk", folder / "x.keys", admin=ADMIN, passphrase=ADMIN_PASS)
    with pytest.raises(ConfigurationError, match="server's host"):
        mine.backups.export_keys(folder / "x.keys")
    assert _left(folder) == []


# -- a compromised server's stream --------------------------------------------------------------------------


class _Stream(httpx.SyncByteStream):
    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines

    def __iter__(self) -> Iterator[bytes]:
        yield from self.lines


class _Server(httpx.BaseTransport):
    """The real server's answer to ``backups.create``, its lines changed by ``change`` (the request id given)."""

    def __init__(self, inner: httpx.BaseTransport, change: Callable[[list[bytes], bytes], list[bytes]]) -> None:
        self.inner, self.change = inner, change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path != "/v1/backups/create" or response.status_code != 200:
            return response
        response.read()
        lines = response.content.splitlines(keepends=True)
        request_id = base64.urlsafe_b64decode(json.loads(request.content)["request_id"] + "==")
        changed = self.change(lines, request_id)
        return httpx.Response(200, headers=response.headers, stream=_Stream(changed))


def _resigned(
    key: ServerSigningKey, vault_id: bytes, change_lines: Callable[[list[bytes]], list[bytes]]
) -> Callable[[list[bytes], bytes], list[bytes]]:
    """A stream changed by ``change_lines``, its end line made again and signed by ``key`` (the server's
    own: a compromised server; another: a man in the middle)."""

    def change(lines: list[bytes], request_id: bytes) -> list[bytes]:
        body = change_lines(lines[:-1])
        seq = json.loads(body[0])["backup"]["seq"]
        digest = hashlib.sha256(b"".join(body)).digest()
        fields = backupstream.stream_fields(vault_id, request_id, seq, len(body), digest)
        signature = key.key.sign(LABEL_SIG_BACKUP_STREAM, *fields)
        return [*body, backupstream.end_line(len(body), digest, key.version, signature)]

    return change


def _without_last_client(lines: list[bytes]) -> list[bytes]:
    at = [i for i, line in enumerate(lines) if json.loads(line).get("section") == "client"][-1]
    return [*lines[:at], *lines[at + 1 :]]


def _client_flipped(lines: list[bytes]) -> list[bytes]:
    return _flip([*lines, b""], b"")[:-1]


def _flip(lines: list[bytes], _: bytes) -> list[bytes]:
    """One byte of a client's ciphertext changed in transit (the end line kept)."""
    at = next(i for i, line in enumerate(lines) if b'"section":"client"' in line)
    line = bytearray(lines[at])
    index = line.index(b'{"b":"') + 7
    line[index] = ord("A") if line[index] != ord("A") else ord("B")
    return [*lines[:at], bytes(line), *lines[at + 1 :]]


@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        ("cut short", "cut short"),
        ("cut mid-line", "cut short"),
        ("a line changed", "does not match its end line"),
        ("lines swapped", "does not match its end line|out of order|not whole"),
        ("re-signed without a client", "left clients out"),
        ("a line changed, signed by another key", "signature"),
    ],
)
def test_a_compromised_servers_stream_is_refused_and_no_file_is_left(
    served_vault: ServedVault, name: str, refusal: str
) -> None:
    team = _setup(served_vault)
    vault_id = served_vault.admin.vault_id()
    change: Callable[[list[bytes], bytes], list[bytes]] = {
        "cut short": lambda lines, _: lines[:-1],
        "cut mid-line": lambda lines, _: [*lines[:-2], lines[-2][: len(lines[-2]) // 2]],
        "a line changed": _flip,
        "lines swapped": lambda lines, _: [lines[0], lines[2], lines[1], *lines[3:]],
        "re-signed without a client": _resigned(team.server_key, vault_id, _without_last_client),
        "a line changed, signed by another key": _resigned(ServerSigningKey.generate(1), vault_id, _client_flipped),
    }[name]
    mine = _remote_admin(team, lambda inner: _Server(inner, change))
    folder = served_vault.folder
    with pytest.raises(UntrustedRecord, match=refusal):
        mine.backups.create(folder / "tampered.cvbk")
    assert _left(folder) == []


# -- insiders' requests -------------------------------------------------------------------------------------


def test_an_engineer_asking_for_a_backup_is_refused_before_any_row_is_read(served_vault: ServedVault) -> None:
    team = _setup(served_vault)
    bob = team.engineer("bob")
    folder = served_vault.folder
    before = len(_events(team, CREATE))
    with pytest.raises(AccessDenied, match="not an admin"):
        bob.backups.create(folder / "bob.cvbk")
    me = bob.keyholder.me()
    request = BackupRequest(CREATE, Caller(me.engineer_id, me.key_generation), me.org_signing_public)
    commit = BackupCommit(request, NewBackupKeys(None, ()), ())
    with (  # the create itself, signed by bob, with no context
        pytest.raises(AccessDenied, match="not an admin"),
        bob.backups.keyholder.transport.create(commit, os.urandom(16)),
    ):
        pass
    admin = served_vault.admin.keyholder.me()  # the admin's request, signed by bob: not the signer's
    as_admin = BackupRequest(CREATE, Caller(admin.engineer_id, admin.key_generation), me.org_signing_public)
    with pytest.raises(AccessDenied):
        bob.backups.keyholder.transport.context(as_admin)
    with pytest.raises(AccessDenied), bob.backups.keyholder.transport.create(
        BackupCommit(as_admin, NewBackupKeys(None, ()), ()), os.urandom(16)
    ):
        pass
    assert len(_events(team, CREATE)) == before and _left(folder) == []


def test_a_replayed_backup_request_is_refused_with_no_second_event(served_vault: ServedVault) -> None:
    team = _setup(served_vault)
    sent: list[httpx.Request] = []
    mine = _remote_admin(team)
    mine.https.client.event_hooks["request"].append(sent.append)
    mine.backups.create(served_vault.folder / "first.cvbk")
    [create] = [r for r in sent if r.url.path == "/v1/backups/create"]
    before = [e.seq for e in _events(team, CREATE)]
    import ssl

    verify = ssl.create_default_context(cafile=str(team.pin.ca_file))
    with httpx.Client(verify=verify, timeout=30.0) as client:
        answer = client.post(str(create.url), content=create.content, headers=dict(create.headers))
    assert answer.status_code == 401 and answer.headers["content-type"] == "application/problem+json"
    assert [e.seq for e in _events(team, CREATE)] == before


def test_a_client_added_after_the_context_is_a_concurrent_change(served_vault: ServedVault) -> None:
    """The keyholder opened no backup key for a client added after its context was read: the server
    refuses the commit as a race before its event (nothing written), and the next run includes it."""
    team = _setup(served_vault)
    mine = _remote_admin(team)
    transport = mine.backups.keyholder.transport
    context = transport.context

    def racing(request: Any) -> Any:
        found = context(request)
        served_vault.admin.clients.add("late", "Late Ltd")
        return found

    transport.context = racing  # type: ignore[method-assign]
    before = len(_events(team, CREATE))
    with pytest.raises(ConcurrentChange, match="added or purged since"):
        mine.backups.create(served_vault.folder / "race.cvbk")
    transport.context = context  # type: ignore[method-assign]
    assert _left(served_vault.folder) == [] and len(_events(team, CREATE)) == before
    assert mine.backups.create(served_vault.folder / "again.cvbk").clients == 3
