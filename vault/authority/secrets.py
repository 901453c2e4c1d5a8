"""Secrets, where the database is: authorise, read or write ciphertext rows, record, commit.

One unit of work per request, in this order: who calls (an active engineer whose
certificate verifies, with the key generation the request names; the head of their grant
ledger for the client, or the admin role) — a refused caller is refused here, before any
row of the client or the secret is read; then the client (by id, or an admin's slug tag)
and the secret (by its name tag) with its current version; for a write, the client-key
version new data goes under (the newest admin-signed one) and the new rows, whose
ciphertext the keyholder makes for the ids assigned here; the audit event; the commit.
Only then does the answer leave: ciphertext, ids, tags and signed public records.

The keyholder sees the draft of the answer before the event is written (``SecretSeal.
admit``: a refusal writes nothing), as the checkout does (authority/checkouts.py). The
event itself is appended by ``Recorder`` (the Journal: its signature and sealed details
are the keyholder's hands lent in-process, the seam the team-server issue replaces).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from vault import validation
from vault.authority import versions
from vault.authority.checkout_reads import CallerRead
from vault.authority.checkout_reads import org_chain_rows as org_chain
from vault.authority.policies_caller import caller_read
from vault.authority.requests import MISSING_TARGET, Caller, NewVersion, SealedClientKey
from vault.authority.secret_requests import (
    CREATE,
    HISTORY,
    NAME_TAKEN,
    NO_CURRENT_VERSION,
    READ_ACTIONS,
    UPDATE,
    VIEW,
    AddRequest,
    HistoryRow,
    ReadRequest,
    SecretRows,
    SecretTarget,
    UpdateRequest,
)
from vault.authority.versions import VersionChecks
from vault.errors import AccessDenied, AlreadyExists, CheckoutConflict, IntegrityError, InvalidInput, NotFound
from vault.storage import models as m
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.rows import (
    ROLE_ADMIN,
    ClientRow,
    EngineerRecord,
    EngineerRow,
    GrantRecord,
    HoldRow,
    SecretRow,
    VersionRow,
)

VIEW_KEPT = "password-kept"  # an update draft's view that answered the password (the reports count it)
KEPT_REASON = "(an update that kept the password, through the team server)"  # such a view's reason in reports
VIEW_PUBLIC_ONLY = "public-only"  # a view's details: it showed no sensitive field (reports.py counts the others)
MAX_KNOWN_VERSIONS = 4096  # client-key versions a keyholder may name as held: far more than rotations happen
TAG_BYTES = 32  # a lookup tag (an HMAC-SHA256) and an organisation public key: 32 bytes each


def _tag(label: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != TAG_BYTES:
        raise InvalidInput(f"the request's {label} is not a {TAG_BYTES}-byte value")
    return value


def checked_target(target: SecretTarget) -> SecretTarget:
    """``target`` if every field is of its type and range, else InvalidInput: the request is
    the caller's, and nothing in it is trusted before it is checked here."""
    if not isinstance(target, SecretTarget) or not isinstance(target.caller, Caller):
        raise InvalidInput("the request names no caller and target")
    validation.number("engineer id", target.caller.engineer_id, 1)
    validation.number("key generation", target.caller.key_generation, 0)
    if (target.client_id is None) == (target.slug_tag is None):
        raise InvalidInput("a request names its client by id or by slug tag")
    if target.client_id is not None:
        validation.number("client id", target.client_id, 1)
    if target.slug_tag is not None:
        _tag("slug tag", target.slug_tag)
    _tag("name tag", target.name_tag)
    _tag("organisation key", target.org_pin)
    if not isinstance(target.known_key_versions, tuple) or len(target.known_key_versions) > MAX_KNOWN_VERSIONS:
        raise InvalidInput("the request's known key versions are not a short tuple")
    for version in target.known_key_versions:
        validation.number("client-key version", version, 1)
    return target


