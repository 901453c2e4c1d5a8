"""An engineer's removal (offboarding) through the team server, where the database is: a draft, a commit.

docs/server.md (session 14, helper B; the values ``removal_draft_values.py``). The checks and rows are
the in-process removal's (``engineer_removal.EngineerRemovalAuthority``) and each client-key start's
(``rotation.RotationAuthority.start``, run unchanged inside the unit), driven in another order:

* ``remove_draft`` — one unit, rolled back whole: the caller; the engineer (``served_target``: not the
  caller; not removed already); for a non-admin, the records a DBA named them as signing set aside
  (``adoption_drafts.set_aside_unsigned``, again in the commit's unit), for an admin, what they signed
  drafted for adoption (``adoption_drafts.adoption_rows``); their unrevoked grants and the
  revocation time; then a start of every client's key, each run up to the rotation
  keyholder's seal, which keeps the ``StartDraft`` it is shown and stops it (``_Shown``); the grantees
  are those of ``grantees`` without the engineer. Nothing is written (a rotation under way the start
  supersedes is rolled back with the rest).
* ``remove`` — the commit, one write unit: the request's nonce first; the caller; the engineer (row
  locked) checked again; the revocation time within ``CLOCK_SLACK`` of the server's clock; the draft
  recomputed at that time and its digest compared (``STALE_REMOVAL``, 409); then, before any row is
  changed, every signature: each revocation under the caller's certified key over exactly the grants
  drafted, the disabled certificate under the organisation key, each new client key's record under the
  caller's key, for exactly the clients drafted (403); then each start run with the commit's new key
  (first, on the rows drafted: the start's own draft must be the one drafted, 409), the grants
  revoked, an admin's adoption (``store_adoption``, checked in full before its writes: 403), the keys
  destroyed (the public keys kept), the row disabled and re-certified (``_apply``); for an admin, the
  root key rotated in the same unit (``removal_root.RemovalRootAuthority``: session 17, helper I);
  and the format-3 events appended in the same unit (``adoption-refused``, ``root-key-rotate``,
  ``engineer-remove``, each start's facts in the last: ``_StartRecorder``).
* ``remove_root_draft`` — an admin's removal: the commit's checks and writes (``_apply``) in a unit
  rolled back, and in it the root rotation's draft and every page as the commit's unit will show them.

**Exposure.** The admin's machine has no verified audit log (``audit verify`` is not served), so, as
in-process when the log does not verify, every client is exposed: each gets a start (an admin's
removal exposes every client in-process too). ``RemoteVault`` runs the re-wrapping of their data keys
through the server after the commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.authority.adoption_draft_values import ADOPTION_REFUSED
from vault.authority.adoption_drafts import adoption_rows, set_aside_unsigned, store_adoption
from vault.authority.certificates import certificate_fields
from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.engineer_removal import grant_row
from vault.authority.engineer_requests import (
    DISABLED,
    REMOVE,
    Identity,
    Removal,
    RemovalAnswer,
    RemovalDraft,
    RemoveRequest,
    RootCopy,
)
from vault.authority.engineer_rotation import destroy_keys
from vault.authority.engineers import (
    KEY_BYTES,
    SIGNATURE_BYTES,
    EngineerAuthority,
    checked_bytes,
    checked_caller,
    checked_name,
    engineer_row,
)
from vault.authority.grant_requests import revocation_fields
from vault.authority.invite_drafts import NoCarry, NoEvent
from vault.authority.record_signatures import client_key_fields
from vault.authority.rekey_drafts import REMOVE_COMMAND, EventRecorder, served_target
from vault.authority.removal_draft_values import (
    STALE_REMOVAL,
    RemovalCommit,
    RemovalDraftAnswer,
    RemovalDraftRows,
    RemovalRootDraft,
    draft_digest,
)
from vault.authority.removal_root import RemovalRootAuthority
from vault.authority.requests import Caller, ClientKeyRow
from vault.authority.root_rotation_requests import ROTATE_ROOT
from vault.authority.rotation import RotationAuthority
from vault.authority.rotation_requests import START, Grantee, NewClientKey, StartDraft, StartRequest
from vault.authority.serverjournal import ServerJournal
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY, LABEL_SIG_ENGINEER, LABEL_SIG_GRANT_REVOCATION
from vault.errors import AccessDenied, ConcurrentChange, InvalidInput, UntrustedRecord, VaultError
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE, ROLE_ADMIN, GrantRow, is_revoked

DIGEST_BYTES = 32
CLOCK_SLACK = 300  # seconds, as the removal keyholder's (keyholder/removal.py)
NOT_SIGNED = "the commit carries a removal the calling admin did not sign for this draft"


class _Shown(Exception):
    """Raised by the draft's seal: the start's draft is kept, nothing of the start is stored."""


class _Drafted(Exception):
    """Raised at the end of the draft's unit: everything it did is rolled back."""

    def __init__(self, rows: RemovalDraftRows | RemovalRootDraft) -> None:
        super().__init__("drafted")
        self.rows = rows


