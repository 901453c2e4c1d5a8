"""Engineers, where the database is: authorise, read or write engineer rows, record, commit.

One unit of work per request, in this order: who calls (an active engineer whose certificate verifies,
with the key generation the request names, and for invite and confirm an admin with a sealed copy of the
current root bundle) — a refused caller is refused here, before any row of the engineer acted on is
read; then that engineer's row (created for a first invitation); the keyholder's part, made for the
draft it is shown inside the unit (``EngineerSeal``: sign an invitation, make an enrolling engineer's
keys, certify a pending engineer's keys: a refusal writes nothing); the rows written as the keyholder
made them; the audit event; the commit. An enrolment has no caller: the open, unexpired, signed
invitation authorises it, and the keyholder verifies that invitation.

A confirmation's carry-over (the grants signed over the engineer's previous key, re-signed and
re-sealed) is made in-process by ``Carry`` (service/invitations.py) in this unit; the answer
(``CarryPlan``) is ids and ciphertext only: the confirming admin's keyholder opens each slug.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_reads import CALLER, ORG_KEYS, CallerRead, org_chain_rows
from vault.authority.engineer_requests import (
    CONFIRM,
    ENROLL,
    ENROLLED,
    INVITE,
    INVITED,
    KEY_RECORD,
    LIST,
    PENDING,
    RELOCK,
    ROLES,
    UNLOCK,
    UNLOCK_FAILED,
    WHOAMI,
    CarryPlan,
    Certification,
    ConfirmRequest,
    EngineerAnswer,
    EngineerKeyRow,
    EngineerListRow,
    EnrollRequest,
    EnrolmentDraft,
    Identity,
    Invitation,
    InvitationDraft,
    InviteRequest,
    KeyRecordDraft,
    KeyRecordRequest,
    KeyRecordRows,
    ListRequest,
    NewKeys,
    PassphraseRequest,
    PendingRows,
    RootCopy,
    SignedInvitation,
    UnlockRequest,
)
from vault.authority.requests import Caller, OrgKeyRow
from vault.authority.root_lock import hold_root
from vault.crypto import signing
from vault.errors import AccessDenied, AlreadyExists, EnrolmentError, InvalidInput, Locked, NotFound, UntrustedRecord
from vault.storage import models as m
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRecord, EngineerRow

KEY_BYTES, SIGNATURE_BYTES = 32, 64  # X25519 / Ed25519 public keys; Ed25519 signatures
MAX_BLOB = 4096  # a sealed invite secret, a key record, a MAC: far below this


class EngineerChecks(Protocol):
    """The trust checks the authority makes: signatures and public keys only."""

    def organisation_key(self, s: Session, current: bytes) -> None:
        """The vault's current organisation key, as read in this unit of work."""

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        """The engineer's certificate verifies under the organisation key, else UntrustedRecord."""


class Recorder(Protocol):
    """Appends an event in the caller's unit of work (the Journal)."""

    def append(
        self, s: Session, action: str, *, public: dict[str, Any], enrolment: Any = None, unsigned_by: int | None = None
    ) -> int:
        """The new event's seq (``enrolment``: the enrolling keyholder signs it with its new key;
        ``unsigned_by``: an event of this engineer that no key signs, as a failed unlock)."""


class Carry(Protocol):
    """What a confirmation carries over (in-process: service/invitations.py)."""

    def plan(self, s: Session, engineer_id: int, root_version: int) -> CarryPlan:
        """The signed invitation's admin, the grants carried and dropped (UntrustedRecord if
        unsigned): ids and ciphertext, the slugs' client keys sealed to ``root_version``."""

    def carry(self, s: Session, engineer_id: int) -> None:
        """Re-sign and re-seal the grants the plan carries; set aside the ones it refused."""


class EngineerSeal(Protocol):
    """The keyholder's hands inside the unit of work (the in-process seam)."""

    def sign_invitation(self, draft: InvitationDraft) -> SignedInvitation: ...
    def enrol(self, draft: EnrolmentDraft) -> NewKeys: ...
    def certify(self, draft: PendingRows) -> Certification: ...
    def relock(self, draft: KeyRecordDraft) -> bytes: ...