def checked_kind(kind: object) -> str:
    """A secret's kind, one of ``validation.KINDS``, else InvalidInput."""
    if not isinstance(kind, str):
        raise InvalidInput("the request's kind is not text")
    return validation.kind(kind)


class CallerChecks(Protocol):
    """The checks of the caller's own rows: signatures and public keys only."""

    def organisation_key(self, s: Session, current: bytes) -> None:
        """The vault's current organisation key, as read in this unit of work."""

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        """The engineer's certificate verifies under the organisation key, else UntrustedRecord."""


class SecretChecks(CallerChecks, VersionChecks, Protocol):
    """The trust checks the authority makes: signatures and public keys only."""

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        """The index of the grant that counts (the ledger head), else NotFound / GrantExpired."""

    def exclusive_holds(self, s: Session, client: m.Client, secret: m.Secret, me: int) -> Sequence[HoldRow]:
        """Other engineers' open exclusive checkouts of ``secret`` (its row locked), each honoured
        only if its signed event vouches for it (under an exclusive policy, every hold)."""


class Recorder(Protocol):
    """Appends an event in the caller's unit of work (the Journal)."""

    def append(
        self, s: Session, action: str, *, client_id: int | None, secret_id: int | None, details: dict[str, Any] | None
    ) -> int:
        """The new event's seq."""


class SecretSeal(Protocol):
    """The keyholder's hands inside the unit of work (the in-process seam)."""

    def admit(self, draft: SecretRows) -> None:
        """Verify (and open) what will be answered, before the event is written; raise to refuse."""

    def encrypt(self, draft: SecretRows, version: int) -> NewVersion:
        """The new version ``version`` of ``draft.secret``, encrypted under ``draft.write_key``."""


def authorised_caller(s: Session, checks: CallerChecks, caller: Caller, client_id: int) -> CallerRead:
    """The caller's rows (with their grant ledger for ``client_id``, 0 for none): an engineer
    of this vault, certified under its current organisation key, active, of the key
    generation the request names; else Locked / AccessDenied / UntrustedRecord. One
    statement, which reads nothing of any client or secret."""
    return caller_read(s, checks, caller, client_id)


