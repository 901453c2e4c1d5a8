"""A backup through the team server, where the database is: the context, the event, the snapshot.

In-process a backup is one unit of work that lends the keyholder's hands to the authority
(``backups.py``: ``BackupSeal``). Through the server the keyholder is on the admin's machine, so
the same work is split into what can cross alone (docs/server.md, "Session 16 — helper G"):

1. ``context`` (``backups.context``): a read. The caller is authorised first (an active,
   certified admin of the key generation the request names; anyone else is refused before any
   other row is read), then the ``BackupContext`` is read as ``BackupAuthority`` reads it.
2. ``record`` (``backups.create``): one unit of work. The request's nonce is remembered first
   (a replay waits on it, then fails), the caller authorised again, the context read again, the
   clients must be those the keyholder opened keys for (else ``ConcurrentChange``: a client added
   or purged in between, nothing written), the keyholder's ``NewBackupKeys`` stored where no
   backup key was (and nowhere else), the
   format-3 ``backup-create`` event appended and **committed** before anything of the backup
   is read for the answer: no log, no backup.
3. ``snapshot``: the rows, read in one snapshot (REPEATABLE READ on PostgreSQL, one WAL snapshot
   on SQLite) that begins after that commit, as ``BackupAuthority.create`` hands them to a seal:
   the header (whose ``audit_head`` is the snapshot's last event: the backup's own or later),
   the audit log in keyset pages, each client's rows, the global rows and the id counters. One
   section is held at a time.

The server never sees a backup key: the sections leave as the rows are stored (ciphertext,
signed records, the data keys under the server's layer, each client's server client key
wrapped under the master key) and are sealed on the admin's machine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import cast

from sqlalchemy import select, text

from vault.authority.backup_requests import (
    AUDIT,
    AUDIT_TABLE,
    CLIENT,
    CREATE,
    GLOBAL,
    GLOBAL_TABLES,
    BackupCommit,
    BackupContext,
    BackupHeader,
    BackupRecorded,
    BackupRequest,
    SectionRows,
)
from vault.authority.backups import MODELS, BackupAuthority, BackupChecks, _counters, _rows
from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.serverjournal import ServerJournal
from vault.errors import ConcurrentChange, InvalidInput
from vault.storage import engine as storage
from vault.storage import models as m
from vault.storage.engine import Store

CLIENTS_CHANGED = "a client was added or purged since the backup's context was read: nothing was written"
# What the snapshot yields after its sections: the id counters (the last id each serial table used).
Counters = tuple[tuple[str, int], ...]


class _NoRecorder:
    """``BackupAuthority``'s in-process journal has no place here: the server appends format 3."""

    def append(self, *_: object, **__: object) -> int:
        raise InvalidInput("the team server appends format-3 events only")


class ServedBackupAuthority(BackupAuthority):
    """``backups.context``, ``backups.create`` and the snapshot a served backup streams."""

    def __init__(self, store: Store, checks: BackupChecks, clock: Callable[[], dt.datetime]) -> None:
        super().__init__(store, checks, _NoRecorder(), clock)

    def context(self, request: BackupRequest) -> BackupContext:
        """The backup keys' context, for the admin's keyholder to verify (a read: nothing written)."""
        self._checked(request, CREATE)
        with self.store.read() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)  # nothing else read when it refuses
            return self._context(s, caller, request, admins=False)

    def record(self, commit: BackupCommit, event: ServerEvent) -> BackupRecorded:
        """The new backup keys stored and the ``backup-create`` event appended, in one unit: committed
        when this returns (the backup's rows are read afterwards, ``snapshot``)."""
        if not isinstance(commit, BackupCommit):
            raise InvalidInput("not a backup commit")
        request = commit.request
        self._checked(request, CREATE)
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # a second in-flight copy waits here, then fails as replayed
            caller = self.gate.authorise(s, request.caller, admin=True)  # nothing else read when it refuses
            context = self._context(s, caller, request, admins=False)
            if tuple(c.client_id for c in context.clients) != commit.client_ids:
                raise ConcurrentChange(CLIENTS_CHANGED, hint="run `credvault backup create` again")
            self._store_new(s, context, commit.new_keys)
            s.flush()
            me = caller.me
            appended = ServerJournal(UnitCore(self.clock), event.seal).append(
                s, CREATE, event.request, engineer_id=me.id, key_generation=me.key_generation,
                public={"clients": len(context.clients), "served": 1},
            )  # fmt: skip
            s.flush()
            seq = int(appended.seq)
        return BackupRecorded(seq, len(context.clients))

    def snapshot(self, vault_id: bytes) -> Iterator[BackupHeader | SectionRows | Counters]:
        """The backup's rows in one snapshot, a section at a time: the header, the audit pages, each
        client's rows, the global rows, then the counters (module docstring, step 3)."""
        sqlite = storage.is_sqlite(self.store.engine)  # SQLite: a deferred read, one WAL snapshot, no write lock
        with self.store.read() if sqlite else self.store.transaction() as s:
            if not sqlite:  # PostgreSQL: every section of one snapshot (it writes nothing: its commit is empty)
                s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            schema = s.execute(text("SELECT version_num FROM alembic_version")).scalar()
            head = s.scalar(select(m.AuditEvent.seq).order_by(m.AuditEvent.seq.desc()).limit(1))
            yield BackupHeader(vault_id, str(schema), int(head or 0))
            last = 0
            while (events := _rows(s, m.AuditEvent, after_seq=last)).rows:
                yield SectionRows(AUDIT, None, (events,))
                last = int(cast(int, events.rows[-1][events.columns.index("seq")]))
            for client_id in s.scalars(select(m.Client.id).order_by(m.Client.id)).all():
                yield SectionRows(CLIENT, client_id, self._client_rows(s, client_id))
            tables = tuple(_rows(s, MODELS[name]) for name in GLOBAL_TABLES if name != AUDIT_TABLE)
            yield SectionRows(GLOBAL, None, tables)
            yield _counters(s)
