"""An engineer's re-key (a lost laptop) through the team server, where the database is: a draft, a commit.

docs/server.md (session 14, helper B; the values ``rekey_draft_values.py``). The checks and rows are
the in-process rotation's (``engineer_rotation.EngineerRotationAuthority``: the caller an active,
certified admin of the key generation named, read before the engineer acted on; the engineer not
the caller, active; their current key record certified if missing; their keys destroyed;
``issue_invitation``; the ``engineer-key-rotate`` event), driven in another order:

* ``rotate_draft`` — a read unit: the caller; the engineer (``served_target``: not the caller, active);
  the ``RekeyDraft`` and the ``InvitationDraft`` the in-process seal is shown, the ``AdoptionDraft`` of
  what they signed, and their digest. Nothing is written.
* ``rotate`` — the commit, one write unit: the request's nonce first; the caller; the engineer (row
  locked) checked again; the draft recomputed and its digest compared (``STALE_REKEY``, 409); then,
  before anything is written, the key record's certificate verified under the organisation key and
  the invitation's signature under the caller's certified key over the recomputed invitation (403);
  then the key record stored, the keys destroyed (``destroy_keys``), the invitation issued and the
  format-3 ``engineer-invite`` and ``engineer-key-rotate`` events appended in the same unit.

**Adoption** (session 16). In-process the acting admin re-signs the records the engineer signed
(client-key versions, grants, policies, settings: an admin's, or planted on a non-admin). Through the
server the draft carries them (``adoption_drafts.adoption_rows``) and the commit the admin's adoption,
checked in full before any write (``store_adoption``); an admin or a signer is re-keyed through the
server, the ``adoption-refused`` event naming what was set aside. An admin's removal stays on the
host until session 17 (helper I: it adopts and rotates the root key in the removal's unit,
``removal_root.py``); a non-admin signer's removal sets their records aside in its unit
(``adoption_drafts.set_aside_unsigned``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.adoption_draft_values import ADOPTION_REFUSED
from vault.authority.adoption_drafts import NOT_ADOPTED, AdminCheck, adoption_rows, store_adoption
from vault.authority.certificates import engineer_key_fields
from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.engineer_requests import (
    INVITE,
    ROTATE,
    EngineerAnswer,
    EngineerKeyRow,
    Identity,
    InvitationDraft,
    RekeyDraft,
    RotateRequest,
)
from vault.authority.engineer_rotation import destroy_keys
from vault.authority.engineers import (
    KEY_BYTES,
    SIGNATURE_BYTES,
    EngineerAuthority,
    EngineerChecks,
    checked_bytes,
    checked_caller,
    checked_name,
    engineer_row,
)
from vault.authority.invite_draft_values import InviteCommit
from vault.authority.invite_draft_values import draft_digest as invitation_digest
from vault.authority.invite_drafts import InviteCommitSeal, NoCarry, NoEvent
from vault.authority.rekey_draft_values import STALE_REKEY, RekeyCommit, RekeyDraftAnswer, RekeyDraftRows, draft_digest
from vault.authority.serverjournal import ServerJournal
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_ENGINEER_KEY
from vault.errors import AccessDenied, ConcurrentChange, InvalidInput, UntrustedRecord
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE


class RekeyChecks(EngineerChecks, AdminCheck, Protocol):
    """The server's checks of a re-key: the authority's, and a record's signer (an adoption's)."""


DIGEST_BYTES = 32
REKEY_COMMAND, REMOVE_COMMAND = "rotate engineer", "engineer remove"  # the host's commands, for a refusal's hint
NOT_CERTIFIED = "the commit carries a key-record certificate the organisation key did not sign for this draft"


def served_target(
    s: Session, e: EngineerAuthority, identity: Identity, name: str, verb: str, *, lock: bool
) -> m.Engineer:
    """The engineer a re-key or removal through the server acts on (module docstring); ``lock``: the
    row locked for the commit's unit."""
    query = select(m.Engineer).where(m.Engineer.name == name)
    row = s.scalars(query.with_for_update() if lock else query).first()
    if row is None:
        e.engineer(s, name)  # NotFound, as in-process
    assert row is not None
    if row.id == identity.me.id:
        raise InvalidInput("you cannot do this to yourself", hint="another admin can")
    # an admin's or a signer's re-key adopts what they signed (adoption_drafts.py); an admin's removal
    # adopts it and rotates the root key in its unit (removal_root.py); a non-admin named as a signer
    # has their records set aside (adoption_drafts.set_aside_unsigned)
    return row


