"""An admin's client purge through the team server, where the database is: a draft, a commit.

docs/server.md §4 rule 2 (the values: ``purge_draft_values.py``). The checks and rows are the
in-process purges authority's (``PurgeAuthority``: the caller first — an active, certified admin,
before any row of the client is read —, what a client purge destroys, the deletes, what survives,
the receipt), driven in another order:

* ``client_draft`` — one write unit: the caller; the client the id names, which must be the one
  its slug tag names (else 400); expired reservations deleted; the next id of the receipts'
  sequence reserved for the caller (``id_reservations`` kind ``purge-receipt``, five minutes);
  the ``PurgeRows`` the in-process seal admits and the receipt that will be stored (dated by the
  reservation, no fingerprints, no event), with their digest. No event: nothing is destroyed.
* ``client`` — the commit, one write unit: the request's nonce first; the caller; the reservation
  (the caller's, unexpired, then deleted); the client and its slug tag again; the draft and the
  receipt recomputed and their digest compared (``STALE_PURGE``, 409, nothing written); then,
  before anything is deleted, the fingerprints must be those of the client's key records and the
  receipt's signature must verify under the caller's certified signing key over this receipt and
  this request's id (``LABEL_SIG_RECEIPT_V3``; else ``AccessDenied``, 403: what the server would
  store is not what this admin signed). Only then every row of the client is deleted (its server
  client keys with them: the server's layer for the client is destroyed), what survives is
  counted (anything: refused, nothing committed), and the receipt and the format-3
  ``purge-client`` event (its public facts as in-process) are written in the same unit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable

from sqlalchemy import delete, text
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.checkout_reads import CallerRead
from vault.authority.clients import tag
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.purge import PurgeAuthority, receipt_row
from vault.authority.purge_draft_values import (
    PURGE_CLIENT,
    RESERVATION_SECONDS,
    RESERVED_RECEIPT_ID,
    STALE_PURGE,
    PurgeClientCommit,
    PurgeClientDraftRequest,
    PurgeDraft,
    draft_digest,
)
from vault.authority.purge_requests import (
    CLIENT,
    MISSING_CLIENT,
    REQUEST_REF,
    PurgeRows,
    ReceiptRow,
    counts_json,
    receipt_fields_v3,
)
from vault.authority.serverjournal import ServerJournal
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_RECEIPT_V3
from vault.errors import AccessDenied, ConcurrentChange, IntegrityError, InvalidInput, NotFound, UntrustedRecord
from vault.storage import models as m
from vault.storage import rows as storage_rows
from vault.storage.engine import Store

DIGEST_BYTES = 32
SIGNATURE_BYTES = 64
KEY_FINGERPRINT = re.compile(r"[0-9a-f]+")  # a client-key record's fingerprint, in hex (compared with it after)
NOT_SIGNED = "the commit carries a receipt the calling admin did not sign for this purge"
OTHER_CLIENT = "the request's client id is not the client its slug tag names"
NEXT_ID_PG = text("SELECT nextval(pg_get_serial_sequence('purge_receipts', 'id'))")
BUMP_ID_SQLITE = text("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'purge_receipts' RETURNING seq")
FIRST_ID_SQLITE = text(
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'purge_receipts', coalesce(max(id), 0) + 1 "
    "FROM purge_receipts RETURNING seq"
)


def next_receipt_id(s: Session) -> int:
    """An id of the receipts' sequence, never handed out again (as ``next_grant_id``)."""
    conn = storage_rows.connection(s)
    if conn.dialect.name == "sqlite":
        bumped = conn.execute(BUMP_ID_SQLITE).scalar()
        return int(bumped if bumped is not None else conn.execute(FIRST_ID_SQLITE).scalar_one())
    return int(conn.execute(NEXT_ID_PG).scalar_one())


