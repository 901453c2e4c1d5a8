"""An admin's grant and revoke through the team server, where the database is: drafts, commits.

docs/server.md §4 rule 2 (the values: ``grant_draft_requests.py``). The checks and rows are
the in-process grants authority's (``GrantAuthority``: who calls — an active, certified
admin, before any row of the engineer or the client is read —, the engineer by name with
their row locked, the client by its slug tag, the unrevoked rows of their ledger, the draft
the keyholder is shown, the writes and the answer), driven in another order:

* ``grant_draft`` — one write unit: the caller, the engineer (certified, active, not an
  admin), the client, expired reservations deleted, the next id of the grants' sequence
  reserved for the caller; the draft of the new grant (dated by the reservation) with each
  client-key record and its recovery copy. No event.
* ``revoke_draft`` — one unit: the caller, the engineer, the client, the unrevoked rows
  (none: ``NO_GRANT``), dated now. No event, nothing written.
* ``grant`` / ``revoke`` — the commit, one write unit: the request's nonce first; the caller;
  the engineer's row locked; the client, which must be the one the signed body names; the
  reservation (a grant: the caller's, unexpired, then deleted); the draft recomputed and its
  digest compared (``STALE_GRANT``, 409, nothing written); then, before any write, every
  signature the commit carries verified under the caller's certified signing key: each
  revocation, and the grant's (format 3, over this request's id and the engineer's current
  sealing key); the copies exactly the client-key versions of the draft. Only then the rows
  are written and the format-3 ``grant`` / ``revoke`` event appended (the keyholder's details
  sealed to the request id, the server's facts public), in the same unit.

A signature that does not verify is ``AccessDenied`` (403): what the server would store is not
what this admin signed. The keyholder checks the answer as it checks the in-process one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.checkout_reads import ACTIVE, CallerRead
from vault.authority.clients import checked_action, checked_caller, sealed_keys, tag
from vault.authority.grant_draft_requests import (
    RESERVATION_SECONDS,
    RESERVED_GRANT_ID,
    REVOKED_AT_SLACK,
    STALE_GRANT,
    GrantCommit,
    GrantDraft,
    GrantDraftRequest,
    RevokeCommit,
    RevokeDraftRequest,
    draft_digest,
)
from vault.authority.grant_requests import GRANT, NO_GRANT, REVOKE, GrantRows, SealedCopy, revocation_fields
from vault.authority.grant_signatures import grant_fields, grant_label
from vault.authority.grants import GrantAuthority
from vault.authority.serverjournal import ServerJournal
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_GRANT_REVOCATION
from vault.errors import AccessDenied, ConcurrentChange, InvalidInput, NotFound, UntrustedRecord
from vault.storage import models as m
from vault.storage import rows
from vault.storage.rows import ROLE_ADMIN, EngineerRow, GrantRow, is_revoked

NEXT_ID_PG = text("SELECT nextval(pg_get_serial_sequence('grants', 'id'))")
BUMP_ID_SQLITE = text("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'grants' RETURNING seq")
FIRST_ID_SQLITE = text(
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'grants', coalesce(max(id), 0) + 1 FROM grants RETURNING seq"
)
DIGEST_BYTES = 32
SIGNATURE_BYTES = 64
NOT_SIGNED = "the commit carries a signature the calling admin did not make for this draft"


def next_grant_id(s: Session) -> int:
    """An id of the grants' sequence, never handed out again (as ``SecretDraftAuthority``'s)."""
    conn = rows.connection(s)
    if conn.dialect.name == "sqlite":
        bumped = conn.execute(BUMP_ID_SQLITE).scalar()
        return int(bumped if bumped is not None else conn.execute(FIRST_ID_SQLITE).scalar_one())
    return int(conn.execute(NEXT_ID_PG).scalar_one())


def _bytes(label: str, value: object, size: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (size is not None and len(value) != size) or not value:
        raise InvalidInput(f"the commit's {label} is not a {size or 'non-empty'}-byte value")
    return value


def _verified(public: bytes | None, signature: bytes, label: bytes, *fields: signing.ContextItem) -> None:
    """``signature`` by the caller's key over ``fields``, else AccessDenied (nothing written)."""
    if public is None:
        raise AccessDenied(NOT_SIGNED)
    try:
        signing.verify(public, signature, label, *fields, what="the commit")
    except UntrustedRecord:
        raise AccessDenied(NOT_SIGNED, hint="draft again and sign what the draft shows") from None