def checked_bytes(label: str, value: object, size: int | None = None) -> bytes:
    if not isinstance(value, bytes) or not 0 < len(value) <= MAX_BLOB or (size is not None and len(value) != size):
        raise InvalidInput(f"the {label} is not a well-formed value")
    return value


def checked_caller(caller: object) -> Caller:
    if not isinstance(caller, Caller):
        raise InvalidInput("the request names no caller")
    validation.number("engineer id", caller.engineer_id, 1)
    validation.number("key generation", caller.key_generation, 0)
    return caller


def checked_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidInput("the request's engineer name is not text")
    return validation.engineer_name(name)


def engineer_row(row: m.Engineer) -> EngineerRow:
    return EngineerRow(
        row.id,
        row.name,
        row.role,
        row.status,
        row.key_generation,
        row.sealing_public,
        row.signing_public,
        row.certified_at,
        row.certificate,
    )


class EngineerAuthority:
    """Invite, enrol, pending confirmation, confirm, list and whoami, one unit of work each."""

    def __init__(
        self, store: Store, checks: EngineerChecks, recorder: Recorder, carry: Carry, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.checks, self.recorder, self.carry, self.clock = store, checks, recorder, carry, clock

    # -- the operations -------------------------------------------------------------------------

    def invite(self, request: InviteRequest, seal: EngineerSeal) -> EngineerAnswer:
        """Create (or renew) the invitation of ``request.name``, signed by the calling admin."""
        if not isinstance(request, InviteRequest) or request.action != INVITE:
            raise InvalidInput("not an invite request")
        caller, name = checked_caller(request.caller), checked_name(request.name)
        pin = checked_bytes("organisation key", request.org_pin, KEY_BYTES)
        if request.role not in ROLES:
            raise InvalidInput(f"bad role {validation.shown(str(request.role))}", hint="use engineer, admin or service")
        expires_at = validation.number("invitation expiry", request.expires_at, 1, 2**40)
        with self.store.transaction() as s:
            identity = self.authorise(s, caller, org_pin=pin, admin=True)
            root = self.root_copy(s, identity.me)
            row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).first()
            if row is None:
                now = self.clock()
                row = m.Engineer(name=name, role=request.role, status=INVITED, key_generation=0, created_at=now)
                s.add(row)
                s.flush()
            elif row.status not in (INVITED, ENROLLED):
                raise AlreadyExists(f"engineer {name!r} already exists ({row.status})")
            seq = self.issue_invitation(s, identity, root, row, request.role, expires_at, seal)
            answer = EngineerAnswer(seq, identity, engineer_row(row), row.created_at)
        return answer

    def enroll(self, request: EnrollRequest, seal: EngineerSeal) -> EngineerAnswer:
        """Store the keys the enrolling engineer made for their open invitation."""
        if not isinstance(request, EnrollRequest) or request.action != ENROLL:
            raise InvalidInput("not an enrol request")
        name = checked_name(request.name)
        fingerprint = checked_bytes("organisation fingerprint", request.org_fingerprint)
        with self.store.transaction() as s:
            info = s.get(m.VaultInfo, 1)
            if info is None:
                raise NotFound("this database holds no vault", hint="check --db")
            if not signing.org_matches(info.org_signing_public, fingerprint):
                raise EnrolmentError(
                    "this enrolment code is for another vault (or the vault's key was replaced)",
                    hint="check --db, or ask the admin",
                )
            # locked: two enrolments of one invitation in flight (PostgreSQL) store one set of keys
            row = s.scalars(select(m.Engineer).where(m.Engineer.name == name).with_for_update()).first()
            if row is None or row.status != INVITED:
                raise EnrolmentError(f"there is no open invitation for {name!r}")
            if row.invite_expires_at is None or row.invite_expires_at <= self.clock():
                raise EnrolmentError(f"the invitation for {name!r} has expired")
            if row.invite_signature is None:
                raise EnrolmentError(
                    f"the invitation for {name!r} was made before credvault signed invitations",
                    hint=f"ask an admin to invite you again (`credvault engineer invite {name}`)",
                )
            draft = EnrolmentDraft(info.vault_id, info.org_signing_public, engineer_row(row), self.invitation(s, row))
            made = seal.enrol(draft)
            if not isinstance(made, NewKeys) or made.key_generation != row.key_generation + 1:
                raise InvalidInput("the enrolling keyholder's keys are not of the next key generation")
            row.sealing_public = checked_bytes("sealing key", made.sealing_public, KEY_BYTES)
            row.signing_public = checked_bytes("signing key", made.signing_public, KEY_BYTES)
            row.key_record = checked_bytes("key record", made.key_record)
            row.enroll_mac = checked_bytes("enrolment MAC", made.enroll_mac)
            row.key_generation, row.status = made.key_generation, ENROLLED
            public = {"engineer": name, "signing_public": made.signing_public.hex()}  # signed by the new key
            seq = self.recorder.append(s, ENROLL, public=public, enrolment=seal)
            answer = EngineerAnswer(seq, None, engineer_row(row), row.created_at)
        return answer

    def confirm(self, request: ConfirmRequest, seal: EngineerSeal) -> EngineerAnswer:
        """``PENDING``: what confirming would certify and carry (no event); ``CONFIRM``: certify it."""
        if not isinstance(request, ConfirmRequest) or request.action not in (PENDING, CONFIRM):
            raise InvalidInput("not a confirmation request")
        caller, name = checked_caller(request.caller), checked_name(request.name)
        pin = checked_bytes("organisation key", request.org_pin, KEY_BYTES)
        confirming = request.action == CONFIRM
        if confirming and not isinstance(request.fingerprint, str):
            raise InvalidInput("a confirmation names the fingerprint a person compared")
        if not isinstance(request.fingerprint, (str, type(None))) or len(request.fingerprint or "") > 200:
            raise InvalidInput("the request's fingerprint is not text")
        if not isinstance(request.shown, bool):
            raise InvalidInput("the request's shown flag is not a bool")
        with self.store.transaction() as s:
            identity = self.authorise(s, caller, org_pin=pin, admin=True)
            root = self.root_copy(s, identity.me) if confirming else self._root_if_sealed(s, identity.me)
            row = self.engineer(s, name)
            if confirming and (row.status != ENROLLED or row.invite_seal is None or row.invite_root_version is None):
                raise EnrolmentError(f"engineer {name!r} is not waiting for confirmation (status: {row.status})")
            if row.status != ENROLLED or row.sealing_public is None or row.signing_public is None:
                raise EnrolmentError(
                    f"engineer {name!r} has not enrolled yet (status: {row.status})",
                    hint="they run `credvault engineer enroll NAME` and type the code when asked",
                )
            pending = PendingRows(
                identity, root, engineer_row(row), self.invitation(s, row), self.carry.plan(s, row.id, root.version)
            )
            if not confirming:
                return EngineerAnswer(0, identity, pending.engineer, row.created_at, pending=pending)
            made = seal.certify(pending)
            if not isinstance(made, Certification) or (made.root_seal is not None) != (row.role == ROLE_ADMIN):
                raise InvalidInput("the keyholder's certification is not for this engineer")
            self._certify(s, row, made)
            self.carry.carry(s, row.id)
            public = {"engineer": name, "role": row.role, "key_generation": row.key_generation}
            public["fingerprint"] = signing.engineer_fingerprint(row.sealing_public, row.signing_public)
            seq = self.recorder.append(s, CONFIRM, public=public)
            answer = EngineerAnswer(seq, identity, engineer_row(row), row.created_at, pending=pending)
        return answer

    def list(self, request: ListRequest) -> EngineerAnswer:
        """``LIST``: every engineer (public keys only), after the list's event; ``WHOAMI``: the caller."""
        if not isinstance(request, ListRequest) or request.action not in (LIST, WHOAMI):
            raise InvalidInput("not a list request")
        caller, pin = checked_caller(request.caller), checked_bytes("organisation key", request.org_pin, KEY_BYTES)
        if request.action == WHOAMI:
            with self.store.read() as s:
                return EngineerAnswer(0, self.authorise(s, caller, org_pin=pin, admin=False))
        with self.store.transaction() as s:
            identity = self.authorise(s, caller, org_pin=pin, admin=False)
            found = s.scalars(select(m.Engineer).order_by(m.Engineer.name)).all()
            listed = tuple(
                EngineerListRow(
                    r.name, r.role, r.status, r.sealing_public, r.signing_public, r.key_generation, r.created_at
                )
                for r in found
            )
            seq = self.recorder.append(s, LIST, public={})
        return EngineerAnswer(seq, identity, engineers=listed)

    def change_passphrase(self, request: PassphraseRequest, seal: EngineerSeal) -> EngineerAnswer:
        """Store the caller's key record as the keyholder re-locked it under a new passphrase."""
        if not isinstance(request, PassphraseRequest) or request.action != RELOCK:
            raise InvalidInput("not a passphrase request")
        caller, pin = checked_caller(request.caller), checked_bytes("organisation key", request.org_pin, KEY_BYTES)
        with self.store.transaction() as s:
            identity = self.authorise(s, caller, org_pin=pin, admin=False)
            row = s.get(m.Engineer, identity.me.id)
            if row is None or row.key_record is None:
                raise Locked("the acting engineer has no key record", hint="an admin must confirm the enrolment first")
            record = checked_bytes("key record", seal.relock(KeyRecordDraft(identity, row.key_record)))
            row.key_record = record
            seq = self.recorder.append(s, RELOCK, public={"engineer": row.name})
        return EngineerAnswer(seq, identity)

    def key_record(self, request: KeyRecordRequest) -> KeyRecordRows:
        """The key record of an active engineer, by name (a read: no event)."""
        if not isinstance(request, KeyRecordRequest) or request.action != KEY_RECORD:
            raise InvalidInput("not a key-record request")
        name = checked_name(request.name)
        with self.store.read() as s:
            info = s.get(m.VaultInfo, 1)
            if info is None:
                raise NotFound("this database holds no vault", hint="check --db")
            row = self.engineer(s, name)
            if row.key_record is None or row.status != ACTIVE:
                raise NotFound(
                    f"engineer {name!r} has no usable keys (status: {row.status})",
                    hint="an admin must confirm the enrolment first",
                )
            keys = tuple(OrgKeyRow(*r) for r in ORG_KEYS.all(rows.connection(s), {}))
            return KeyRecordRows(info.vault_id, info.org_signing_public, keys, engineer_row(row), row.key_record)

    def unlock_failed(self, request: KeyRecordRequest) -> int:
        """Record (unsigned) that ``request.name``'s key record did not open with the passphrase typed."""
        if not isinstance(request, KeyRecordRequest) or request.action != UNLOCK_FAILED:
            raise InvalidInput("not an unlock-failed request")
        name = checked_name(request.name)
        with self.store.transaction() as s:
            row = self.engineer(s, name)
            seq = self.recorder.append(s, UNLOCK_FAILED, public={"engineer": name}, unsigned_by=row.id)
        return seq

    def unlock(self, request: UnlockRequest) -> EngineerAnswer:
        """The caller's unlock, after their session is kept: authorised, a re-pinned record stored
        if the stored one is still the one opened, the event appended."""
        if not isinstance(request, UnlockRequest) or request.action != UNLOCK:
            raise InvalidInput("not an unlock request")
        caller, pin = checked_caller(request.caller), checked_bytes("organisation key", request.org_pin, KEY_BYTES)
        ttl = validation.number("session length", request.ttl_seconds, 1, 12 * 3600)
        if (request.opened is None) != (request.repinned is None):
            raise InvalidInput("a re-pinned key record comes with the record it replaces")
        opened = None if request.opened is None else checked_bytes("key record", request.opened)
        repinned = None if request.repinned is None else checked_bytes("key record", request.repinned)
        with self.store.transaction() as s:
            identity = self.authorise(s, caller, org_pin=pin, admin=False)
            if opened is not None and repinned is not None:
                row = s.get(m.Engineer, identity.me.id)
                if row is not None and row.key_record == opened and row.key_generation == caller.key_generation:
                    row.key_record = repinned
            public = {"engineer": identity.me.name, "ttl_seconds": ttl}
            seq = self.recorder.append(s, UNLOCK, public=public)
        return EngineerAnswer(seq, identity)

    def issue_invitation(
        self,
        s: Session,
        identity: Identity,
        root: RootCopy,
        row: m.Engineer,
        role: str,
        expires_at: int,
        seal: EngineerSeal,
    ) -> int:
        """Reset ``row`` to invited as ``role``, with the invitation the keyholder signed for the
        draft it is shown; the ``engineer-invite`` event's seq."""
        previous = self._newest_key(s, row.id)
        draft = InvitationDraft(identity, root, row.id, row.name, role, row.key_generation, previous, expires_at)
        signed = seal.sign_invitation(draft)
        if (
            not isinstance(signed, SignedInvitation)
            or signed.signed_by != identity.me.id
            or signed.prev_generation not in (0, previous.generation if previous else 0)
        ):
            raise InvalidInput("the keyholder's invitation is not for this draft")
        row.role, row.status = role, INVITED
        row.sealing_public = row.signing_public = row.key_record = row.enroll_mac = row.certificate = None
        row.certified_at = None
        row.invite_seal = checked_bytes("sealed invite secret", signed.seal)
        row.invite_root_version = root.version
        row.invite_expires_at = dt.datetime.fromtimestamp(expires_at, dt.UTC)
        row.invite_prev_generation = signed.prev_generation
        row.invite_signed_by = signed.signed_by
        row.invite_signature = checked_bytes("invitation signature", signed.signature, SIGNATURE_BYTES)
        auth = signed.auth_public
        row.invite_auth_public = None if auth is None else checked_bytes("invitation's code key", auth, KEY_BYTES)
        public = {"engineer": row.name, "role": row.role, "key_generation": row.key_generation}
        return self.recorder.append(s, INVITE, public=public)

    # -- who calls ---------------------------------------------------------------------------

    def authorise(self, s: Session, caller: Caller, *, org_pin: bytes, admin: bool) -> Identity:
        """An active, certified engineer of the key generation the request names (an admin if
        ``admin``). Nothing of the engineer acted on has been read when this refuses."""
        conn = rows.connection(s)
        sqlite = conn.dialect.name == "sqlite"
        found = CALLER[sqlite].all(conn, {"me": caller.engineer_id, "client": 0})
        if not found:
            raise Locked("the acting engineer no longer exists in this vault")
        read = CallerRead(found, sqlite)
        me = read.me
        self.checks.organisation_key(s, read.org_signing_public)
        self.checks.certificate(s, me)
        if me.status != ACTIVE:
            raise AccessDenied(f"the account of {me.name!r} is {me.status}", hint="ask an admin")
        if me.key_generation != caller.key_generation:
            raise Locked(
                f"the keys of {me.name!r} have changed since this session was unlocked",
                hint="run `credvault unlock` again",
            )
        if admin and me.role != ROLE_ADMIN:
            raise AccessDenied(f"{me.name!r} is not an admin", hint="ask an admin to do this")
        chain = self._org_chain(s, org_pin, read.org_signing_public)
        return Identity(read.vault_id, read.org_signing_public, chain, me)

    @staticmethod
    def _org_chain(s: Session, pinned: bytes, current: bytes) -> tuple[OrgKeyRow, ...]:
        return org_chain_rows(rows.connection(s), pinned, current)

    @staticmethod
    def root_copy(s: Session, me: EngineerRow) -> RootCopy:
        """The current recovery key and the calling admin's sealed copy of the root bundle."""
        root = s.scalars(select(m.RootKey).where(m.RootKey.state == ACTIVE).order_by(m.RootKey.version.desc())).first()
        if root is None:
            raise UntrustedRecord("the vault has no active recovery key")
        sealed = s.get(m.RootSeal, (root.version, me.id))
        if sealed is None:
            raise AccessDenied(
                f"no copy of the recovery key is sealed to {me.name!r}", hint="another admin can re-confirm you"
            )
        return RootCopy(root.version, root.recovery_public, sealed.blob)

    def _root_if_sealed(self, s: Session, me: EngineerRow) -> RootCopy:
        """As ``root_copy``, with no sealed copy (and no version) if none is sealed to ``me``:
        what a pending confirmation shows is then shown without the slugs."""
        try:
            return self.root_copy(s, me)
        except (AccessDenied, UntrustedRecord):
            return RootCopy(0, b"", None)

    # -- what is acted on ----------------------------------------------------------------------

    @staticmethod
    def engineer(s: Session, name: str) -> m.Engineer:
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).first()
        if row is None:
            raise NotFound(f"no engineer named {name!r}", hint="`credvault engineer list` shows them")
        return row

    @staticmethod
    def _newest_key(s: Session, engineer_id: int) -> EngineerKeyRow | None:
        key = s.scalars(
            select(m.EngineerKey)
            .where(m.EngineerKey.engineer_id == engineer_id)
            .order_by(m.EngineerKey.generation.desc())
        ).first()
        if key is None:
            return None
        return EngineerKeyRow(
            key.engineer_id, key.generation, key.sealing_public, key.signing_public, key.certified_at, key.certificate
        )

    @staticmethod
    def invitation(s: Session, row: m.Engineer) -> Invitation:
        """The engineer's invitation as stored, and its signer's row (for the keyholder to verify)."""
        signer = None if row.invite_signed_by is None else s.get(m.Engineer, row.invite_signed_by)
        expires = row.invite_expires_at
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        return Invitation(
            row.invite_prev_generation,
            row.invite_root_version,
            None if expires is None else int(expires.timestamp()),
            row.invite_seal,
            row.invite_signed_by,
            row.invite_signature,
            None if signer is None else engineer_row(signer),
            row.enroll_mac,
            row.invite_auth_public,
        )

    @staticmethod
    def _certify(s: Session, row: m.Engineer, made: Certification) -> None:
        """The engineer made active with the certificate the keyholder signed over the keys it was shown."""
        assert row.sealing_public is not None and row.signing_public is not None
        row.status = ACTIVE
        row.invite_seal = row.enroll_mac = row.invite_expires_at = row.invite_root_version = None
        row.invite_signature = row.invite_signed_by = row.invite_prev_generation = row.invite_auth_public = None
        row.certified_at = validation.number("certification time", made.certified_at, 1, 2**40)
        row.certificate = checked_bytes("certificate", made.certificate, SIGNATURE_BYTES)
        existing = s.get(m.EngineerKey, (row.id, row.key_generation))
        key = existing or m.EngineerKey(engineer_id=row.id, generation=row.key_generation, state=ACTIVE)
        key.sealing_public, key.signing_public = row.sealing_public, row.signing_public
        key.certified_at = row.certified_at
        key.certificate = checked_bytes("key certificate", made.key_certificate, SIGNATURE_BYTES)
        if existing is None:
            s.add(key)
        if made.root_seal is not None:
            blob = checked_bytes("sealed root bundle", made.root_seal)
            hold_root(s, made.root_version)  # an admin's bundle: against a root rotation's walk (root_lock.py)
            copy = s.get(m.RootSeal, (made.root_version, row.id))
            if copy is None:
                s.add(m.RootSeal(root_version=made.root_version, engineer_id=row.id, blob=blob))
            else:
                copy.blob = blob