class PurgeDraftAuthority:
    """Drafts and commits of an admin's client purge (module docstring)."""

    def __init__(self, store: Store, checks: CallerChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.checks, self.clock = store, checks, clock
        self.gate = CallerGate(checks)
        self.purges = PurgeAuthority(store, checks, _NoRecorder(), clock)  # its reads and deletes

    def __repr__(self) -> str:
        return "PurgeDraftAuthority()"

    def client_draft(self, request: PurgeClientDraftRequest) -> PurgeDraft:
        if not isinstance(request, PurgeClientDraftRequest):
            raise InvalidInput("not a purge draft request")
        _checked(
            request.kind, request.caller, request.org_pin, request.slug_tag, request.client_id, request.request_ref
        )
        with self.store.transaction() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)  # before any row of the client
            self._client(s, request.client_id, request.slug_tag)
            now = self.clock()
            s.execute(delete(m.IdReservation).where(m.IdReservation.expires_at <= now))
            receipt_id = next_receipt_id(s)
            expires = now + dt.timedelta(seconds=RESERVATION_SECONDS)
            s.add(m.IdReservation(kind=RESERVED_RECEIPT_ID, id=receipt_id, engineer_id=caller.me.id, reserved_at=now,
                                  expires_at=expires))  # fmt: skip
            rows, receipt = self._draft(s, caller, request.client_id, request.request_ref, request.org_pin,
                                        receipt_id, now)  # fmt: skip
        return PurgeDraft(rows, receipt, draft_digest(rows, receipt), expires)

    def client(self, request: PurgeClientCommit, event: ServerEvent) -> PurgeRows:
        if not isinstance(request, PurgeClientCommit):
            raise InvalidInput("not a purge commit")
        if request.action != PURGE_CLIENT:
            raise InvalidInput(f"the request's action is not {PURGE_CLIENT!r}")
        _checked(CLIENT, request.caller, request.org_pin, request.slug_tag, request.client_id, request.request_ref)
        validation.number("receipt id", request.receipt_id, 1)
        digest, signature, fingerprints = request.draft_digest, request.signature, request.fingerprints
        checked_signed(digest, signature, fingerprints, KEY_FINGERPRINT)
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # a second in-flight copy waits here, then fails as replayed
            caller = self.gate.authorise(s, request.caller, admin=True)
            me, now = caller.me, self.clock()
            held = held_receipt(s, request.receipt_id, me.id, now)
            self._client(s, request.client_id, request.slug_tag)
            rows, drafted = self._draft(s, caller, request.client_id, request.request_ref, request.org_pin,
                                        request.receipt_id, held.reserved_at)  # fmt: skip
            if draft_digest(rows, drafted) != digest:
                raise ConcurrentChange(STALE_PURGE)
            part = rows.parts[0]
            if fingerprints != tuple(r.fingerprint.hex() for r in part.key_records):
                raise AccessDenied(NOT_SIGNED, hint="draft again and sign what the draft shows")
            signed = dataclasses.replace(drafted, fingerprints=fingerprints, request_id=event.request.request_id)
            _verified(me.signing_public, signature, caller.vault_id, signed)
            s.delete(held)
            PurgeAuthority._delete_client(s, part.client_id)
            if any(dataclasses.astuple(PurgeAuthority._survivors(s, CLIENT, part))):
                raise IntegrityError("something of the purged client survives its deletion: nothing was committed")
            stored = stored_receipt(s, signed, signature, me, event, self.clock, PURGE_CLIENT)
        return dataclasses.replace(rows, receipts=(stored,))

    @staticmethod
    def _client(s: Session, client_id: int, slug_tag: bytes) -> None:
        client = s.get(m.Client, client_id)
        if client is None:
            raise NotFound(MISSING_CLIENT)
        if client.slug_tag != slug_tag:
            raise InvalidInput(OTHER_CLIENT)

    def _draft(
        self, s: Session, caller: CallerRead, client_id: int, ref: str, pin: bytes, receipt_id: int, at: dt.datetime
    ) -> tuple[PurgeRows, ReceiptRow]:
        """What the in-process seal admits, and the receipt (unsigned) the commit will store."""
        part = self.purges._client_part(s, client_id)
        chain = org_chain(s, pin, caller.org_signing_public)
        me = caller.me
        rows = PurgeRows(caller.vault_id, caller.org_signing_public, chain, me, CLIENT, (part,))
        receipt = ReceiptRow(receipt_id, CLIENT, ref, client_id, part.secret_ids, part.counts, (), me.id,
                             me.key_generation, int(at.timestamp()), 0, b"")  # fmt: skip
        return rows, receipt


