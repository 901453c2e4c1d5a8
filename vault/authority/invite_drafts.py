"""An admin's invitation through the team server, where the database is: a draft, a commit.

docs/server.md (session 13, helper B; the values ``invite_draft_values.py``). The checks and rows are
the in-process engineers authority's (``EngineerAuthority``: the caller first — an active, certified
admin of the key generation named —, their copy of the root bundle, the engineer by name, and
``issue_invitation``, which resets the row and stores what the keyholder signed), driven in
another order:

* ``invite_draft`` — one write unit: the caller; the engineer by name (one who exists and is not
  invited or enrolled: ``AlreadyExists``); for a new engineer, expired reservations deleted and the
  next id of the engineers' sequence reserved for the caller (``id_reservations`` kind ``engineer``,
  five minutes); the ``InvitationDraft`` the in-process seal is shown, and its digest. No event.
* ``invite`` — the commit, one write unit: the request's nonce first; the caller; a new engineer's
  reservation (the caller's, unexpired, then deleted) and its row made with that id, or the
  existing engineer's row (the id the draft named); then ``issue_invitation`` with a seal that
  compares the draft recomputed in the unit with the commit's digest (``STALE_INVITE``, 409) and
  verifies the invitation's signature under the caller's certified key over that draft and the
  commit's sealed secret (else ``AccessDenied``, 403: what the server would store is not what
  this admin signed), before the row is written and the format-3 ``engineer-invite`` event
  appended in the same unit.

The server never holds the invite secret: it stores it sealed to the recovery key and the public
key it derives (what the server checks an enrolment's proof against); the code is made on the
admin's machine and shown only there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.engineer_requests import (
    ENROLLED,
    INVITE,
    INVITED,
    ROLES,
    CarryPlan,
    EngineerAnswer,
    InvitationDraft,
    SignedInvitation,
)
from vault.authority.engineers import EngineerAuthority, EngineerChecks, checked_bytes, checked_name, engineer_row
from vault.authority.invite_draft_values import (
    RESERVATION_SECONDS,
    RESERVED_ENGINEER_ID,
    STALE_INVITE,
    InviteCommit,
    InviteDraft,
    draft_digest,
)
from vault.authority.policies_caller import checked_caller
from vault.authority.requests import Caller
from vault.authority.serverjournal import ServerJournal
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_INVITE
from vault.errors import AccessDenied, AlreadyExists, ConcurrentChange, InvalidInput, UntrustedRecord
from vault.storage import models as m
from vault.storage import rows as storage_rows
from vault.storage.engine import Store

KEY_BYTES, DIGEST_BYTES = 32, 32
NOT_SIGNED = "the commit carries an invitation the calling admin did not sign for this draft"
NEXT_ID_PG = text("SELECT nextval(pg_get_serial_sequence('engineers', 'id'))")
BUMP_ID_SQLITE = text("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'engineers' RETURNING seq")
FIRST_ID_SQLITE = text(
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'engineers', coalesce(max(id), 0) + 1 FROM engineers RETURNING seq"
)


def _next_engineer_id(s: Session) -> int:
    """An id of the engineers' sequence, never handed out again (as ``next_grant_id``)."""
    conn = storage_rows.connection(s)
    if conn.dialect.name == "sqlite":
        bumped = conn.execute(BUMP_ID_SQLITE).scalar()
        return int(bumped if bumped is not None else conn.execute(FIRST_ID_SQLITE).scalar_one())
    return int(conn.execute(NEXT_ID_PG).scalar_one())


def invite_fields(
    vault_id: bytes, draft: InvitationDraft, signed: SignedInvitation, root_version: int
) -> tuple[Any, ...]:
    """What an invitation's signature covers (docs/format.md §5; ``keyholder/invitations.invite_fields``)."""
    return (vault_id, draft.engineer_id, draft.name, draft.role, signed.prev_generation, root_version,
            draft.expires_at, signed.seal)  # fmt: skip