@dataclass(frozen=True)
class _Applied:
    """What the commit's writes before the root rotation did: the row, whether an admin's, what an
    adoption or a set-aside refused, the rotations started and their facts."""

    row: m.Engineer
    admin: bool
    skipped: list[str]
    rotation_ids: tuple[int, ...]
    started: list[dict[str, int]]


class _Grantees:
    """``RotationChecks`` of a removal's starts: the server's checks, the grantees without the engineer
    removed (the ledger head of every other active, certified engineer with a grant of the client)."""

    def __init__(self, checks: Any, leaving: int) -> None:
        self.checks, self.leaving = checks, leaving

    def __repr__(self) -> str:
        return "RemovalGrantees()"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.checks, name)

    def grantees(self, s: Session, client_id: int) -> Sequence[Grantee]:
        order = (func.coalesce(m.Grant.seq, 0).desc(), m.Grant.id.desc())
        ledgers: dict[int, list[m.Grant]] = {}
        for grant in s.scalars(select(m.Grant).where(m.Grant.client_id == client_id).order_by(*order)):
            ledgers.setdefault(grant.engineer_id, []).append(grant)
        out = []
        for engineer_id, grants in sorted(ledgers.items()):
            engineer = s.get(m.Engineer, engineer_id)
            if engineer is None or engineer.id == self.leaving or engineer.status != ACTIVE:
                continue
            signers = [s.get(m.Engineer, g.granted_by) for g in grants]
            rows = [None if signer is None else engineer_row(signer) for signer in signers]
            try:
                self.checks.certificate(s, engineer)
                head = self.checks.first_valid_grant(s, grants, engineer, rows)
            except VaultError:
                continue  # no live verified grant: nothing is sealed to them (the keyholder checks again)
            out.append(Grantee(engineer_row(engineer), grant_row(grants[head]), rows[head]))
        return out


class _Shows:
    """The draft's ``StartSeal``: keeps the start's draft and stops the start."""

    def __init__(self) -> None:
        self.shown: list[StartDraft] = []

    def new_key(self, draft: StartDraft) -> NewClientKey:
        self.shown.append(draft)
        raise _Shown


class _Given:
    """The commit's ``StartSeal``: the commit's new key, for the start drafted only."""

    def __init__(self, drafted: StartDraft, made: NewClientKey) -> None:
        self.drafted, self.made = drafted, made

    def new_key(self, draft: StartDraft) -> NewClientKey:
        if draft != self.drafted:
            raise ConcurrentChange(STALE_REMOVAL)
        return self.made


class _StartRecorder:
    """``rotation.Recorder`` of a removal's starts: a request appends one event of an action (the
    ``audit_events`` unique key), so each start's facts go into the ``engineer-remove`` event
    (``rotations``: client, versions, data keys; docs/format.md §5) instead of an event of its own."""

    def __init__(self) -> None:
        self.started: list[dict[str, int]] = []

    def append(self, s: Session, action: str, *, client_id: int | None, details: dict[str, Any] | None) -> int:
        if action != START or client_id is None or not isinstance(details, dict):
            raise InvalidInput("a removal's start records only its own facts")
        self.started.append({"client": client_id, **{k: int(v) for k, v in details.items()}})
        return 0


class _NoStartEvent:
    def append(self, *_: object, **__: object) -> int:
        raise InvalidInput("a removal's draft appends no event")