def rekey_rows(
    s: Session, e: EngineerAuthority, identity: Identity, row: m.Engineer, expires_at: int
) -> RekeyDraftRows:
    """The draft of ``row``'s re-key as the in-process seal is shown it (module docstring)."""
    root = e.root_copy(s, identity.me)
    key = s.get(m.EngineerKey, (row.id, row.key_generation))
    rekey = RekeyDraft(identity, root, engineer_row(row), key is not None)
    if key is not None:
        previous = e._newest_key(s, row.id)
    elif row.sealing_public is None or row.signing_public is None:
        raise InvalidInput(f"engineer {row.name!r} has no confirmed keys")
    else:
        previous = EngineerKeyRow(row.id, row.key_generation, row.sealing_public, row.signing_public,
                                  row.certified_at, None)  # fmt: skip
    invitation = InvitationDraft(identity, root, row.id, row.name, row.role, row.key_generation, previous, expires_at)
    return RekeyDraftRows(rekey, invitation, adoption_rows(s, identity, row, root.version))


class RekeyDraftAuthority:
    """Drafts and commits of an engineer's re-key through the server (module docstring)."""

    def __init__(self, store: Store, checks: RekeyChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.checks, self.clock = store, checks, clock
        self.engineers = EngineerAuthority(store, checks, NoEvent(), NoCarry(), clock)  # the draft's reads

    def __repr__(self) -> str:
        return "RekeyDraftAuthority()"

    def rotate_draft(self, request: RotateRequest) -> RekeyDraftAnswer:
        if not isinstance(request, RotateRequest) or request.action != ROTATE:
            raise InvalidInput("not a key-rotation request")
        caller, name = checked_caller(request.caller), checked_name(request.name)
        expires_at = validation.number("invitation expiry", request.expires_at, 1, 2**40)
        pin = checked_bytes("organisation key", request.org_pin, KEY_BYTES)
        e = self.engineers
        with e.store.read() as s:
            identity = e.authorise(s, caller, org_pin=pin, admin=True)
            row = served_target(s, e, identity, name, REKEY_COMMAND, lock=False)
            if row.status != ACTIVE:
                raise InvalidInput(f"engineer {name!r} is {row.status}, not active")
            rows = rekey_rows(s, e, identity, row, expires_at)
        return RekeyDraftAnswer(rows, draft_digest(rows))

    def rotate(self, commit: RekeyCommit, event: ServerEvent) -> EngineerAnswer:
        if not isinstance(commit, RekeyCommit) or commit.action != ROTATE:
            raise InvalidInput("not a re-key commit")
        caller, name = checked_caller(commit.caller), checked_name(commit.name)
        expires_at = validation.number("invitation expiry", commit.expires_at, 1, 2**40)
        pin = checked_bytes("organisation key", commit.org_pin, KEY_BYTES)
        digest = checked_bytes("draft digest", commit.draft_digest, DIGEST_BYTES)
        certificate = commit.key_certificate
        if certificate is not None:
            certificate = checked_bytes("key record's certificate", certificate, SIGNATURE_BYTES)
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # a second in-flight copy waits here, then fails as replayed
            actions = {INVITE, ROTATE, ADOPTION_REFUSED}
            recorder = EventRecorder(ServerJournal(UnitCore(self.clock), event.seal), event, actions)
            e = EngineerAuthority(self.store, self.checks, recorder, NoCarry(), self.clock)
            identity = e.authorise(s, caller, org_pin=pin, admin=True)
            me = identity.me
            recorder.me = (me.id, me.key_generation)
            row = served_target(s, e, identity, name, REKEY_COMMAND, lock=True)
            if row.id != commit.engineer_id or row.status != ACTIVE:
                raise ConcurrentChange(STALE_REKEY)
            rows = rekey_rows(s, e, identity, row, expires_at)
            if draft_digest(rows) != digest:
                raise ConcurrentChange(STALE_REKEY)
            previous = rows.invitation.previous_key
            assert previous is not None
            if rows.rekey.key_recorded != (certificate is None):
                raise InvalidInput("the commit's key-record certificate is not for this draft")
            if certificate is not None:
                fields = engineer_key_fields(identity.vault_id, previous, name)
                try:
                    signing.verify(identity.org_signing_public, certificate, LABEL_SIG_ENGINEER_KEY, *fields,
                                   what="the commit")  # fmt: skip
                except UntrustedRecord:
                    raise AccessDenied(NOT_CERTIFIED, hint="draft again and sign what the draft shows") from None
                previous = dataclasses.replace(previous, certificate=certificate)
            invitation = dataclasses.replace(rows.invitation, previous_key=previous)
            signed_for = invitation_digest(invitation)
            held = InviteCommit(caller, name, row.role, expires_at, pin, row.id, commit.signed, signed_for)
            seal = InviteCommitSeal(held, signed_for, identity.vault_id, me.signing_public, me.id)
            seal.sign_invitation(invitation)  # the invitation's signature checked before anything is written
            skipped: list[str] = []
            if rows.adoption is not None:  # checked in full before its writes, as in-process before the keys go
                skipped = store_adoption(s, rows.adoption, commit.adopted, self.checks, self.clock())
            elif commit.adopted is not None:
                raise AccessDenied(NOT_ADOPTED)
            if certificate is not None:
                s.add(m.EngineerKey(engineer_id=row.id, generation=row.key_generation, state=ACTIVE,
                                    sealing_public=previous.sealing_public, signing_public=previous.signing_public,
                                    certified_at=previous.certified_at, certificate=certificate))  # fmt: skip
                s.flush()
            generation = row.key_generation
            destroy_keys(s, row, self.clock(), keep_public=False)
            e.issue_invitation(s, identity, rows.rekey.root, row, row.role, expires_at, seal)  # type: ignore[arg-type]
            if skipped:
                public = {"engineer": name, "count": len(skipped), "records": skipped[:20]}
                recorder.append(s, ADOPTION_REFUSED, public=public)
            seq = recorder.append(s, ROTATE, public={"engineer": name, "old_generation": generation})
            return EngineerAnswer(seq, identity, engineer_row(row), row.created_at)


class EventRecorder:
    """``engineers.Recorder`` of a commit's unit: its own events only, in format 3 (the signed request kept)."""

    def __init__(self, journal: ServerJournal, event: ServerEvent, actions: set[str]) -> None:
        self.journal, self.event, self.actions = journal, event, frozenset(actions)
        self.me: tuple[int, int] | None = None  # the caller (id, key generation), once authorised

    def __repr__(self) -> str:
        return "EngineerWriteRecorder()"

    def append(
        self, s: Session, action: str, *, public: dict[str, Any], enrolment: Any = None, unsigned_by: int | None = None
    ) -> int:
        if enrolment is not None or unsigned_by is not None or action not in self.actions or self.me is None:
            raise InvalidInput("this commit appends only its own events")
        row = self.journal.append(s, action, self.event.request, engineer_id=self.me[0], key_generation=self.me[1],
                                  public=public or None)  # fmt: skip
        return int(row.seq)
