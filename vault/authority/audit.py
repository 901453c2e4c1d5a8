"""Reading the audit log, where the database is: authorise, then one page of event rows.

``AuditAuthority.page`` answers one ``PageRequest`` in its own short read unit of work
(``Store.read()``: on SQLite a deferred transaction that takes no write lock, on
PostgreSQL one that locks no row), so that a stream held open by a slow reader (``audit
log | less``) holds no transaction between its pages: PostgreSQL's
``idle_in_transaction_session_timeout`` cannot end it, and on SQLite no snapshot is kept
open while the reader waits. The pages of one stream follow each other by keyset on
``seq`` (``after``) up to the head the first page found (``until``).

In this order, each page: every field of the request checked for its type and range
(before any SQL); then the caller (present, certified, active, of the key generation the
request names; an admin for ``report access``) — a refused caller is refused here, before
any event row is read; then the page. An engineer who is not an admin reads only their
own events, whatever the request's filter says (another engineer's: none).

Only rows leave: ids, ciphertext (the sealed details), public details, signatures and the
chain's links. Reading the log writes nothing here; ``report access`` appends its own
event before it streams, through the noun (service/reports.py).
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.audit_requests import (
    ACCESS,
    CHECKPOINT,
    HEAD,
    MAX_ACTIONS,
    MAX_PAGE,
    READ_ACTIONS,
    EventPage,
    HeadAnswer,
    HeadRequest,
    PageRequest,
)
from vault.authority.requests import Caller
from vault.crypto import chain
from vault.errors import AccessDenied, InvalidInput, Locked
from vault.storage.engine import Store
from vault.storage.repositories import audit as event_rows
from vault.storage.rows import ACTIVE, ENGINEERS, INFO, ROLE_ADMIN, EngineerRow

MAX_US = 2**62  # microseconds since the epoch: far beyond any date credvault writes


class CallerChecks(Protocol):
    """The signature checks the authority makes on the caller's row (public keys only)."""

    def organisation_key(self, s: Session, current: bytes) -> None:
        """The vault's current organisation key, as read in this unit of work."""

    def certificate(self, s: Session, row: EngineerRow) -> None:
        """The engineer's certificate verifies under the organisation key, else UntrustedRecord."""


def checked_request(request: PageRequest) -> PageRequest:
    """``request`` if every field is of its type and range, else InvalidInput."""
    if not isinstance(request, PageRequest) or not isinstance(request.query.caller, Caller):
        raise InvalidInput("the request names no caller")
    query = request.query
    if query.action not in READ_ACTIONS:
        raise InvalidInput("the request names no reading of the audit log")
    validation.number("engineer id", query.caller.engineer_id, 1)
    validation.number("key generation", query.caller.key_generation, 0)
    for label, value in (("client id", query.client_id), ("engineer id", query.engineer_id)):
        if value is not None:
            validation.number(label, value, 1)
    if query.since_us is not None:
        validation.number("time", query.since_us, -MAX_US, MAX_US)
    if query.actions is not None:
        if not isinstance(query.actions, tuple) or not 0 < len(query.actions) <= MAX_ACTIONS:
            raise InvalidInput("the request's actions are not a short tuple")
        for action in query.actions:
            if not isinstance(action, str) or not 0 < len(action) <= 64:
                raise InvalidInput("the request names an action that is not a short text")
    validation.number("event number", request.after, 0, 2**62)
    if request.until is not None:
        validation.number("event number", request.until, 0, 2**62)
    validation.number("page size", request.size, 1, MAX_PAGE)
    if request.limit is not None:
        validation.number("limit", request.limit, 1)
        if request.until is not None:
            raise InvalidInput("only the first page of a stream names a limit")
    if query.action == ACCESS and (query.engineer_id is None or query.client_id is not None):
        raise InvalidInput("report access names one engineer and no client")
    return request


