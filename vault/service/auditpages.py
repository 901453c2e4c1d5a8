"""The audit log read as a stream: a page of events per statement, shown page by page.

``EntryReader`` turns a page of event rows (``repositories/audit.py``) into
``AuditEntry`` values: it reads what the page refers to in one statement per kind (the
clients, their purge receipts, the secrets with their current version) and only for ids
it has not seen yet, and remembers what it opened (a client's slug, a secret's name) for
the rest of the stream, within a bound. Memory is that of one page plus those bounded
caches, whatever the length of the log: ``audit export`` of a million events streams.

``AccessReader`` is the same for ``report access``: the reveal events of one engineer,
each with whether the revealed value changed since (decided once per version and field).
Nothing here appends: the callers do, after reading (``listing.append_after_read``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy.orm import Session

from vault.authority.journal import from_us
from vault.authority.secrets import KEPT_REASON
from vault.crypto import blobs
from vault.errors import DecryptionFailed, VaultError
from vault.service import listing, rows
from vault.service.core import ROLE_ADMIN
from vault.service.records import AccessRecord, AuditEntry
from vault.service.secrets import VIEW_KEPT, VIEW_PUBLIC_ONLY
from vault.storage import models as m
from vault.storage.repositories import audit as event_rows
from vault.storage.repositories import clients as client_rows
from vault.storage.repositories import secrets as secret_rows

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.core import Core
    from vault.service.reports import Reports
    from vault.service.secrets import Secrets
    from vault.storage.engine import Store

Event = event_rows.EventRow | event_rows.ChainedRow


class Viewer(Protocol):
    """What reading the audit log takes: the viewer's verified row, their keys, the clients'
    audit-key rings and the secrets' metadata."""

    core: Core
    keys: Keys
    trust: Trust
    journal: Journal
    secrets: Secrets


CACHE_LIMIT = 50_000  # names and slugs remembered per stream; cleared past it (a bound, not a need)
REVEAL_ACTIONS = ("reveal", "checkout")
VIEW = "secret-view"
_FAILED = object()


class EntryReader:
    """Audit entries of event rows, for the viewer ``vault``, each page opened in a read unit.

    The keyholder's side of a page: the page's events (verified by ``keyholder/audit.py``)
    are opened in a short read unit of their own (``page(s, events)``), so that nothing is
    held open while the caller consumes what was opened."""

    def __init__(self, vault: Viewer) -> None:
        self.vault = vault
        self.clients: dict[int, client_rows.ClientRow | None] = {}
        self.receipts: dict[int, int] = {}
        self.secrets: dict[int, str] = {}
        self.slugs: dict[int, object] = {}  # client id -> slug, or _FAILED (the viewer cannot open it)
        self.allowed: set[int] | None = None

    def use(self, s: Session) -> None:
        """Read the next page in ``s``: the viewer checked again, as of this read."""
        self.s = s
        self.conn = rows.connection(s)
        self.me = self.vault.trust.my_row(s)
        self.names = event_rows.names(self.conn)
        # An engineer opens only the clients of their live, verified grants, as of this read:
        # a key still in the session's cache after a revocation opens nothing here.
        if self.me.role == ROLE_ADMIN:
            self.allowed = None
        else:
            allowed = set(listing.granted_client_ids(self.vault, s, self.me))
            if self.allowed is not None and self.allowed - allowed:
                self.slugs.clear()  # a grant ended since the page before: nothing opened under it is shown
                self.secrets.clear()
            self.allowed = allowed

    def _may_open(self, client_id: int) -> bool:
        return self.allowed is None or client_id in self.allowed

    def page(self, s: Session, events: Sequence[Event]) -> list[AuditEntry]:
        """The entries of one page of events, what they refer to read in a few statements."""
        self.use(s)
        self._prefetch(events)
        return [self.entry(e) for e in events]

    def _prefetch(self, events: Sequence[Event]) -> None:
        for cache in (self.clients, self.secrets, self.slugs):
            if len(cache) > CACHE_LIMIT:
                cache.clear()
        secret_ids = {e.secret_id for e in events if e.secret_id is not None and e.secret_id not in self.secrets}
        found = secret_rows.by_ids(self.conn, secret_ids)
        client_ids = {e.client_id for e in events if e.client_id is not None} | {r.client_id for r in found}
        self._clients({c for c in client_ids if c not in self.clients})
        present = {r.id for r in found}
        for secret_id in secret_ids - present:
            self.secrets[secret_id] = f"(purged secret #{secret_id})"
        for row in found:
            client = self.clients.get(row.client_id)
            if client is None:
                self.secrets[row.id] = f"(purged secret #{row.id})"
                continue
            if not self._may_open(row.client_id):
                self.secrets[row.id] = f"(secret #{row.id})"
                continue
            try:
                if row.version is None:
                    raise DecryptionFailed()
                name = self.vault.secrets.open(self.s, client, row, cast(Any, row)).metadata["name"]
                self.secrets[row.id] = str(name)
            except VaultError:
                self.secrets[row.id] = f"(secret #{row.id})"

    def _clients(self, ids: set[int]) -> None:
        if not ids:
            return
        found = client_rows.by_ids(self.conn, ids)
        for client_id in found:
            if not self._may_open(client_id):
                self.slugs[client_id] = _FAILED
        openable = [c for c in found.values() if self._may_open(c.id)]
        listing.unseal_client_keys(self.vault, self.s, self.me, openable)  # an admin's: a few statements
        missing = ids - set(found)
        self.receipts.update(event_rows.purge_receipts(self.conn, missing))
        for client_id in ids:
            self.clients[client_id] = found.get(client_id)

    def _slug(self, client: client_rows.ClientRow) -> str:
        if not self._may_open(client.id):
            raise DecryptionFailed()
        slug = self.slugs.get(client.id)
        if slug is None:
            try:
                slug = self.vault.keys.client_field(self.s, client, client.slug_blob, "slug").decode("utf-8")
            except VaultError:
                slug = _FAILED
            self.slugs[client.id] = slug
        if slug is _FAILED:
            raise DecryptionFailed()
        return str(slug)

    def entry(self, e: Event) -> AuditEntry:
        """One event as the viewer may see it (``AuditOps._entry``'s rules)."""
        details: dict[str, Any] | None = json.loads(e.details_json) if e.details_json else None
        slug = None
        readable = e.details_blob is None
        if e.client_id is not None:
            if e.client_id not in self.clients:
                self._clients({e.client_id})
            client = self.clients[e.client_id]
            if client is None:
                receipt = self.receipts.get(e.client_id)
                slug = f"(purged client #{e.client_id}, receipt #{receipt})" if receipt else f"(client #{e.client_id})"
            else:
                try:
                    slug = self._slug(client)
                    if e.details_blob is not None and e.key_version is not None:
                        key = self._audit_key(client, e.key_version)
                        raw = _opened_details(key, e, e.client_id, e.key_version, e.details_blob)
                        details = {**(details or {}), **json.loads(raw)}
                        readable = True
                except VaultError:
                    slug = slug or f"(client #{e.client_id})"
        if e.signature is None:  # unlock-failed (and old enrolments): nobody's key vouches for it
            details = {**(details or {}), "unauthenticated": True}
        name = self.names.get(e.engineer_id) if e.engineer_id is not None else None
        secret = None
        if e.secret_id is not None:
            if e.secret_id not in self.secrets:
                self._prefetch([e])
            secret = self.secrets[e.secret_id]
        return AuditEntry(
            e.seq, from_us(e.at_us), name, e.action, slug, e.client_id, e.secret_id, details, readable, secret
        )

    def _audit_key(self, client: client_rows.ClientRow, generation: int) -> bytes:
        if client.audit_keys_blob is None:
            raise DecryptionFailed()  # no ring yet: nothing was sealed under one
        ring = self.vault.journal.audit_keys.ring(self.s, client, client.audit_keys_blob)
        if not 1 <= generation <= len(ring) // 32:
            raise DecryptionFailed()
        return ring[(generation - 1) * 32 : generation * 32]


