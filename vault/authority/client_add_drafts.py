"""A new client through the team server, where the database is: ``clients.add_draft``, ``clients.add``.

docs/server.md §4 rule 2. In-process the admin's keyholder makes the client inside the unit
that gave its row an id (``ClientAddSeal.make``); over HTTPS the id is reserved first:

* ``add_draft`` — one write unit: the caller (an active, certified admin), the vault's
  recovery key version, the slug tag still free, expired reservations deleted, the next id
  of the clients' sequence reserved for the caller (``id_reservations`` kind ``client``, five
  minutes); the ``AddDraft`` the in-process seal is shown (dated by the reservation) and its
  digest. No event: nothing of a client exists yet.
* ``add`` — the commit, one write unit: the nonce; the caller; the reservation (the caller's,
  unexpired, then deleted); the slug tag still free; the draft recomputed and its digest
  compared (``STALE_CLIENT``, 409, nothing written); the keyholder's ``NewClient`` checked as
  in-process (``client_add._checked``: its shapes, the key record's and the policy's signatures
  under the caller's certified key) and its audit-key ring (a client field under key version
  1); the rows stored; the format-3 ``client-create`` event, its details (the slug) sealed by
  the keyholder to the request id under that ring.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.checkout_reads import CallerRead
from vault.authority.client_add import BLOB_LIMIT, ClientAddAuthority, _checked, _policy
from vault.authority.client_add_values import (
    RESERVATION_SECONDS,
    RESERVED_CLIENT_ID,
    STALE_CLIENT,
    ClientCommit,
    ClientDraft,
    draft_digest,
)
from vault.authority.client_requests import (
    CLIENT_CREATE,
    DUPLICATE_CLIENT,
    NEW_CLIENT_FIELDS,
    AddAnswer,
    AddDraft,
    AddRequest,
)
from vault.authority.clients import authorise, checked_action, checked_caller, org_chain, tag
from vault.authority.requests import Caller
from vault.authority.root_lock import hold_root
from vault.authority.serverjournal import ServerJournal
from vault.crypto.blobs import blob_key_version
from vault.errors import AccessDenied, AlreadyExists, ConcurrentChange, InvalidInput, UntrustedRecord, VaultError
from vault.storage import models as m
from vault.storage import rows
from vault.storage.rows import ACTIVE, ROLE_ADMIN

NEXT_ID_PG = text("SELECT nextval(pg_get_serial_sequence('clients', 'id'))")
BUMP_ID_SQLITE = text("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'clients' RETURNING seq")
FIRST_ID_SQLITE = text(
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'clients', coalesce(max(id), 0) + 1 FROM clients RETURNING seq"
)


def _next_client_id(s: Session) -> int:
    conn = rows.connection(s)
    if conn.dialect.name == "sqlite":
        bumped = conn.execute(BUMP_ID_SQLITE).scalar()
        return int(bumped if bumped is not None else conn.execute(FIRST_ID_SQLITE).scalar_one())
    return int(conn.execute(NEXT_ID_PG).scalar_one())


class ClientAddDraftAuthority:
    """``clients.add`` as a draft and a commit (module docstring)."""

    def __init__(self, add: ClientAddAuthority) -> None:
        self.add_authority = add
        self.store, self.checks, self.clock = add.store, add.checks, add.clock

    def __repr__(self) -> str:
        return "ClientAddDraftAuthority()"

    def add_draft(self, request: AddRequest) -> ClientDraft:
        if not isinstance(request, AddRequest):
            raise InvalidInput("not a client add draft")
        checked_action(request.action, CLIENT_CREATE)
        caller = checked_caller(request.caller, request.org_pin)
        slug_tag = tag("slug tag", request.slug_tag)
        with self.store.transaction() as s:
            read = self._admin(s, caller)
            self._free(s, slug_tag)
            now = self.clock()
            s.execute(delete(m.IdReservation).where(m.IdReservation.expires_at <= now))
            client_id = _next_client_id(s)
            expires = now + dt.timedelta(seconds=RESERVATION_SECONDS)
            s.add(m.IdReservation(kind=RESERVED_CLIENT_ID, id=client_id, engineer_id=read.me.id, reserved_at=now,
                                  expires_at=expires))  # fmt: skip
            draft = self._draft(s, read, request.org_pin, client_id, now)
        return ClientDraft(draft, draft_digest(draft), expires)

    def add(self, request: ClientCommit, event: ServerEvent) -> AddAnswer:
        if not isinstance(request, ClientCommit):
            raise InvalidInput("not a client add commit")
        checked_action(request.action, CLIENT_CREATE)
        caller = checked_caller(request.caller, request.org_pin)
        slug_tag = tag("slug tag", request.slug_tag)
        for label, value in (("audit keys", request.audit_keys_blob), ("sealed details", request.details_blob)):
            if not isinstance(value, bytes) or not 0 < len(value) <= BLOB_LIMIT:
                raise InvalidInput(f"the commit's {label} is not a blob")
        if request.details_key_version != 1:
            raise InvalidInput("a new client's first event is sealed under its first audit key")
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)
            read = self._admin(s, caller)
            hold_root(s, read.root_version)  # against a root rotation's walk (root_lock.py)
            now = self.clock()
            held = s.get(m.IdReservation, (RESERVED_CLIENT_ID, request.client_id), with_for_update=True)
            if held is None or held.engineer_id != read.me.id or held.expires_at <= now:
                raise ConcurrentChange(STALE_CLIENT)
            self._free(s, slug_tag)
            draft = self._draft(s, read, request.org_pin, request.client_id, held.reserved_at)
            if draft_digest(draft) != request.draft_digest:
                raise ConcurrentChange(STALE_CLIENT)
            try:
                made = _checked(request.made, draft)
            except InvalidInput as error:
                raise AccessDenied(str(error)) from None  # not what this admin signed
            try:
                if blob_key_version(request.audit_keys_blob) != 1:
                    raise InvalidInput("the new client's audit keys are not under its first key version")
            except VaultError:
                raise InvalidInput("the new client's audit keys are not a client-field blob") from None
            s.delete(held)
            at = held.reserved_at
            s.add(m.Client(id=request.client_id, slug_tag=slug_tag, current_key_version=1, slug_blob=made.slug_blob,
                           name_blob=made.name_blob, lookup_key_blob=made.lookup_key_blob,
                           audit_keys_blob=request.audit_keys_blob, created_at=at))  # fmt: skip
            s.flush()
            s.add(m.ClientKey(client_id=request.client_id, version=1, state=ACTIVE, fingerprint=made.fingerprint,
                              signed_by=read.me.id, signed_at=made.signed_at, signature=made.key_signature,
                              encryptions=NEW_CLIENT_FIELDS, created_at=at))  # fmt: skip
            s.add(m.ClientKeySeal(client_id=request.client_id, version=1, recipient_kind="recovery",
                                  recipient_id=draft.root_version, blob=made.recovery_copy))  # fmt: skip
            s.add(_policy(draft, made, at))
            s.flush()
            me = read.me
            row = ServerJournal(UnitCore(self.clock), event.seal).append(
                s, CLIENT_CREATE, event.request, engineer_id=me.id, key_generation=me.key_generation,
                client_id=request.client_id, key_version=1, details_blob=request.details_blob,
            )  # fmt: skip
            s.flush()
            return ClientAddAuthority._answer(s, int(row.seq), request.client_id)

    def _admin(self, s: Session, caller: Caller) -> CallerRead:
        read = authorise(s, self.checks, caller)
        if read.me.role != ROLE_ADMIN:
            raise AccessDenied(f"{read.me.name!r} is not an admin", hint="ask an admin to do this")
        if read.root_version is None:
            raise UntrustedRecord("the vault has no active recovery key")
        return read

    @staticmethod
    def _free(s: Session, slug_tag: bytes) -> None:
        if s.scalars(select(m.Client.id).where(m.Client.slug_tag == slug_tag)).first() is not None:
            raise AlreadyExists(DUPLICATE_CLIENT)

    @staticmethod
    def _draft(s: Session, read: CallerRead, pin: bytes, client_id: int, at: dt.datetime) -> AddDraft:
        assert read.root_version is not None
        chain = org_chain(s, pin, read.org_signing_public)
        return AddDraft(read.vault_id, read.org_signing_public, chain, read.me, client_id, at, read.root_version)