class RemovalDraftAuthority:
    """Drafts and commits of an engineer's removal through the server (module docstring)."""

    def __init__(
        self, store: Store, checks: Any, clock: Callable[[], dt.datetime], roots: RemovalRootAuthority
    ) -> None:
        self.store, self.checks, self.clock, self.roots = store, checks, clock, roots

    def __repr__(self) -> str:
        return "RemovalDraftAuthority()"

    def remove_draft(self, request: RemoveRequest) -> RemovalDraftAnswer:
        if not isinstance(request, RemoveRequest) or request.action != REMOVE:
            raise InvalidInput("not a removal request")
        caller, name, pin = _checked(request.caller, request.name, request.org_pin)
        if request.log_verified is not False:
            raise InvalidInput("through the server every client is rotated: the request says the log verified")
        revoked_at = int(self.clock().timestamp())
        try:
            with self.store.transaction() as s:
                e = EngineerAuthority(self.store, self.checks, NoEvent(), NoCarry(), self.clock)
                identity = e.authorise(s, caller, org_pin=pin, admin=True)
                row = self._target(s, e, identity, name, lock=False)
                if row.role != ROLE_ADMIN:
                    set_aside_unsigned(s, row, self.checks, self.clock())  # as the commit will, before its starts
                raise _Drafted(self._rows(s, e, identity, row, caller, pin, revoked_at))
        except _Drafted as drafted:
            assert isinstance(drafted.rows, RemovalDraftRows)
            return RemovalDraftAnswer(drafted.rows, draft_digest(drafted.rows))

    def remove_root_draft(self, commit: RemovalCommit) -> RemovalRootDraft:
        """An admin's removal: the root rotation as the commit's unit will show it, after the commit's
        writes (made here, every check of the commit's with them, and rolled back)."""
        checked = self._commit_fields(commit)
        if commit.root is not None:
            raise InvalidInput("the root rotation is drafted for a commit without one")
        try:
            with self.store.transaction() as s:
                e = EngineerAuthority(self.store, self.checks, NoEvent(), NoCarry(), self.clock)
                identity = e.authorise(s, checked[0], org_pin=checked[2], admin=True)
                applied = self._apply(s, e, identity, commit, checked)
                if not applied.admin:
                    raise InvalidInput("only an admin's removal rotates the root key")
                raise _Drafted(self.roots.draft(s, checked[0], checked[2]))
        except _Drafted as drafted:
            assert isinstance(drafted.rows, RemovalRootDraft)
            return drafted.rows

    def remove(self, commit: RemovalCommit, event: ServerEvent) -> RemovalAnswer:
        checked = self._commit_fields(commit)
        caller, name, pin = checked
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # a second in-flight copy waits here, then fails as replayed
            actions = {REMOVE, ADOPTION_REFUSED, ROTATE_ROOT}
            recorder = EventRecorder(ServerJournal(UnitCore(self.clock), event.seal), event, actions)
            e = EngineerAuthority(self.store, self.checks, recorder, NoCarry(), self.clock)
            identity = e.authorise(s, caller, org_pin=pin, admin=True)
            me = identity.me
            recorder.me = (me.id, me.key_generation)
            applied = self._apply(s, e, identity, commit, checked)
            row = applied.row
            if applied.admin:  # the root rotated in this unit, after the removal's writes
                self.roots.rotate(s, caller, pin, commit.root, recorder)
            public = {"engineer": name, "clients_rotated": len(applied.rotation_ids), "admin": applied.admin,
                      "audit_log_verified": False, "rotations": applied.started}  # fmt: skip
            if applied.skipped:
                recorder.append(s, ADOPTION_REFUSED, public={"engineer": name, "count": len(applied.skipped),
                                                             "records": applied.skipped[:20]})  # fmt: skip
            seq = recorder.append(s, REMOVE, public=public)
            s.flush()
            after = tuple(
                grant_row(g)
                for g in s.scalars(select(m.Grant).where(m.Grant.engineer_id == row.id).order_by(m.Grant.id))
            )
            return RemovalAnswer(seq, identity, engineer_row(row), after, applied.rotation_ids, applied.admin)

    def _commit_fields(self, commit: object) -> tuple[Caller, str, bytes]:
        if not isinstance(commit, RemovalCommit) or commit.action != REMOVE:
            raise InvalidInput("not a removal commit")
        checked = _checked(commit.caller, commit.name, commit.org_pin)
        checked_bytes("draft digest", commit.draft_digest, DIGEST_BYTES)
        if not isinstance(commit.removal, Removal) or not isinstance(commit.revoked_at, int):
            raise InvalidInput("the commit carries no removal")
        if abs(commit.revoked_at - int(self.clock().timestamp())) > CLOCK_SLACK:
            raise ConcurrentChange(STALE_REMOVAL)
        return checked

    def _apply(
        self, s: Session, e: EngineerAuthority, identity: Identity, commit: RemovalCommit,
        checked: tuple[Caller, str, bytes],
    ) -> _Applied:  # fmt: skip
        """The commit's checks and writes up to the root rotation (module docstring): the engineer, the
        draft's digest, every signature, then each client's start, the revocations, an admin's adoption
        (checked in full before its writes), the keys destroyed, the row disabled and re-certified."""
        caller, name, pin = checked
        me = identity.me
        row = self._target(s, e, identity, name, lock=True)
        if row.id != commit.engineer_id:
            raise ConcurrentChange(STALE_REMOVAL)
        admin = row.role == ROLE_ADMIN
        skipped = [] if admin else set_aside_unsigned(s, row, self.checks, self.clock())  # rolled back on refusal
        rows = self._rows(s, e, identity, row, caller, pin, commit.revoked_at)
        if draft_digest(rows) != commit.draft_digest:
            raise ConcurrentChange(STALE_REMOVAL)
        made = commit.removal
        revocations = _verified(rows, made, commit.new_keys)
        # Each start first, on the rows drafted (an admin's signer rows and grants as they were shown:
        # the adoption and the disabled row below would change them); one unit, so the order is unseen.
        new_keys = dict(commit.new_keys)
        starts = _StartRecorder()
        rotation = RotationAuthority(self.store, _Grantees(self.checks, row.id), starts, self.clock)
        started = [
            rotation.start(StartRequest(caller, d.client.id, True, pin), _Given(d, new_keys[d.client.id]), s=s)
            for d in rows.starts
        ]
        at = dt.datetime.fromtimestamp(commit.revoked_at, dt.UTC)
        grants = {g.id: g for g in s.scalars(select(m.Grant).where(m.Grant.engineer_id == row.id))}
        for grant_id, signature in revocations.items():
            grant = grants[grant_id]
            grant.revoked_at, grant.revoked_by, grant.revocation = at, me.id, signature
        if rows.adoption is not None:  # checked in full before its writes, as in-process before the keys go
            skipped = store_adoption(s, rows.adoption, commit.adopted, self.checks, self.clock())
        destroy_keys(s, row, self.clock(), keep_public=True)
        row.status, row.disabled_at = DISABLED, self.clock()
        if rows.removal.recertify:
            row.certified_at, row.certificate = made.certified_at, made.certificate
        s.flush()
        return _Applied(row, admin, skipped, tuple(done.rotation.id for done in started), starts.started)

    @staticmethod
    def _target(s: Session, e: EngineerAuthority, identity: Identity, name: str, *, lock: bool) -> m.Engineer:
        row = served_target(s, e, identity, name, REMOVE_COMMAND, lock=lock)
        if row.status == DISABLED:
            raise InvalidInput(f"engineer {name!r} is already removed")
        return row

    def _rows(
        self, s: Session, e: EngineerAuthority, identity: Identity, row: m.Engineer, caller: Caller, pin: bytes,
        revoked_at: int,
    ) -> RemovalDraftRows:  # fmt: skip
        """The removal's draft at ``revoked_at`` and every client's start as it will be made (module docstring)."""
        recertify = row.status == ACTIVE or row.certified_at is not None
        root = e.root_copy(s, identity.me) if recertify else RootCopy(0, b"", None)
        live = [g for g in s.scalars(select(m.Grant).where(m.Grant.engineer_id == row.id).order_by(m.Grant.id))
                if not is_revoked(g)]  # fmt: skip
        removal = RemovalDraft(identity, root, engineer_row(row), tuple(grant_row(g) for g in live), revoked_at,
                               recertify)  # fmt: skip
        shows = _Shows()
        rotation = RotationAuthority(self.store, _Grantees(self.checks, row.id), _NoStartEvent(), self.clock)
        for client_id in s.scalars(select(m.Client.id).order_by(m.Client.id)).all():
            try:
                rotation.start(StartRequest(caller, client_id, True, pin), shows, s=s)
            except _Shown:
                continue
        adoption = adoption_rows(s, identity, row, root.version) if row.role == ROLE_ADMIN else None
        return RemovalDraftRows(removal, tuple(shows.shown), adoption)