def entries(reader: EntryReader, store: Store, pages: Iterator[Sequence[Event]]) -> Iterator[AuditEntry]:
    """The entries of verified pages, each page opened in a read unit of its own that ends
    before its entries are handed on (a slow consumer holds no transaction)."""
    for events in pages:
        with store.read() as s:
            opened = reader.page(s, events)
        yield from opened


# -- report access ------------------------------------------------------------------------------------


class AccessReader:
    """The reveals of one engineer, as ``AccessRecord`` values, streamed page by page."""

    def __init__(self, vault: Reports) -> None:
        self.vault = vault
        self.reader = EntryReader(vault)
        self.changed: dict[tuple[int | None, int | None, int, str], bool] = {}

    def records(self, store: Store, pages: Iterator[Sequence[Event]]) -> Iterator[AccessRecord]:
        """The records of verified pages of reveal events, each page opened in a read unit of
        its own that ends before its records are handed on."""
        for events in pages:
            with store.read() as s:
                self.s = s
                opened = [
                    record
                    for event, entry in zip(events, self.reader.page(s, events), strict=True)
                    for record in self._records(event, entry)
                ]
            yield from opened

    def _records(self, event: Event, entry: AuditEntry) -> Iterator[AccessRecord]:
        details = entry.details or {}
        if event.action == VIEW and details.get("fields") == VIEW_KEPT:  # an update through the server that kept it
            version = int(details.get("version", 0))
            changed = self.changed_since(event.client_id, event.secret_id, version, "password")
            secret, client = entry.secret or f"#{event.secret_id}", entry.client or "?"
            yield AccessRecord(event.seq, entry.at, client, secret, "password", version, KEPT_REASON, changed)
            return
        if event.action == VIEW:
            if details.get("fields") != VIEW_PUBLIC_ONLY:
                # an old event (rare): the vault's own rules, on its row
                legacy = cast(m.AuditEvent, event)
                yield from self.vault.legacy_view_records(self.s, legacy, entry.client or "?", entry.secret, entry.at)
            return
        field = str(details.get("field", "password"))
        version = int(details.get("version", 0))
        yield AccessRecord(
            event.seq,
            entry.at,
            entry.client or "?",
            entry.secret or f"#{event.secret_id}",
            field,
            version,
            details.get("reason"),
            self.changed_since(event.client_id, event.secret_id, version, field),
        )

    def changed_since(self, client_id: int | None, secret_id: int | None, version: int, field: str) -> bool:
        """``Reports.changed_since``, decided once per (client, secret, version, field)."""
        key = (client_id, secret_id, version, field)
        known = self.changed.get(key)
        if known is None:
            if len(self.changed) > CACHE_LIMIT:
                self.changed.clear()
            known = self.changed[key] = self.vault.changed_since(self.s, client_id, secret_id, version, field)
        return known


def _opened_details(key: bytes, e: Event, client_id: int, generation: int, blob: bytes) -> bytes:
    """An event's sealed details: bound to its request's id in format 3 (sealed before its
    number was known, docs/format.md §4.3a), else to its sequence number."""
    if isinstance(e, event_rows.ChainedRow) and e.server_key_version is not None and e.request_id is not None:
        return blobs.decrypt_audit_detail_v3(key, generation, blob, client_id, e.request_id, e.action)
    return blobs.decrypt_audit_detail(key, generation, blob, client_id, e.seq, e.action)