def checked_signed(digest: object, signature: object, fingerprints: object, fingerprint: re.Pattern[str]) -> None:
    """A purge commit's draft digest, receipt signature and fingerprints, of their types and sizes (400
    otherwise, before any SQL); each fingerprint must match ``fingerprint``."""
    if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        raise InvalidInput(f"the commit's draft digest is not a {DIGEST_BYTES}-byte value")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise InvalidInput("the receipt's signature is not a signature")
    if not isinstance(fingerprints, tuple) or not all(
        isinstance(f, str) and fingerprint.fullmatch(f) for f in fingerprints
    ):
        raise InvalidInput("the receipt's fingerprints are not the fingerprints a receipt names")


def held_receipt(s: Session, receipt_id: int, engineer_id: int, now: dt.datetime) -> m.IdReservation:
    """The caller's unexpired reservation of ``receipt_id`` (locked), else ``ConcurrentChange``: the draft
    went stale (it expired, or is another admin's)."""
    held = s.get(m.IdReservation, (RESERVED_RECEIPT_ID, receipt_id), with_for_update=True)
    if held is None or held.engineer_id != engineer_id or held.expires_at <= now:
        raise ConcurrentChange(STALE_PURGE)
    return held


def stored_receipt(
    s: Session,
    signed: ReceiptRow,
    signature: bytes,
    me: storage_rows.EngineerRow,
    event: ServerEvent,
    clock: Callable[[], dt.datetime],
    action: str,
    secret_id: int | None = None,
) -> ReceiptRow:
    """The signed receipt stored and its format-3 ``action`` event (public facts: the receipt, the
    request, the counts) appended in ``s``, the receipt naming the event; as ``receipt_row`` reads it."""
    row = m.PurgeReceipt(
        id=signed.id, kind=signed.kind, request_ref=signed.request_ref, client_id=signed.client_id,
        secret_ids=json.dumps(list(signed.secret_ids)), counts=counts_json(signed.counts),
        fingerprints=json.dumps(list(signed.fingerprints)),
        admin_id=me.id, admin_generation=me.key_generation, purged_at=signed.purged_at, event_seq=0,
        signature=signature, request_id=signed.request_id,
    )  # fmt: skip
    s.add(row)
    s.flush()
    public = {"receipt": row.id, "request": signed.request_ref, "counts": dict(signed.counts)}
    appended = ServerJournal(UnitCore(clock), event.seal).append(
        s, action, event.request, engineer_id=me.id, key_generation=me.key_generation,
        client_id=signed.client_id, secret_id=secret_id, public=public,
    )  # fmt: skip
    row.event_seq = int(appended.seq)
    s.flush()
    return receipt_row(row, signed.counts, signed.fingerprints, signature, admin=me.name)


def _checked(kind: object, caller: object, pin: object, slug_tag: object, client_id: object, ref: object) -> None:
    """A client purge's fields, of their types and ranges, before any SQL."""
    if kind != CLIENT:
        raise InvalidInput("through the team server a purge is of a whole client")
    checked_caller(caller)
    checked_pin(pin)
    tag("slug tag", slug_tag)
    validation.number("client id", client_id, 1)
    if not isinstance(ref, str) or not REQUEST_REF.fullmatch(ref):
        raise InvalidInput("bad request reference")


def _verified(public: bytes | None, signature: bytes, vault_id: bytes, receipt: ReceiptRow) -> None:
    """``signature`` by the caller's key over ``receipt`` (format 3: its request id), else AccessDenied."""
    if public is None:
        raise AccessDenied(NOT_SIGNED)
    try:
        signing.verify(
            public, signature, LABEL_SIG_RECEIPT_V3, *receipt_fields_v3(vault_id, receipt), what="the commit"
        )
    except UntrustedRecord:
        raise AccessDenied(NOT_SIGNED, hint="draft again and sign what the draft shows") from None


class _NoRecorder:
    """The in-process journal's place: through the server every event is format 3 (``ServerEvent``)."""

    def append(self, *_: object, **__: object) -> int:
        raise InvalidInput("the team server appends format-3 events only")