class AuditAuthority:
    """Pages of the audit log for a caller, each read in a read unit of its own."""

    def __init__(self, store: Store, checks: CallerChecks) -> None:
        self.store, self.checks = store, checks

    def __repr__(self) -> str:
        return "AuditAuthority()"

    def page(self, request: PageRequest) -> EventPage:
        request = checked_request(request)
        query = request.query
        with self.store.read() as s:
            conn: Connection = s.info["connection"]
            vault_id, me = self._caller(s, conn, query.caller)
            admin = me.role == ROLE_ADMIN
            if query.action == ACCESS and not admin:
                raise AccessDenied(f"{me.name!r} is not an admin", hint="ask an admin to do this")
            engineer_ids: set[int] | None = None if query.engineer_id is None else {query.engineer_id}
            if not admin:
                engineer_ids = {me.id} & engineer_ids if engineer_ids is not None else {me.id}
            filters = {"client_id": query.client_id, "engineer_ids": engineer_ids, "since_us": query.since_us}
            if request.until is None:
                head = event_rows.head(conn) or (0, chain.GENESIS)
                until, until_hash = head
            else:
                until = request.until
                found = conn.execute(select(event_rows.EVENTS.c.hash).where(event_rows.EVENTS.c.seq == until)).first()
                until_hash = bytes(found[0]) if found is not None else chain.GENESIS
            after = request.after
            if request.limit is not None:
                after = max(after, event_rows.newest_start(conn, request.limit, until, **filters))  # type: ignore[arg-type]
            events = event_rows.chained_page(conn, after, until, request.size, actions=query.actions, **filters)  # type: ignore[arg-type]
            return EventPage(
                vault_id=vault_id,
                after=after,
                until=until,
                until_hash=until_hash,
                restricted_to=None if admin else me.id,
                events=tuple(events),
                more=len(events) == request.size,
            )

    def head(self, request: HeadRequest) -> HeadAnswer:
        """The chain's head, in a read unit; for a checkpoint, the caller checked first (before
        the head is read) and the head event with it."""
        if not isinstance(request, HeadRequest) or request.action not in (HEAD, CHECKPOINT):
            raise InvalidInput("the request names no head of the audit log")
        if request.action == CHECKPOINT:
            if not isinstance(request.caller, Caller):
                raise InvalidInput("a checkpoint names its caller")
            validation.number("engineer id", request.caller.engineer_id, 1)
            validation.number("key generation", request.caller.key_generation, 0)
        with self.store.read() as s:
            conn: Connection = s.info["connection"]
            if request.caller is not None and request.action == CHECKPOINT:
                vault_id, _ = self._caller(s, conn, request.caller)
            else:
                vault_id = bytes(conn.execute(select(INFO.c.vault_id)).scalar_one())
            seq, digest = event_rows.head(conn) or (0, chain.GENESIS)
            found = None
            if request.action == CHECKPOINT and seq > 0:
                found = next(iter(event_rows.chained_page(conn, seq - 1, seq, 1)), None)
            return HeadAnswer(vault_id, seq, digest, found)

    def _caller(self, s: Session, conn: Connection, who: Caller) -> tuple[bytes, EngineerRow]:
        """The vault's id and the acting engineer's row: present, certified, active, of the
        key generation the request names; else refused. One statement, no event read."""
        columns = [ENGINEERS.c[name] for name in EngineerRow._fields]
        found = conn.execute(
            select(INFO.c.vault_id, INFO.c.org_signing_public, *columns)
            .select_from(INFO.join(ENGINEERS, ENGINEERS.c.id == who.engineer_id))
            .limit(1)
        ).first()
        if found is None:
            raise Locked("the acting engineer no longer exists in this vault")
        me = EngineerRow._make(found[2:])
        self.checks.organisation_key(s, found[1])
        self.checks.certificate(s, me)
        if me.status != ACTIVE:
            raise AccessDenied(f"the account of {me.name!r} is {me.status}", hint="ask an admin")
        if me.key_generation != who.key_generation:
            raise Locked(
                f"the keys of {me.name!r} have changed since this session was unlocked",
                hint="run `credvault unlock` again",
            )
        return bytes(found[0]), me
