"""An admin's purge of one secret through the team server, where the database is: a draft, a commit.

docs/server.md §4 rule 2 (the values: ``purge_secret_values.py``). The checks and rows are the
in-process purges authority's (``PurgeAuthority``: the caller first — an active, certified admin,
before any row of the client is read —, what a secret's purge destroys, the deletes, what
survives), driven as a client's purge through the server (``purge_drafts.py``) is:

* ``secret_draft`` — one write unit: the request's nonce; the caller; the client its id names,
  which must be the one its slug tag names (else 400); the secret its name tag names in that
  client (else 404); expired reservations deleted and the receipt's id reserved for the caller
  (``id_reservations`` kind ``purge-receipt``, five minutes); the ``PurgeRows`` the in-process
  seal admits (every version's wrapped data key), the receipt that will be stored (dated by the
  reservation, unsigned) and their digest; and the format-3 ``purge-secret-draft`` event, in the
  same unit, before the route removes the server's layer from what it answers.
* ``secret`` — the commit, one write unit: the nonce; the caller; the reservation (the caller's,
  unexpired, then deleted); the client and its slug tag again; the secret, which must be the
  client's (else 404: a secret of another client than the one drafted); the draft and receipt
  recomputed and their digest compared (``STALE_PURGE``, 409); then, before anything is deleted,
  one fingerprint per version drafted and the receipt's signature under the caller's certified
  key over this receipt and this request's id (else 403). The server holds no client key: it
  cannot recompute a data key's fingerprint, only that the admin signed these. Only then the
  secret's checkouts, versions (their layered data keys with them) and row are deleted, what
  survives is counted (anything: refused, nothing committed), and the receipt and the format-3
  ``purge-secret`` event are written in the same unit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.checkout_reads import CallerRead
from vault.authority.clients import tag
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.purge import PurgeAuthority
from vault.authority.purge_draft_values import RESERVATION_SECONDS, RESERVED_RECEIPT_ID, STALE_PURGE, draft_digest
from vault.authority.purge_drafts import (
    NOT_SIGNED,
    PurgeDraftAuthority,
    _verified,
    checked_signed,
    held_receipt,
    next_receipt_id,
    stored_receipt,
)
from vault.authority.purge_requests import (
    NOTHING_MATCHES,
    REQUEST_REF,
    SECRET,
    PurgePart,
    PurgeRows,
    PurgeTarget,
    ReceiptRow,
)
from vault.authority.purge_secret_values import (
    PURGE_SECRET,
    PURGE_SECRET_DRAFT,
    PurgeSecretCommit,
    PurgeSecretDraft,
    PurgeSecretDraftRequest,
)
from vault.authority.serverjournal import ServerJournal
from vault.errors import AccessDenied, ConcurrentChange, IntegrityError, InvalidInput, NotFound
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import VersionRow

DIGEST_BYTES = 32
SIGNATURE_BYTES = 64
FINGERPRINT = re.compile(r"[0-9a-f]{32}")  # a data key's (keyholder/purge.py ``_data_key_fingerprint``)


class SecretPurgeDraftAuthority:
    """Drafts and commits of an admin's purge of one secret (module docstring)."""

    def __init__(self, store: Store, checks: CallerChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.clock = store, clock
        self.gate = CallerGate(checks)

    def __repr__(self) -> str:
        return "SecretPurgeDraftAuthority()"

    def secret_draft(self, request: PurgeSecretDraftRequest, event: ServerEvent) -> PurgeSecretDraft:
        """The draft, on record as its ``purge-secret-draft`` event (its data keys still layered)."""
        if not isinstance(request, PurgeSecretDraftRequest) or request.action != PURGE_SECRET_DRAFT:
            raise InvalidInput("not a secret purge draft request")
        _checked(request.caller, request.org_pin, request.slug_tag, request.client_id, request.request_ref)
        tag("name tag", request.name_tag)
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)
            caller = self.gate.authorise(s, request.caller, admin=True)  # before any row of the client
            PurgeDraftAuthority._client(s, request.client_id, request.slug_tag)
            secret = s.scalars(
                select(m.Secret).where(m.Secret.client_id == request.client_id, m.Secret.name_tag == request.name_tag)
            ).first()
            if secret is None:
                raise NotFound(NOTHING_MATCHES)
            now = self.clock()
            s.execute(delete(m.IdReservation).where(m.IdReservation.expires_at <= now))
            receipt_id = next_receipt_id(s)
            expires = now + dt.timedelta(seconds=RESERVATION_SECONDS)
            s.add(m.IdReservation(kind=RESERVED_RECEIPT_ID, id=receipt_id, engineer_id=caller.me.id, reserved_at=now,
                                  expires_at=expires))  # fmt: skip
            rows, receipt = self._draft(s, caller, request.client_id, secret.id, request.request_ref,
                                        request.org_pin, receipt_id, now)  # fmt: skip
            current = s.get(m.SecretVersion, (secret.id, secret.current_version))
            if current is None:
                raise IntegrityError("the secret has no current version")
            shown = VersionRow(current.version, current.key_version, current.wrapped_dek, b"", current.metadata_blob)
            me = caller.me
            public = {"receipt": receipt_id, "request": request.request_ref, "versions": len(rows.parts[0].versions)}
            appended = ServerJournal(UnitCore(self.clock), event.seal).append(
                s, PURGE_SECRET_DRAFT, event.request, engineer_id=me.id, key_generation=me.key_generation,
                client_id=request.client_id, secret_id=secret.id, public=public,
            )  # fmt: skip
            s.flush()
            seq = int(appended.seq)
        return PurgeSecretDraft(rows, receipt, draft_digest(rows, receipt), expires, shown, seq)

    def secret(self, request: PurgeSecretCommit, event: ServerEvent) -> PurgeRows:
        """Destroy the drafted secret, if everything holds (module docstring): its receipt as stored."""
        if not isinstance(request, PurgeSecretCommit) or request.action != PURGE_SECRET:
            raise InvalidInput("not a secret purge commit")
        _checked(request.caller, request.org_pin, request.slug_tag, request.client_id, request.request_ref)
        validation.number("secret id", request.secret_id, 1)
        validation.number("receipt id", request.receipt_id, 1)
        digest, signature, fingerprints = request.draft_digest, request.signature, request.fingerprints
        checked_signed(digest, signature, fingerprints, FINGERPRINT)
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # a second in-flight copy waits here, then fails as replayed
            caller = self.gate.authorise(s, request.caller, admin=True)
            me, now = caller.me, self.clock()
            held = held_receipt(s, request.receipt_id, me.id, now)
            PurgeDraftAuthority._client(s, request.client_id, request.slug_tag)
            rows, drafted = self._draft(s, caller, request.client_id, request.secret_id, request.request_ref,
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
                raise IntegrityError("the secret changed while it was purged: nothing was committed")
            if any(dataclasses.astuple(PurgeAuthority._survivors(s, SECRET, part))):
                raise IntegrityError("something of the purged secret survives its deletion: nothing was committed")
            stored = stored_receipt(s, signed, signature, me, event, self.clock, PURGE_SECRET, request.secret_id)
        return dataclasses.replace(rows, receipts=(stored,))

    @staticmethod
    def _draft(
        s: Session, caller: CallerRead, client_id: int, secret_id: int, ref: str, pin: bytes, receipt_id: int,
        at: dt.datetime,
    ) -> tuple[PurgeRows, ReceiptRow]:  # fmt: skip
        """What the in-process seal admits (the secret's versions as stored), and the unsigned receipt."""
        part: PurgePart = PurgeAuthority._secret_part(s, PurgeTarget(client_id, (secret_id,)), strict=True)
        chain = org_chain(s, pin, caller.org_signing_public)
        me = caller.me
        rows = PurgeRows(caller.vault_id, caller.org_signing_public, chain, me, SECRET, (part,))
        receipt = ReceiptRow(receipt_id, SECRET, ref, client_id, part.secret_ids, part.counts, (), me.id,
                             me.key_generation, int(at.timestamp()), 0, b"")  # fmt: skip
        return rows, receipt


def _checked(caller: object, pin: object, slug_tag: object, client_id: object, ref: object) -> None:
    """A secret purge's fields, of their types and ranges, before any SQL."""
    checked_caller(caller)
    checked_pin(pin)
    tag("slug tag", slug_tag)
    validation.number("client id", client_id, 1)
    if not isinstance(ref, str) or not REQUEST_REF.fullmatch(ref):
        raise InvalidInput("bad request reference")