def _checked(caller: object, name: object, pin: object) -> tuple[Caller, str, bytes]:
    return checked_caller(caller), checked_name(name), checked_bytes("organisation key", pin, KEY_BYTES)


def _verified(rows: RemovalDraftRows, made: Removal, new_keys: object) -> dict[int, bytes]:
    """Every signature of the commit, for exactly what was drafted (module docstring); the revocations."""
    draft = rows.removal
    identity, me = draft.identity, draft.identity.me
    vault_id = identity.vault_id
    if me.signing_public is None:
        raise AccessDenied(NOT_SIGNED)
    if not isinstance(made.revocations, tuple) or not all(
        isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], int) for r in made.revocations
    ):
        raise InvalidInput("the commit's revocations are not a list of (grant, signature)")
    revocations = {grant_id: checked_bytes("revocation", sig, SIGNATURE_BYTES) for grant_id, sig in made.revocations}
    if len(revocations) != len(made.revocations) or sorted(revocations) != sorted(g.id for g in draft.grants):
        raise AccessDenied(NOT_SIGNED, hint="draft again: the revocations are not those of the grants drafted")
    at = dt.datetime.fromtimestamp(draft.revoked_at, dt.UTC)
    try:
        for grant in draft.grants:
            revoked: GrantRow = grant._replace(revoked_at=at, revoked_by=me.id)
            signing.verify(me.signing_public, revocations[grant.id], LABEL_SIG_GRANT_REVOCATION,
                           *revocation_fields(vault_id, revoked), what="the commit")  # fmt: skip
        if draft.recertify:
            if made.certificate is None or not isinstance(made.certified_at, int):
                raise UntrustedRecord("no certificate")
            checked_bytes("certificate", made.certificate, SIGNATURE_BYTES)
            disabled = draft.engineer._replace(status=DISABLED, certified_at=made.certified_at)
            signing.verify(identity.org_signing_public, made.certificate, LABEL_SIG_ENGINEER,
                           *certificate_fields(vault_id, disabled), what="the commit")  # fmt: skip
        elif made.certificate is not None:
            raise UntrustedRecord("a certificate for an engineer never certified")
        _verified_keys(rows, new_keys, me.signing_public)
    except UntrustedRecord:
        raise AccessDenied(NOT_SIGNED, hint="draft again and sign what the draft shows") from None
    return revocations


def _verified_keys(rows: RemovalDraftRows, new_keys: object, public: bytes) -> None:
    """One new key per drafted start, its record signed by the caller (``client_key_fields``)."""
    if not isinstance(new_keys, tuple) or not all(
        isinstance(k, tuple) and len(k) == 2 and isinstance(k[1], NewClientKey) for k in new_keys
    ):
        raise InvalidInput("the commit's new client keys are not a list of (client, key)")
    given = dict(new_keys)
    if len(given) != len(new_keys) or sorted(given) != sorted(start.client.id for start in rows.starts):
        raise UntrustedRecord("the new client keys are not those of the clients drafted")
    vault_id, me = rows.removal.identity.vault_id, rows.removal.identity.me.id
    for start in rows.starts:
        key = given[start.client.id]
        if not isinstance(key.signature, bytes) or not isinstance(key.signed_at, int):
            raise UntrustedRecord("a new client key is not signed")
        record = ClientKeyRow(start.client.id, key.version, key.fingerprint, key.signed_at, me, None, ACTIVE)
        signing.verify(public, key.signature, LABEL_SIG_CLIENT_KEY, *client_key_fields(vault_id, record),
                       what="the commit")  # fmt: skip