class GrantDraftAuthority:
    """Drafts and commits of an admin's grant and revoke, over the grants authority's checks and rows."""

    def __init__(self, grants: GrantAuthority) -> None:
        self.grants = grants
        self.store, self.checks, self.clock = grants.store, grants.checks, grants.clock

    def __repr__(self) -> str:
        return "GrantDraftAuthority()"

    # -- grant --------------------------------------------------------------------------------

    def grant_draft(self, request: GrantDraftRequest) -> GrantDraft:
        """Reserve the new grant's id and draft it (module docstring)."""
        if not isinstance(request, GrantDraftRequest):
            raise InvalidInput("not a grant draft")
        caller, name = self._checked(request.caller, request.org_pin, request.engineer, request.slug_tag)
        g = self.grants
        with self.store.transaction() as s:
            read = g._admin(s, caller)
            target, client, ledger = self._grant_target(s, name, request.slug_tag)
            now = self.clock()
            self._until(request.until, now)
            s.execute(delete(m.IdReservation).where(m.IdReservation.expires_at <= now))
            grant_id = next_grant_id(s)
            expires = now + dt.timedelta(seconds=RESERVATION_SECONDS)
            s.add(m.IdReservation(kind=RESERVED_GRANT_ID, id=grant_id, engineer_id=read.me.id, reserved_at=now,
                                  expires_at=expires))  # fmt: skip
            draft = self._grant_rows(s, read, request.org_pin, target, client, ledger, grant_id, request.until, now)
        return GrantDraft(draft, draft_digest(draft), expires)

    def grant(self, request: GrantCommit, event: ServerEvent) -> GrantRows:
        """Store the grant the caller signed for the draft, if the draft still holds."""
        if not isinstance(request, GrantCommit):
            raise InvalidInput("not a grant commit")
        checked_action(request.action, GRANT)
        caller, name = self._checked(request.caller, request.org_pin, request.engineer, request.slug_tag)
        digest = _bytes("draft digest", request.draft_digest, DIGEST_BYTES)
        signature = _bytes("grant signature", request.signature, SIGNATURE_BYTES)
        sealed = self._sealed(request.details_key_version, request.details_blob)
        g = self.grants
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # kept only if the unit commits
            read = g._admin(s, caller)
            target, client, ledger = self._grant_target(s, name, request.slug_tag)
            self._same_client(client, request.client_id)
            now = self.clock()
            self._until(request.until, now)
            held = s.get(m.IdReservation, (RESERVED_GRANT_ID, request.grant_id), with_for_update=True)
            if held is None or held.engineer_id != read.me.id or held.expires_at <= now:
                raise ConcurrentChange(STALE_GRANT)
            at = held.reserved_at
            draft = self._grant_rows(s, read, request.org_pin, target, client, ledger, request.grant_id,
                                     request.until, at)  # fmt: skip
            if draft_digest(draft) != digest:
                raise ConcurrentChange(STALE_GRANT)
            assert draft.new_grant is not None
            new = draft.new_grant._replace(signature=signature, request_id=event.request.request_id)
            public = read.me.signing_public
            _verified(public, signature, grant_label(new), *grant_fields(read.vault_id, new, target.sealing_public))
            self._check_revocations(read, draft, request.revocations)
            copies = self._checked_copies(draft, request.copies)
            # verified: now written, as in-process
            s.delete(held)
            old = [grant for grant in ledger if not is_revoked(grant)]
            g._revoke(old, request.revocations, at, read.me.id)
            grant = m.Grant(**new._asdict(), created_at=at)
            s.add(grant)
            for copy in copies:
                g._store_copy(s, client.id, copy, target.id)
            s.flush()
            facts = {"engineer": name, "until": new.until, "grant": new.id, "seq": new.seq}
            grant.event_seq = self._append(s, event, GRANT, read, client.id, sealed, facts)
            s.flush()
            return g._answer(s, draft, grant.event_seq, [r.id for r in old], grant, at)

    def _grant_target(self, s: Session, name: str, slug_tag: bytes) -> tuple[EngineerRow, m.Client, list[m.Grant]]:
        """The engineer named (row locked; certified, active, not an admin), the client, their ledger."""
        g = self.grants
        target = g._engineer(s, name)
        self.checks.certificate(s, target)  # a swapped public key is refused here
        if target.status != ACTIVE:
            raise InvalidInput(f"engineer {name!r} is {target.status}, not active")
        if target.role == ROLE_ADMIN:
            raise InvalidInput(f"{name!r} is an admin and can already read every client")
        client = g._client(s, slug_tag)
        return target, client, g._ledger(s, target.id, client.id)

    def _grant_rows(
        self, s: Session, read: CallerRead, pin: bytes, target: EngineerRow, client: m.Client, ledger: list[m.Grant],
        grant_id: int, until: int | None, at: dt.datetime,
    ) -> GrantRows:  # fmt: skip
        """The draft of grant ``grant_id`` (not stored), dated ``at``: as the in-process seal sees it."""
        new = GrantRow(grant_id, target.id, client.id, read.me.id, int(at.timestamp()), until, None,
                       max((r.seq or 0 for r in ledger), default=0) + 1, None, None, None, None)  # fmt: skip
        versions = s.scalars(
            select(m.ClientKey.version).where(m.ClientKey.client_id == client.id, m.ClientKey.state != "destroyed")
        ).all()
        keys = sealed_keys(s, {(client.id, v) for v in versions}, "recovery", read.root_version or 0)
        old = [r for r in ledger if not is_revoked(r)]
        return self.grants._draft(s, read, pin, target, client, old, at, new, keys)

    @staticmethod
    def _checked_copies(draft: GrantRows, copies: object) -> tuple[SealedCopy, ...]:
        wanted = {k.record.version for k in draft.client_keys}
        if (
            not isinstance(copies, tuple)
            or not all(isinstance(c, SealedCopy) and isinstance(c.blob, bytes) and c.blob for c in copies)
            or sorted(c.version for c in copies) != sorted(wanted)
        ):
            raise InvalidInput("the commit does not seal to the engineer exactly the client keys the draft hands out")
        return copies

    # -- revoke -------------------------------------------------------------------------------

    def revoke_draft(self, request: RevokeDraftRequest) -> GrantDraft:
        """The unrevoked rows of the engineer's ledger for the client, dated now (no write)."""
        if not isinstance(request, RevokeDraftRequest):
            raise InvalidInput("not a revoke draft")
        caller, name = self._checked(request.caller, request.org_pin, request.engineer, request.slug_tag)
        g = self.grants
        with self.store.transaction() as s:
            read = g._admin(s, caller)
            target, client, grants = self._revoke_target(s, name, request.slug_tag)
            draft = g._draft(s, read, request.org_pin, target, client, grants, self.clock(), None, ())
        return GrantDraft(draft, draft_digest(draft), None)

    def revoke(self, request: RevokeCommit, event: ServerEvent) -> GrantRows:
        """Revoke the draft's rows with the caller's signatures, if the draft still holds."""
        if not isinstance(request, RevokeCommit):
            raise InvalidInput("not a revoke commit")
        checked_action(request.action, REVOKE)
        caller, name = self._checked(request.caller, request.org_pin, request.engineer, request.slug_tag)
        digest = _bytes("draft digest", request.draft_digest, DIGEST_BYTES)
        sealed = self._sealed(request.details_key_version, request.details_blob)
        at = request.revoked_at
        if not isinstance(at, dt.datetime) or at.tzinfo is None:
            raise InvalidInput("the commit's revocation time is not a time")
        g = self.grants
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)
            read = g._admin(s, caller)
            target, client, grants = self._revoke_target(s, name, request.slug_tag)
            self._same_client(client, request.client_id)
            if abs((at - self.clock()).total_seconds()) > REVOKED_AT_SLACK:
                raise ConcurrentChange(STALE_GRANT)
            draft = g._draft(s, read, request.org_pin, target, client, grants, at, None, ())
            if draft_digest(draft) != digest:
                raise ConcurrentChange(STALE_GRANT)
            self._check_revocations(read, draft, request.revocations)
            g._revoke(grants, request.revocations, at, read.me.id)
            s.execute(
                delete(m.ClientKeySeal).where(
                    m.ClientKeySeal.client_id == client.id,
                    m.ClientKeySeal.recipient_kind == "engineer",
                    m.ClientKeySeal.recipient_id == target.id,
                )
            )
            ids = [r.id for r in grants]
            seq = self._append(s, event, REVOKE, read, client.id, sealed,
                               {"engineer": name, "grants": len(ids), "grant_ids": ids})  # fmt: skip
            s.flush()
            return g._answer(s, draft, seq, ids, None, None)

    def _revoke_target(self, s: Session, name: str, slug_tag: bytes) -> tuple[EngineerRow, m.Client, list[m.Grant]]:
        g = self.grants
        target = g._engineer(s, name)
        client = g._client(s, slug_tag)
        grants = [r for r in g._ledger(s, target.id, client.id) if not is_revoked(r)]
        if not grants:
            raise NotFound(NO_GRANT)
        return target, client, grants

    # -- shared ---------------------------------------------------------------------------------

    def _checked(self, caller: object, pin: object, engineer: object, slug_tag: object) -> tuple[Any, str]:
        checked = checked_caller(caller, pin)
        name = self.grants._name(engineer)
        tag("slug tag", slug_tag)
        return checked, name

    @staticmethod
    def _until(until: object, now: dt.datetime) -> None:
        if until is not None:
            validation.number("grant end", until, 1)
            assert isinstance(until, int)
            if until <= int(now.timestamp()):
                raise InvalidInput("the grant's --until time is in the past")

    @staticmethod
    def _sealed(version: object, blob: object) -> tuple[int, bytes]:
        validation.number("audit key version", version, 1)
        assert isinstance(version, int)
        return version, _bytes("sealed details", blob)

    @staticmethod
    def _same_client(client: m.Client, named: object) -> None:
        if type(named) is not int or named != client.id:
            raise InvalidInput("the commit names another client than the one its slug tag finds")

    @staticmethod
    def _check_revocations(read: CallerRead, draft: GrantRows, signatures: object) -> None:
        """Each revocation the commit carries: the caller's, of the draft's row, at its time."""
        if not isinstance(signatures, tuple) or len(signatures) != len(draft.grants):
            raise InvalidInput("the commit carries another number of revocations than the draft has rows")
        for row, signature in zip(draft.grants, signatures, strict=True):
            revoked = row._replace(revoked_at=draft.revoked_at, revoked_by=read.me.id)
            signed = _bytes("revocation", signature, SIGNATURE_BYTES)
            _verified(read.me.signing_public, signed, LABEL_SIG_GRANT_REVOCATION,
                      *revocation_fields(read.vault_id, revoked))  # fmt: skip

    def _append(
        self, s: Session, event: ServerEvent, action: str, read: CallerRead, client_id: int,
        sealed: tuple[int, bytes], facts: dict[str, Any],
    ) -> int:  # fmt: skip
        """The request's format-3 event: the admin's details sealed to its id, the server's facts public."""
        me = read.me
        version, blob = sealed
        row = ServerJournal(UnitCore(self.clock), event.seal).append(
            s, action, event.request, engineer_id=me.id, key_generation=me.key_generation, client_id=client_id,
            key_version=version, details_blob=blob, public=dict(facts),
        )  # fmt: skip
        s.flush()
        return int(row.seq)