class SecretAuthority:
    """Show, history, add and update of secrets, given a request, one unit of work each."""

    def __init__(self, store: Store, checks: SecretChecks, recorder: Recorder, clock: Callable[[], dt.datetime]):
        self.store, self.checks, self.recorder, self.clock = store, checks, recorder, clock

    # -- the operations -------------------------------------------------------------------------

    def read(self, request: ReadRequest, seal: SecretSeal) -> SecretRows:
        """A secret's current version (``secret-view``) or its versions (``secret-history``)."""
        if not isinstance(request, ReadRequest) or request.action not in READ_ACTIONS:
            raise InvalidInput(f"unknown action {validation.shown(str(getattr(request, 'action', '?')))}")
        checked_target(request.target)
        with self.store.transaction() as s:
            caller = self._authorise(s, request.target)
            client, secret = self._target(s, request.target)
            version = self._version(s, secret, secret.current_version)
            history: tuple[HistoryRow, ...] = ()
            if request.action == HISTORY:
                history = self._history(s, secret.id)
            draft = self._draft(s, caller, request.target, client, secret, version, None, history)
            seal.admit(draft)
            details = {"fields": VIEW_PUBLIC_ONLY} if request.action == VIEW else None
            seq = self.recorder.append(s, request.action, client_id=client.id, secret_id=secret.id, details=details)
        return dataclasses.replace(draft, seq=seq)

    def add(self, request: AddRequest, seal: SecretSeal) -> SecretRows:
        """A new secret under the name tag asked for, with its first version."""
        if not isinstance(request, AddRequest):
            raise InvalidInput("not an add request")
        checked_target(request.target)
        kind = checked_kind(request.kind)
        with self.store.transaction() as s:
            caller = self._authorise(s, request.target)
            client = self._client(s, request.target)
            name_tag = request.target.name_tag
            taken = select(m.Secret.id).where(m.Secret.client_id == client.id, m.Secret.name_tag == name_tag)
            if s.scalars(taken).first() is not None:
                raise AlreadyExists(NAME_TAKEN)
            now = self.clock()
            secret = m.Secret(
                client_id=client.id,
                name_tag=name_tag,
                kind=kind,
                current_version=0,
                created_at=now,
                updated_at=now,
            )
            s.add(secret)
            s.flush()
            written = self._write(s, caller, request.target, client, secret, None, seal)
            seq = self.recorder.append(s, CREATE, client_id=client.id, secret_id=secret.id, details={"kind": kind})
        return dataclasses.replace(written, seq=seq)

    def update(self, request: UpdateRequest, seal: SecretSeal) -> SecretRows:
        """A new version of the secret, in one unit of work of its own."""
        if not isinstance(request, UpdateRequest) or not isinstance(request.password_changed, bool):
            raise InvalidInput("not an update request")
        checked_target(request.target)
        kind = None if request.kind is None else checked_kind(request.kind)
        with self.store.transaction() as s:
            return self._update(s, request, seal, kind)

    def _update(self, s: Session, request: UpdateRequest, seal: SecretSeal, kind: str | None) -> SecretRows:
        caller = self._authorise(s, request.target)
        client, secret = self._target(s, request.target, lock=True)
        others = self.checks.exclusive_holds(s, client, secret, caller.me.id)  # checked under the lock
        if others:
            holder = s.get(m.Engineer, others[0].engineer_id)
            until = others[0].expires_at.isoformat(timespec="minutes")
            raise CheckoutConflict(f"checked out exclusively by {holder.name if holder else '?'} until {until}")
        current = self._version(s, secret, secret.current_version)
        written = self._write(s, caller, request.target, client, secret, current, seal, request.password_changed)
        if kind is not None:
            secret.kind = kind
        details = {"version": secret.current_version, "password_changed": request.password_changed}
        seq = self.recorder.append(s, UPDATE, client_id=client.id, secret_id=secret.id, details=details)
        return dataclasses.replace(written, seq=seq, kind=secret.kind, secret=self._secret_row(secret))

    # -- who calls ---------------------------------------------------------------------------

    def _authorise(self, s: Session, target: SecretTarget) -> CallerRead:
        """An active, certified engineer of the key generation the request names, who is an
        admin or holds the head of their grant ledger for the client. Nothing of the client
        or the secret has been read when this refuses."""
        if (target.client_id is None) == (target.slug_tag is None):
            raise InvalidInput("a request names its client by id or by slug tag")
        caller = authorised_caller(s, self.checks, target.caller, target.client_id or 0)
        if caller.me.role != ROLE_ADMIN:
            if target.slug_tag is not None:
                raise AccessDenied(
                    f"{caller.me.name!r} is not an admin", hint="name the client by the id your grant names"
                )
            self.checks.first_valid_grant(s, caller.grants, caller.me, caller.signers)
        return caller

    # -- what is acted on ----------------------------------------------------------------------

    @staticmethod
    def _client(s: Session, target: SecretTarget) -> m.Client:
        if target.slug_tag is not None:
            query = select(m.Client).where(m.Client.slug_tag == target.slug_tag)
        else:
            query = select(m.Client).where(m.Client.id == target.client_id)
        client = s.scalars(query).first()
        if client is None:
            raise NotFound(MISSING_TARGET)
        return client

    def _target(self, s: Session, target: SecretTarget, *, lock: bool = False) -> tuple[m.Client, m.Secret]:
        """The client and the secret under the name tag (``lock``: the secret's row locked, PostgreSQL)."""
        client = self._client(s, target)
        found = select(m.Secret).where(m.Secret.client_id == client.id, m.Secret.name_tag == target.name_tag)
        if lock:  # read again under the lock (PostgreSQL): the new version follows the last committed one
            found = found.with_for_update().execution_options(populate_existing=True)
        secret = s.scalars(found).first()
        if secret is None:
            raise NotFound(MISSING_TARGET)
        return client, secret

    @staticmethod
    def _version(s: Session, secret: m.Secret, version: int) -> m.SecretVersion:
        row = s.get(m.SecretVersion, (secret.id, version))
        if row is None:
            raise IntegrityError(NO_CURRENT_VERSION)
        return row

    @staticmethod
    def _history(s: Session, secret_id: int) -> tuple[HistoryRow, ...]:
        found = s.execute(
            select(m.SecretVersion.version, m.SecretVersion.created_at, m.Engineer.name, m.SecretVersion.key_version)
            .outerjoin(m.Engineer, m.Engineer.id == m.SecretVersion.created_by)
            .where(m.SecretVersion.secret_id == secret_id)
            .order_by(m.SecretVersion.version)
        ).all()
        return tuple(HistoryRow(r[0], r[1], r[2] or "?", r[3]) for r in found)

    # -- a new version -------------------------------------------------------------------------

    def _write(
        self,
        s: Session,
        caller: CallerRead,
        target: SecretTarget,
        client: m.Client,
        secret: m.Secret,
        current: m.SecretVersion | None,
        seal: SecretSeal,
        clear_must_change: bool = False,
    ) -> SecretRows:
        """The next version of ``secret``, encrypted by the keyholder under the client's current
        key (its signed record in the draft) and stored (authority/versions.py)."""
        write = versions.write_key(s, self.checks, caller, client, secret.current_version)
        if write.sealed is None:
            raise IntegrityError(f"client key version {write.key_version} has no record")
        draft = self._draft(s, caller, target, client, secret, current, write.sealed, ())
        seal.admit(draft)
        now = self.clock()
        stored = versions.store_version(
            s,
            self.checks,
            write,
            seal.encrypt(draft, write.next_version),
            client_id=client.id,
            secret_id=secret.id,
            created_by=caller.me.id,
            now=now,
            clear_must_change=clear_must_change,
        )
        # the secret's row as stored (a Core UPDATE): the unit's copy told, not marked changed
        set_committed_value(secret, "current_version", stored.version)
        set_committed_value(secret, "updated_at", now)
        if clear_must_change:
            set_committed_value(secret, "must_change", False)
        return dataclasses.replace(draft, secret=self._secret_row(secret), version=stored, updated_at=now)

    # -- the answer ---------------------------------------------------------------------------

    @staticmethod
    def _secret_row(secret: m.Secret) -> SecretRow:
        return SecretRow(secret.id, secret.name_tag, secret.current_version, bool(secret.must_change))

    def _draft(
        self,
        s: Session,
        caller: CallerRead,
        target: SecretTarget,
        client: m.Client,
        secret: m.Secret,
        version: m.SecretVersion | None,
        write_key: SealedClientKey | None,
        history: tuple[HistoryRow, ...],
    ) -> SecretRows:
        engineer = caller.me.role != ROLE_ADMIN
        sealed = None
        if version is not None and version.key_version not in target.known_key_versions:
            sealed = versions.sealed_key(rows.connection(s), caller, client.id, version.key_version)
        return SecretRows(
            seq=0,
            vault_id=caller.vault_id,
            org_signing_public=caller.org_signing_public,
            org_chain=org_chain(rows.connection(s), target.org_pin, caller.org_signing_public),
            me=caller.me,
            grant=caller.grants[0] if engineer and caller.grants else None,
            grant_signer=caller.signers[0] if engineer and caller.signers else None,
            client=ClientRow(client.id, client.slug_blob, client.lookup_key_blob, client.audit_keys_blob),
            secret=self._secret_row(secret),
            kind=secret.kind,
            created_at=secret.created_at,
            updated_at=secret.updated_at,
            version=None
            if version is None
            else VersionRow(
                version.version, version.key_version, version.wrapped_dek, version.password_blob, version.metadata_blob
            ),
            sealed_key=sealed,
            write_key=write_key,
            history=history,
        )
