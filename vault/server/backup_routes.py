"""An admin's backup through the team server: ``backups.context`` and ``backups.create``.

``backups.context`` is a read (``authority/backup_served.py``): the backup keys' context for the
admin's keyholder to verify. ``backups.create`` stores the backup keys the keyholder made, appends
the format-3 ``backup-create`` event and commits it, and only then answers the backup's rows as a
stream (``wire/backupstream.py``), read in one snapshot after that commit. Both refuse an engineer
who is not an admin, and a body whose caller is not the request's signer, before the authority
reads anything (403, ``grant_routes.admin_only``); without a server signing key ``create`` answers
503. The request's nonce is remembered in the event's unit: a replay is refused there.

The stream is made in a thread of its own (one database snapshot, one thread) and handed to the
event loop through a queue of ``QUEUE_LINES`` lines: the server holds a few sections at most, and
a client that stops reading stops the snapshot (the thread gives up once the answer is closed). Its
end line is signed with the server's active key; a failure part way ends the answer without it
(the log names the error's class only), which the keyholder refuses as cut short.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from starlette.concurrency import run_in_threadpool

from vault.authority.backup_requests import BackupCommit, BackupContext, BackupHeader, BackupRequest, SectionRows
from vault.authority.backup_served import ServedBackupAuthority
from vault.authority.checkout_events import ServerEvent
from vault.authority.serverjournal import ServerSeal
from vault.crypto.labels import LABEL_SIG_BACKUP_STREAM
from vault.errors import ConfigurationError, InvalidInput
from vault.server.grant_routes import admin_only
from vault.server.handlers import Call, Operations
from vault.server.problems import NO_SERVER_KEY
from vault.wire import backupstream

LOGGER = logging.getLogger("credvault.server")
BACKUP_BODY = 16 * 1024 * 1024  # the new backup keys of every client (about 100 bytes each, the first backup)
QUEUE_LINES = 4  # lines (sections) waiting for the connection at most
_DONE = object()


class StreamedAnswer:
    """An answer sent as a stream of lines (``app.py`` answers it as ``MEDIA_TYPE``, unbuffered)."""

    media_type = backupstream.MEDIA_TYPE

    def __init__(self, produce: Callable[[], Iterator[bytes]]) -> None:
        self._produce = produce

    def __repr__(self) -> str:
        return "StreamedAnswer()"

    async def chunks(self) -> AsyncIterator[bytes]:
        lines: queue.Queue[object] = queue.Queue(maxsize=QUEUE_LINES)
        stop = threading.Event()

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    lines.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def run() -> None:
            try:
                for line in self._produce():
                    if not put(line):
                        return  # the answer was closed: the snapshot ends here
            except Exception as error:  # the answer ends short, without its end line
                LOGGER.error("a backup stream failed: %s", type(error).__name__)
            put(_DONE)

        threading.Thread(target=run, name="credvault-backup-stream", daemon=True).start()
        try:
            while (item := await run_in_threadpool(lines.get)) is not _DONE:
                assert isinstance(item, bytes)
                yield item
        finally:
            stop.set()


class BackupRoutes:
    """The backups' routes (module docstring)."""

    def __init__(self, authority: ServedBackupAuthority, seal: ServerSeal | None) -> None:
        self.authority, self.seal = authority, seal

    def __repr__(self) -> str:
        return f"BackupRoutes({self.seal!r})"

    def context(self, call: Call) -> BackupContext:
        request = call.body
        if not isinstance(request, BackupRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.authority.context(request)

    def create(self, call: Call) -> StreamedAnswer:
        commit = call.body
        if not isinstance(commit, BackupCommit) or not isinstance(commit.request, BackupRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, commit.request.caller)
        seal = self.seal
        if seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        recorded = self.authority.record(commit, ServerEvent(seal, call.recorded, call.nonce))  # committed
        vault_id, request_id = call.caller.vault_id, call.request_id

        def produce() -> Iterator[bytes]:
            with self.authority.store.read() as s:
                key = seal.check_active(s)  # the certified version the admin's machine pinned
            digest, count = hashlib.sha256(), 0
            for item in self.authority.snapshot(vault_id):
                if isinstance(item, BackupHeader):
                    line = backupstream.header_line(item, recorded.seq, recorded.clients)
                elif isinstance(item, SectionRows):
                    line = backupstream.section_line(item)
                else:
                    line = backupstream.counters_line(item)
                digest.update(line)
                count += 1
                yield line
            fields = backupstream.stream_fields(vault_id, request_id, recorded.seq, count, digest.digest())
            signature = key.key.sign(LABEL_SIG_BACKUP_STREAM, *fields)
            yield backupstream.end_line(count, digest.digest(), key.version, signature)

        return StreamedAnswer(produce)

    def add_to(self, operations: Operations) -> None:
        operations.add("backups.context", self.context)
        operations.add("backups.create", self.create, writes=True, max_body=BACKUP_BODY)
