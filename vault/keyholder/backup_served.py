"""A backup through the team server, where the admin's keys are: verify, seal, check the stream, publish.

The in-process seal (``backups._BackupSeal``) does the keyholder's work here too, fed by requests
that cross alone instead of by the authority's unit (docs/server.md, "Session 16 — helper G"):

1. ``backups.context``: the backup keys' context, verified by ``_BackupSeal.keys`` exactly as
   in-process (the admin's own row, the root key it holds, each client's signed key records and
   recovery-sealed copies, each backup key opened under its client's key), which makes the backup
   keys that do not exist yet;
2. ``backups.create`` with those new keys (ciphertext only): the server commits the event, then
   streams the rows (``wire/backupstream.py``). Each line is parsed and handed to the seal, which
   checks and seals each section as in-process (a client's rows in its own section only; the audit
   log whole and in order up to the header's head; every client of the context present) and writes
   it to a **temporary file** beside the target (0600, created new); the backup's own event must be
   in its audit log;
3. the end line: its count and digest must be those of the lines read, and its signature the
   pinned server key's over this request's id and event (``verify_stream``). Only then is the
   temporary file linked to the target name (never replacing a file: ``AlreadyExists``) and
   removed. Anything refused, cut short or failed removes the temporary file: no backup file is
   ever left that did not pass every check.

A client added between the context and the snapshot has no backup key this keyholder opened: the
backup is refused as a concurrent change (nothing written), and a second run includes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from vault.authority.backup_requests import (
    AUDIT,
    CLIENT,
    CREATE,
    GLOBAL,
    BackupCommit,
    BackupContext,
    BackupHeader,
    BackupRequest,
    SectionRows,
)
from vault.authority.requests import Caller
from vault.crypto import signing
from vault.errors import AlreadyExists, ConcurrentChange, StoreUnavailable, UntrustedRecord
from vault.keyholder.backups import BackupKeys, _BackupSeal, refuse_existing
from vault.records import BackupInfo
from vault.wire import backupstream

ADDED = "a client was added while the backup was made: nothing was written"
CUT_SHORT = "the server's backup stream was cut short: nothing was written"


class ServedBackupTransport(Protocol):
    def context(self, request: BackupRequest) -> BackupContext: ...

    def create(self, commit: BackupCommit, request_id: bytes) -> contextlib.AbstractContextManager[Iterator[bytes]]: ...

    def verify_stream(self, version: int, signature: bytes, fields: tuple[signing.ContextItem, ...]) -> None: ...


class _Received:
    """What the stream said and the checks of its order, line by line."""

    def __init__(self, seal: _BackupSeal, context: BackupContext, request_id: bytes) -> None:
        self.seal, self.context, self.request_id = seal, context, request_id
        self.digest, self.count = hashlib.sha256(), 0
        self.header: BackupHeader | None = None
        self.seq = 0
        self.pending_global: SectionRows | None = None
        self.finished = self.ended = self.own_event = False
        self.clients = {c.client_id for c in context.clients}

    def line(self, raw: bytes, transport: ServedBackupTransport) -> None:
        if self.ended:
            raise UntrustedRecord("the server's backup stream goes on after its end line")
        if not raw.endswith(b"\n"):
            raise UntrustedRecord(CUT_SHORT, hint="run `credvault backup create` again")
        document = backupstream.parsed(raw)
        if "end" in document:
            self._end(document, transport)
            return
        self.digest.update(raw)
        self.count += 1
        if self.count == 1:
            self._begin(document)
        elif self.finished:
            raise UntrustedRecord("the server's backup stream goes on after its counters")
        elif "section" in document:
            section = backupstream.section_of(document)
            del document  # one copy of the section's rows while it is sealed
            self._section(section)
        elif "counters" in document and self.pending_global is not None:
            self.seal.finish(self.pending_global, backupstream.counters_of(document))
            self.finished = True
        else:
            raise UntrustedRecord("the server's backup stream has a line out of order")

    def _begin(self, document: dict[str, Any]) -> None:
        header, seq, clients = backupstream.header_of(document)
        if header.vault_id != self.context.vault_id or clients != len(self.context.clients):
            raise UntrustedRecord("the server's backup stream is of another vault or another context")
        if not 1 <= seq <= header.audit_head:
            raise UntrustedRecord("the server's backup stream does not hold its own event")
        self.header, self.seq = header, seq
        self.seal.begin(header)

    def _section(self, section: SectionRows) -> None:
        if self.pending_global is not None:
            raise UntrustedRecord("the server's backup stream has a section after the global one")
        if section.kind == GLOBAL:
            self.pending_global = section
            return
        if section.kind == CLIENT and section.client_id not in self.clients:
            raise ConcurrentChange(ADDED, hint="run `credvault backup create` again")
        self.seal.section(section)
        if section.kind == AUDIT:
            self._own_event(section)

    def _own_event(self, section: SectionRows) -> None:
        """The backup's own event (``seq``) is in its audit log, and is this request's ``backup-create``."""
        [events] = section.tables
        columns = events.columns
        if "action" not in columns:  # ``seq`` is there: the seal checked the log's order by it
            raise UntrustedRecord("the backup's audit events have no action")
        for row in events.rows:
            if row[columns.index("seq")] == self.seq:
                if row[columns.index("action")] != CREATE:
                    raise UntrustedRecord("the event the server names for the backup is not a backup's")
                self.own_event = True

    def _end(self, document: dict[str, Any], transport: ServedBackupTransport) -> None:
        count, digest, version, signature = backupstream.end_of(document)
        if not self.finished or not self.own_event or count != self.count or digest != self.digest.digest():
            raise UntrustedRecord("the server's backup stream does not match its end line")
        fields = backupstream.stream_fields(self.context.vault_id, self.request_id, self.seq, count, digest)
        transport.verify_stream(version, signature, fields)
        self.ended = True


class ServedBackupKeyholder:
    """``backups.create`` through the team server for the admin whose keys ``keys`` holds."""

    def __init__(self, transport: ServedBackupTransport, keys: BackupKeys, clock: Callable[[], dt.datetime]) -> None:
        self.transport, self.keys, self.clock = transport, keys, clock

    def __repr__(self) -> str:
        return "ServedBackupKeyholder()"

    def create(self, path: Path) -> BackupInfo:
        path = Path(path)
        refuse_existing(path)
        me = self.keys.session()
        self.keys.open_recovery()  # the admin's recovery key (their sealed root bundle, opened here)
        request = BackupRequest(CREATE, Caller(me.engineer_id, me.key_generation), me.org_signing_public)
        context = self.transport.context(request)
        part = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
        try:
            with contextlib.ExitStack() as files:  # the temporary file is removed if the seal fails
                seal = _BackupSeal(self.keys, me, part, files, self.clock(), export=False)
                new = seal.keys(context)
                request_id = secrets.token_bytes(16)
                received = _Received(seal, context, request_id)
                commit = BackupCommit(request, new, tuple(c.client_id for c in context.clients))
                with self.transport.create(commit, request_id) as lines:
                    for raw in lines:
                        received.line(raw, self.transport)
                        del raw
                if not received.ended:
                    raise UntrustedRecord(CUT_SHORT, hint="run `credvault backup create` again")
            _publish(part, path)
        finally:
            part.unlink(missing_ok=True)
        assert received.header is not None
        return BackupInfo(str(path), seal.backup_id.hex(), len(context.clients), seal.secrets, received.seq)


def _publish(part: Path, path: Path) -> None:
    """The checked temporary file under its name: a hard link, which never replaces a file."""
    try:
        os.link(part, path)
    except FileExistsError:
        raise AlreadyExists(f"{path.name} already exists", hint="choose a new file name") from None
    except OSError:
        raise StoreUnavailable(f"cannot create {path.name}", hint="check that the folder is writable") from None