class InviteDraftAuthority:
    """Drafts and commits of an admin's invitation (module docstring)."""

    def __init__(self, store: Store, checks: EngineerChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.checks, self.clock = store, checks, clock
        self.engineers = self._authority(NoEvent())  # the draft's reads

    def _authority(self, recorder: Any) -> EngineerAuthority:
        return EngineerAuthority(self.store, self.checks, recorder, NoCarry(), self.clock)

    def __repr__(self) -> str:
        return "InviteDraftAuthority()"

    def invite_draft(self, request: Any) -> InviteDraft:
        from vault.authority.engineer_requests import InviteRequest

        if not isinstance(request, InviteRequest) or request.action != INVITE:
            raise InvalidInput("not an invite request")
        caller, name, role, expires_at, pin = _checked(request.caller, request.name, request.role,
                                                       request.expires_at, request.org_pin)  # fmt: skip
        with self.store.transaction() as s:
            identity = self.engineers.authorise(s, caller, org_pin=pin, admin=True)
            root = self.engineers.root_copy(s, identity.me)
            row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).first()
            reserved: dt.datetime | None = None
            if row is None:
                now = self.clock()
                s.execute(delete(m.IdReservation).where(m.IdReservation.expires_at <= now))
                engineer_id, generation, previous = _next_engineer_id(s), 0, None
                reserved = now + dt.timedelta(seconds=RESERVATION_SECONDS)
                s.add(m.IdReservation(kind=RESERVED_ENGINEER_ID, id=engineer_id, engineer_id=identity.me.id,
                                      reserved_at=now, expires_at=reserved))  # fmt: skip
            elif row.status not in (INVITED, ENROLLED):
                raise AlreadyExists(f"engineer {name!r} already exists ({row.status})")
            else:
                engineer_id, generation = row.id, row.key_generation
                previous = self.engineers._newest_key(s, row.id)
            draft = InvitationDraft(identity, root, engineer_id, name, role, generation, previous, expires_at)
        return InviteDraft(draft, draft_digest(draft), reserved)

    def invite(self, commit: InviteCommit, event: ServerEvent) -> EngineerAnswer:
        if not isinstance(commit, InviteCommit) or commit.action != INVITE:
            raise InvalidInput("not an invitation commit")
        caller, name, role, expires_at, pin = _checked(commit.caller, commit.name, commit.role,
                                                       commit.expires_at, commit.org_pin)  # fmt: skip
        digest = checked_bytes("draft digest", commit.draft_digest, DIGEST_BYTES)
        if not isinstance(commit.signed, SignedInvitation):
            raise InvalidInput("the commit carries no invitation")
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # a second in-flight copy waits here, then fails as replayed
            recorder = _EventRecorder(ServerJournal(UnitCore(self.clock), event.seal), event)
            engineers = self._authority(recorder)  # this unit's events: format 3, the signed request kept
            identity = engineers.authorise(s, caller, org_pin=pin, admin=True)
            me, now = identity.me, self.clock()
            recorder.me = (me.id, me.key_generation)
            root = engineers.root_copy(s, me)
            row = s.scalars(select(m.Engineer).where(m.Engineer.name == name).with_for_update()).first()
            if row is None:
                held = s.get(m.IdReservation, (RESERVED_ENGINEER_ID, commit.engineer_id), with_for_update=True)
                if held is None or held.engineer_id != me.id or held.expires_at <= now:
                    raise ConcurrentChange(STALE_INVITE)
                row = m.Engineer(id=commit.engineer_id, name=name, role=role, status=INVITED, key_generation=0,
                                 created_at=held.reserved_at)  # fmt: skip
                s.delete(held)
                s.add(row)
                s.flush()
            elif row.id != commit.engineer_id:
                raise ConcurrentChange(STALE_INVITE)
            elif row.status not in (INVITED, ENROLLED):
                raise AlreadyExists(f"engineer {name!r} already exists ({row.status})")
            seal = InviteCommitSeal(commit, digest, identity.vault_id, me.signing_public, me.id)
            seq = engineers.issue_invitation(s, identity, root, row, role, expires_at, seal)  # type: ignore[arg-type]
            return EngineerAnswer(seq, identity, engineer_row(row), row.created_at)


def _checked(caller: object, name: object, role: object, expires_at: object, pin: object) -> tuple[
    Caller, str, str, int, bytes
]:  # fmt: skip
    """An invitation's fields, of their types and ranges, before any SQL."""
    from vault import validation

    if role not in ROLES:
        raise InvalidInput(f"bad role {validation.shown(str(role))}", hint="use engineer, admin or service")
    assert isinstance(role, str)
    checked = validation.number("invitation expiry", expires_at, 1, 2**40)
    return checked_caller(caller), checked_name(name), role, checked, checked_bytes("organisation key", pin, KEY_BYTES)


class InviteCommitSeal:
    """``EngineerSeal.sign_invitation`` on the server: the commit's invitation, for the draft it was
    signed over (its digest) and under the caller's certified key (module docstring)."""

    def __init__(self, commit: InviteCommit, digest: bytes, vault_id: bytes, public: bytes | None, me: int) -> None:
        self.commit, self.digest, self.vault_id, self.public, self.me = commit, digest, vault_id, public, me

    def __repr__(self) -> str:
        return "InviteSeal()"

    def sign_invitation(self, draft: InvitationDraft) -> SignedInvitation:
        if draft_digest(draft) != self.digest:
            raise ConcurrentChange(STALE_INVITE)
        signed = self.commit.signed
        if signed.signed_by != self.me or self.public is None or not isinstance(signed.seal, bytes):
            raise AccessDenied(NOT_SIGNED)
        if not isinstance(signed.prev_generation, int) or not isinstance(signed.signature, bytes):
            raise InvalidInput("the invitation's fields are not of their types")
        fields = invite_fields(self.vault_id, draft, signed, draft.root.version)
        try:
            signing.verify(self.public, signed.signature, LABEL_SIG_INVITE, *fields, what="the commit")
        except UntrustedRecord:
            raise AccessDenied(NOT_SIGNED, hint="draft again and sign what the draft shows") from None
        return signed


class _EventRecorder:
    """``engineers.Recorder`` of the commit's unit: the ``engineer-invite`` event in format 3."""

    def __init__(self, journal: ServerJournal, event: ServerEvent) -> None:
        self.journal, self.event = journal, event
        self.me: tuple[int, int] | None = None  # the caller (id, key generation), once authorised

    def __repr__(self) -> str:
        return "InviteRecorder()"

    def append(
        self, s: Session, action: str, *, public: dict[str, Any], enrolment: Any = None, unsigned_by: int | None = None
    ) -> int:
        if enrolment is not None or unsigned_by is not None or action != INVITE or self.me is None:
            raise InvalidInput("an invitation appends only its own event")
        row = self.journal.append(s, action, self.event.request, engineer_id=self.me[0], key_generation=self.me[1],
                                  public=public or None)  # fmt: skip
        return int(row.seq)


class NoEvent:
    """A draft appends nothing."""

    def append(self, *_: object, **__: object) -> int:
        raise InvalidInput("an invitation's draft appends no event")


class NoCarry:
    """An invitation carries nothing over (a confirmation does)."""

    def plan(self, s: Session, engineer_id: int, root_version: int) -> CarryPlan:
        raise InvalidInput("an invitation carries no grants")

    def carry(self, s: Session, engineer_id: int) -> None:
        raise InvalidInput("an invitation carries no grants")
