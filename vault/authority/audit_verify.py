"""Verifying the audit chain, where the database is: authorise, then rows of the chain.

``AuditChainAuthority`` answers the two requests of ``audit verify`` and of ``report
at-risk``'s chain check (``audit_verify_requests.py``), each in its own short read unit
(``Store.read()``: on SQLite a deferred transaction that takes no write lock, on PostgreSQL
one that locks no row; never the audit head's lock), so that checkouts go on while a long
chain is verified and no transaction stays open while the keyholder checks a page:

* ``points``: the recorded head, the newest event's seq (read first: the head moves in the
  transaction of every append, so an event past the head read after it is one no append
  made) and the few events a verification starts from;
* ``page``: one page of the whole chain, by keyset on ``seq`` (``after``) up to the end the
  keyholder names (``until``: the head it was told of, or the end of one range of it).

In this order, each request: every field checked for its type and range (before any SQL);
then the caller through ``CallerGate`` (present, certified, active, of the key generation
named; an admin for ``report-at-risk``, any engineer for ``audit-verify``), refused before
any event row is read; then the rows. Only rows leave: ids, ciphertext, public details,
signatures and the chain's links; the keyholder verifies every one of them
(``keyholder/auditverify.py``). Nothing is written.
"""

from __future__ import annotations

from sqlalchemy import select

from vault import validation
from vault.authority.audit_requests import MAX_PAGE, EventPage, PageRequest
from vault.authority.audit_verify_requests import AT_RISK, CHAIN_ACTIONS, MAX_POINTS, ChainPoints, PointsRequest
from vault.authority.policies_caller import CallerGate, checked_caller
from vault.crypto import chain
from vault.errors import InvalidInput
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.repositories import audit as event_rows
from vault.storage.repositories import audit_chain

MAX_SEQ = 2**62


def _checked_action(action: object) -> str:
    if not isinstance(action, str) or action not in CHAIN_ACTIONS:
        raise InvalidInput("the request names no verification of the audit log")
    return action


def checked_page(request: object) -> PageRequest:
    """``request`` if it asks for a page of the whole chain with fields of their types and
    ranges, else InvalidInput."""
    if not isinstance(request, PageRequest):
        raise InvalidInput("the request is not a page of the audit log")
    query = request.query
    _checked_action(query.action)
    checked_caller(query.caller)
    if query.filtered:
        raise InvalidInput("a verification reads the whole chain: the request names no filter")
    if request.limit is not None or request.until is None:
        raise InvalidInput("a verification names where its pages end, and no limit")
    validation.number("event number", request.until, 0, MAX_SEQ)
    validation.number("event number", request.after, 0, request.until)
    validation.number("page size", request.size, 1, MAX_PAGE)
    return request


def checked_points(request: object) -> PointsRequest:
    if not isinstance(request, PointsRequest):
        raise InvalidInput("the request is not for the chain's head")
    _checked_action(request.action)
    checked_caller(request.caller)
    if not isinstance(request.seqs, tuple) or len(request.seqs) > MAX_POINTS:
        raise InvalidInput("the request names too many events")
    for seq in request.seqs:
        validation.number("event number", seq, 1, MAX_SEQ)
    return request


class AuditChainAuthority:
    """The audit chain's rows for a verification, each request in a read unit of its own."""

    def __init__(self, store: Store, gate: CallerGate) -> None:
        self.store, self.gate = store, gate

    def __repr__(self) -> str:
        return "AuditChainAuthority()"

    def points(self, request: PointsRequest) -> ChainPoints:
        request = checked_points(request)
        with self.store.read() as s:
            caller = self.gate.authorise(s, request.caller, admin=request.action == AT_RISK)
            conn = rows.connection(s)
            newest = audit_chain.newest(conn)  # before the head: see the module docstring
            head_seq, head_hash = event_rows.head(conn) or (0, chain.GENESIS)
            events = audit_chain.events_at(conn, set(request.seqs))
            return ChainPoints(bytes(caller.vault_id), head_seq, head_hash, newest, tuple(events))

    def page(self, request: PageRequest) -> EventPage:
        request = checked_page(request)
        until = request.until
        assert until is not None  # checked_page
        with self.store.read() as s:
            caller = self.gate.authorise(s, request.query.caller, admin=request.query.action == AT_RISK)
            conn = rows.connection(s)
            events = event_rows.chained_page(conn, request.after, until, request.size)
            found = conn.execute(select(event_rows.EVENTS.c.hash).where(event_rows.EVENTS.c.seq == until)).first()
            return EventPage(
                vault_id=bytes(caller.vault_id),
                after=request.after,
                until=until,
                until_hash=bytes(found[0]) if found is not None else chain.GENESIS,
                restricted_to=None,
                events=tuple(events),
                more=len(events) == request.size,
            )
