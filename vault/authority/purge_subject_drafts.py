"""An admin's search and purge of a data subject through the team server, where the database is.

docs/server.md §4 rule 2 (the values: ``purge_subject_values.py``). The rows are the in-process
ones (``SubjectAuthority._client`` for the search, ``PurgeAuthority`` for what a purge destroys, its
deletes and what survives); the caller is authorised first (an active, certified admin, before any
client row is read) in every unit:

* ``search`` — one write unit per page: the request's nonce; the caller; the clients after the
  page's ``after`` in id order, each with everything the in-process search is shown, until the
  page holds ``PAGE_BYTES`` (at least one client); the format-3 ``subject-search`` event (public:
  the purpose, a purge's request reference, ``after``, the number of clients and versions). The
  route removes the server's layer from the data keys answered once this has committed.
* ``subject_draft`` — one write unit: the caller; expired reservations deleted and the receipt's id
  reserved for the caller (five minutes); the client's secrets named that are still there (none:
  404), their versions as stored, the receipt that will be stored (dated by the reservation,
  unsigned) and their digest. No event: nothing is released or destroyed.
* ``subject`` — the commit, one write unit: the nonce; the caller; the reservation (the caller's,
  unexpired, then deleted); the draft recomputed from the same secret ids and its digest compared
  (409 ``stale-draft``: a secret gone, a version added, a checkout taken); then, before anything is
  deleted, one fingerprint per version drafted and the receipt's signature under the caller's
  certified key over this receipt and this request's id (else 403). Only then the secrets'
  checkouts, versions and rows are deleted, what survives is counted (anything: nothing committed),
  and the receipt and the format-3 ``purge-subject`` event are written in the same unit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.checkout_reads import CallerRead
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.purge import MAX_SECRETS, PurgeAuthority
from vault.authority.purge_draft_values import RESERVATION_SECONDS, RESERVED_RECEIPT_ID, STALE_PURGE, draft_digest
from vault.authority.purge_drafts import (
    NOT_SIGNED,
    _verified,
    checked_signed,
    held_receipt,
    next_receipt_id,
    stored_receipt,
)
from vault.authority.purge_requests import NOTHING_MATCHES, REQUEST_REF, SUBJECT, PurgeRows, PurgeTarget, ReceiptRow
from vault.authority.purge_secret_drafts import FINGERPRINT
from vault.authority.purge_subject_values import (
    FIND,
    PURGE,
    PURGE_SUBJECT,
    PURGE_SUBJECT_DRAFT,
    REPORT,
    SUBJECT_SEARCH,
    PurgeSubjectCommit,
    PurgeSubjectDraft,
    PurgeSubjectDraftRequest,
    SubjectPage,
    SubjectSearchRequest,
)
from vault.authority.serverjournal import ServerJournal
from vault.authority.subjects import SubjectAuthority, SubjectClient, SubjectRows
from vault.errors import AccessDenied, ConcurrentChange, IntegrityError, InvalidInput, NotFound
from vault.storage import models as m
from vault.storage.engine import Store

PAGE_BYTES = 1024 * 1024  # a search page's blobs, about (a page holds at least one client, whatever its size)


class SubjectPurgeDraftAuthority:
    """A subject's search pages, and the drafts and commits of its purge, one client each (module docstring)."""

    def __init__(self, store: Store, checks: CallerChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.clock = store, clock
        self.gate = CallerGate(checks)

    def __repr__(self) -> str:
        return "SubjectPurgeDraftAuthority()"

    def search(self, request: SubjectSearchRequest, event: ServerEvent) -> SubjectPage:
        """A page of every client's rows, on record as its ``subject-search`` event (still layered)."""
        if not isinstance(request, SubjectSearchRequest) or request.action != SUBJECT_SEARCH:
            raise InvalidInput("not a subject search request")
        checked_caller(request.caller)
        checked_pin(request.org_pin)
        validation.number("after", request.after, 0)
        if request.purpose not in (FIND, REPORT, PURGE) or (request.purpose == PURGE) == (request.request_ref == ""):
            raise InvalidInput("a search is to find or report (no reference) or to purge (a request reference)")
        ref = request.request_ref
        if request.purpose == PURGE and not (isinstance(ref, str) and REQUEST_REF.fullmatch(ref)):
            raise InvalidInput("bad request reference")
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)
            caller = self.gate.authorise(s, request.caller, admin=True)  # before any client row is read
            chain = org_chain(s, request.org_pin, caller.org_signing_public)
            ids = list(s.scalars(select(m.Client.id).where(m.Client.id > request.after).order_by(m.Client.id)))
            clients: list[SubjectClient] = []
            size, more = 0, False
            for client_id in ids:
                if clients and size >= PAGE_BYTES:
                    more = True
                    break
                client = s.get(m.Client, client_id)
                assert client is not None
                found = SubjectAuthority._client(s, client, caller.root_version or 0)
                clients.append(found)
                size += _size(found)
            me = caller.me
            public = {
                "purpose": request.purpose, "request": request.request_ref or None, "after": request.after,
                "clients": len(clients), "versions": sum(len(c.versions) for c in clients),
            }  # fmt: skip
            appended = ServerJournal(UnitCore(self.clock), event.seal).append(
                s, SUBJECT_SEARCH, event.request, engineer_id=me.id, key_generation=me.key_generation,
                client_id=None, secret_id=None, public=public,
            )  # fmt: skip
            s.flush()
            seq = int(appended.seq)
        rows = SubjectRows(seq, caller.vault_id, caller.org_signing_public, chain, me, tuple(clients))
        return SubjectPage(rows, more)

    def subject_draft(self, request: PurgeSubjectDraftRequest) -> PurgeSubjectDraft:
        """The draft of one client's matching secrets' purge (its receipt's id reserved; no event)."""
        if not isinstance(request, PurgeSubjectDraftRequest) or request.action != PURGE_SUBJECT_DRAFT:
            raise InvalidInput("not a subject purge draft request")
        _checked(request.caller, request.org_pin, request.client_id, request.secret_ids, request.request_ref)
        with self.store.transaction() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)  # before any row of the client
            now = self.clock()
            s.execute(delete(m.IdReservation).where(m.IdReservation.expires_at <= now))
            receipt_id = next_receipt_id(s)
            expires = now + dt.timedelta(seconds=RESERVATION_SECONDS)
            s.add(m.IdReservation(kind=RESERVED_RECEIPT_ID, id=receipt_id, engineer_id=caller.me.id, reserved_at=now,
                                  expires_at=expires))  # fmt: skip
            rows, receipt = self._draft(s, caller, request.client_id, request.secret_ids, request.request_ref,
                                        request.org_pin, receipt_id, now)  # fmt: skip
        return PurgeSubjectDraft(rows, receipt, draft_digest(rows, receipt), expires)

    def subject(self, request: PurgeSubjectCommit, event: ServerEvent) -> PurgeRows:
        """Destroy the drafted secrets, if everything holds (module docstring): the receipt as stored."""
        if not isinstance(request, PurgeSubjectCommit) or request.action != PURGE_SUBJECT:
            raise InvalidInput("not a subject purge commit")
        _checked(request.caller, request.org_pin, request.client_id, request.secret_ids, request.request_ref)
        validation.number("receipt id", request.receipt_id, 1)
        digest, signature, fingerprints = request.draft_digest, request.signature, request.fingerprints
        checked_signed(digest, signature, fingerprints, FINGERPRINT)
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # a second in-flight copy waits here, then fails as replayed
            caller = self.gate.authorise(s, request.caller, admin=True)
            me, now = caller.me, self.clock()
            held = held_receipt(s, request.receipt_id, me.id, now)
            rows, drafted = self._draft(s, caller, request.client_id, request.secret_ids, request.request_ref,
                                        request.org_pin, request.receipt_id, held.reserved_at)  # fmt: skip
            if draft_digest(rows, drafted) != digest:
                raise ConcurrentChange(STALE_PURGE)
            part = rows.parts[0]
            if len(fingerprints) != len(part.versions):
                raise AccessDenied(NOT_SIGNED, hint="draft again and sign what the draft shows")
            signed = dataclasses.replace(drafted, fingerprints=fingerprints, request_id=event.request.request_id)
            _verified(me.signing_public, signature, caller.vault_id, signed)
            s.delete(held)
            if PurgeAuthority._delete_secrets(s, part) != part.counts:
                raise IntegrityError("the secrets changed while they were purged: nothing was committed")
            if any(dataclasses.astuple(PurgeAuthority._survivors(s, SUBJECT, part))):
                raise IntegrityError("something of the purged secrets survives their deletion: nothing was committed")
            one = part.secret_ids[0] if len(part.secret_ids) == 1 else None  # as in-process
            stored = stored_receipt(s, signed, signature, me, event, self.clock, PURGE_SUBJECT, one)
        return dataclasses.replace(rows, receipts=(stored,))

    @staticmethod
    def _draft(
        s: Session, caller: CallerRead, client_id: int, secret_ids: tuple[int, ...], ref: str, pin: bytes,
        receipt_id: int, at: dt.datetime,
    ) -> tuple[PurgeRows, ReceiptRow]:  # fmt: skip
        """What the in-process seal admits (the secrets named that are still there), the unsigned receipt."""
        part = PurgeAuthority._secret_part(s, PurgeTarget(client_id, secret_ids), strict=False)
        if not part.secret_ids:
            raise NotFound(NOTHING_MATCHES)
        chain = org_chain(s, pin, caller.org_signing_public)
        me = caller.me
        rows = PurgeRows(caller.vault_id, caller.org_signing_public, chain, me, SUBJECT, (part,))
        receipt = ReceiptRow(receipt_id, SUBJECT, ref, client_id, part.secret_ids, part.counts, (), me.id,
                             me.key_generation, int(at.timestamp()), 0, b"")  # fmt: skip
        return rows, receipt


def _size(client: SubjectClient) -> int:
    """About what a client weighs in a search page (its blobs)."""
    keys = sum(len(k.blob or b"") for k in client.keys)
    return (
        len(client.slug_blob)
        + len(client.name_blob)
        + keys
        + sum(len(v.wrapped_dek) + len(v.metadata_blob) for v in client.versions)
    )


def _checked(caller: object, pin: object, client_id: object, secret_ids: object, ref: object) -> None:
    """A subject purge's fields, of their types and ranges, before any SQL."""
    checked_caller(caller)
    checked_pin(pin)
    validation.number("client id", client_id, 1)
    if not isinstance(secret_ids, tuple) or not secret_ids or len(secret_ids) > MAX_SECRETS:
        raise InvalidInput("a subject purge names at least one secret of the client")
    for secret_id in secret_ids:
        validation.number("secret id", secret_id, 1)
    if list(secret_ids) != sorted(set(secret_ids)):
        raise InvalidInput("the secret ids are not one each, in order")
    if not isinstance(ref, str) or not REQUEST_REF.fullmatch(ref):
        raise InvalidInput("bad request reference")
