"""Client-key rotation, where the database is: the rotation's state machine over ids and
ciphertext (start / re-wrap / finish, each its own unit of work, resumable).

Every step authorises its caller first — an active admin whose certificate verifies, with
the key generation the request names — before any row of the client or the rotation is
read (the caller's read names no client). Then:

* ``start``: the client, its current key version (the newest admin-signed one) with its
  recovery copy, the new version's number and the grantees (``RotationChecks.grantees``:
  the ledger's verdict, refusals recorded there) go to the keyholder as a ``StartDraft``;
  it answers a ``NewClientKey`` (signed record, sealed copies, the client's fields under
  it). Stored only if it is for this version, signed by the caller (the signature checked
  here, public key only), with one copy per grantee handed out and no other, and fields
  naming the new version. A rotation already under way is refused, or superseded.
* ``open`` and ``rewrap`` (``rotation_batches.RotationBatches``): the rotation's basis (its
  row and its client's key versions, records and recovery copies) read once for the
  keyholder to verify; then each batch, refused unless the basis is still what is stored,
  a page of wrapped data keys whose ``Rewrapped`` rows are stored only if they are exactly
  the rows handed out, in order, under the new version.
* ``finish``: retiring versions no data key refers to are destroyed (their sealed copies
  deleted); one still referred to is never destroyed.

The keyholder's hands inside a unit (``StartSeal``, ``rotation_batches.RewrapSeal``) and the event's
signature (``Recorder``: the Journal) are the in-process seam, as for the secrets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_reads import ACTIVE, ENGINEER_WIDTH, SEALED_KEY, CallerRead, org_chain_rows
from vault.authority.policies_caller import CallerGate
from vault.authority.requests import Caller, ClientKeyRow, OrgKeyRow, SealedClientKey
from vault.authority.root_lock import hold_root
from vault.authority.rotation_batches import Outer, RewrapSeal, RotationBatches, count_encryptions
from vault.authority.rotation_reads import RotationReads, rotation_row
from vault.authority.rotation_requests import (
    ALREADY_RUNNING,
    DESTROYED,
    DONE,
    FINISH,
    GRANT_ACTIONS,
    NO_CLIENT,
    RETIRING,
    RUNNING,
    START,
    SUPERSEDED,
    BatchDone,
    BatchRequest,
    Finished,
    FinishRequest,
    Grantee,
    GrantEvent,
    KeyVersionRow,
    ListRequest,
    NewClientKey,
    OpenRequest,
    RotatedClient,
    RotationBasis,
    RotationRow,
    StartDraft,
    Started,
    StartRequest,
    VersionsRequest,
)
from vault.authority.rotation_walk import old_versions_in_use
from vault.crypto.blobs import blob_key_version
from vault.errors import IntegrityError, InvalidInput, NotFound, UntrustedRecord
from vault.storage import models as m
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.rows import EngineerRecord, EngineerRow, GrantRecord

TAG_BYTES = 32


class RotationChecks(Protocol):
    """The trust checks the authority makes: signatures and public keys only."""

    def organisation_key(self, s: Session, current: bytes) -> None:
        """The vault's current organisation key, as read in this unit of work."""

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        """The engineer's certificate verifies under the organisation key, else UntrustedRecord."""

    def current_key_version(self, s: Session, client: m.Client) -> int:
        """The newest admin-signed client-key version, which must be the client's current one."""

    def client_key_record(self, s: Session, record: m.ClientKey) -> None:
        """The record's signature verifies under its signer's key, else UntrustedRecord."""

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        """The index of the grant that counts (the ledger head), else NotFound / GrantExpired."""

    def grantees(self, s: Session, client_id: int) -> Sequence[Grantee]:
        """The engineers a new version is sealed to (the ledger's verdict; refusals recorded)."""


class Recorder(Protocol):
    """Appends an event in the caller's unit of work (the Journal)."""

    def append(self, s: Session, action: str, *, client_id: int | None, details: dict[str, Any] | None) -> int:
        """The new event's seq."""


class StartSeal(Protocol):
    """The keyholder's hands inside the start's unit of work."""

    def new_key(self, draft: StartDraft) -> NewClientKey:
        """Verify ``draft``, then make the new version for it; raise to refuse (nothing written)."""


def checked_caller(caller: object) -> Caller:
    if not isinstance(caller, Caller):
        raise InvalidInput("the request names no caller")
    validation.number("engineer id", caller.engineer_id, 1)
    validation.number("key generation", caller.key_generation, 0)
    return caller


def _pin(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != TAG_BYTES:
        raise InvalidInput(f"the request's organisation key is not a {TAG_BYTES}-byte value")
    return value


_row = rotation_row


class RotationAuthority:
    """The client-key rotation's state machine, given a request, one unit of work per step."""

    def __init__(
        self, store: Store, checks: RotationChecks, recorder: Recorder, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.checks, self.recorder, self.clock = store, checks, recorder, clock
        self.batches = RotationBatches(store, checks)
        self.reads = RotationReads(store, checks)

    # -- start ---------------------------------------------------------------------------------

    def start(self, request: StartRequest, seal: StartSeal, *, s: Session | None = None) -> Started:
        """A new client-key version, current at once (``s``: inside the caller's unit of work)."""
        if not isinstance(request, StartRequest) or not isinstance(request.supersede, bool):
            raise InvalidInput("not a start request")
        checked_caller(request.caller)
        validation.number("client id", request.client_id, 1)
        _pin(request.org_pin)
        if s is None:
            with self.store.transaction() as unit:
                return self.start(request, seal, s=unit)
        s.flush()  # a caller's unit (an engineer's removal): its changes are read by the statements below
        caller = self._authorise(s, request.caller)
        hold_root(s, caller.root_version)  # its new key sealed to the recovery key: against a root rotation
        client = s.get(m.Client, request.client_id)
        if client is None:
            raise NotFound(NO_CLIENT)
        now = self.clock()
        for running in s.scalars(
            select(m.Rotation).where(m.Rotation.client_id == client.id, m.Rotation.state == RUNNING)
        ):
            if not request.supersede:
                raise InvalidInput(ALREADY_RUNNING, hint="run `credvault rotate resume`")
            running.state, running.finished_at = SUPERSEDED, now
        old_version = self.checks.current_key_version(s, client)
        old_key = self._sealed_key(s, client.id, old_version, caller.root_version or 0)
        if old_key is None:
            raise IntegrityError(f"client key version {old_version} has no record")
        newest = s.scalar(select(func.max(m.ClientKey.version)).where(m.ClientKey.client_id == client.id))
        draft = StartDraft(
            vault_id=caller.vault_id,
            org_signing_public=caller.org_signing_public,
            org_chain=self._org_chain(s, request.org_pin, caller.org_signing_public),
            me=caller.me,
            client=RotatedClient(
                client.id,
                client.slug_blob,
                client.name_blob,
                client.lookup_key_blob,
                client.backup_key_blob,
                client.audit_keys_blob,
            ),
            old_key=old_key,
            new_version=(newest or 0) + 1,
            root_version=caller.root_version or 0,
            grantees=tuple(self.checks.grantees(s, client.id)),
            grant_events=tuple(
                GrantEvent(*r)
                for r in s.execute(
                    select(
                        m.AuditEvent.seq,
                        m.AuditEvent.action,
                        m.AuditEvent.key_version,
                        m.AuditEvent.details_blob,
                        m.AuditEvent.request_id,
                    )
                    .where(m.AuditEvent.client_id == client.id, m.AuditEvent.action.in_(GRANT_ACTIONS))
                    .order_by(m.AuditEvent.seq)
                )
            ),
        )
        made = seal.new_key(draft)
        self._check_new_key(draft, made)
        self._store_new_key(s, caller.me, client, draft, made, now)
        # Every version of the client's secrets is still to re-wrap (none can name the version
        # just made), so they are counted from the primary-key index alone, without reading rows.
        total = s.scalar(
            select(func.count()).select_from(m.SecretVersion).join(m.Secret).where(m.Secret.client_id == client.id)
        )
        rotation = m.Rotation(
            client_id=client.id,
            from_version=old_version,
            to_version=draft.new_version,
            state=RUNNING,
            total=int(total or 0),
            done=0,
            started_by=caller.me.id,
            started_at=now,
        )
        s.add(rotation)
        s.flush()
        details = {"from_version": old_version, "to_version": draft.new_version, "data_keys": int(total or 0)}
        seq = self.recorder.append(s, START, client_id=client.id, details=details)
        return Started(_row(rotation), seq)

    @staticmethod
    def _check_new_key(draft: StartDraft, made: NewClientKey) -> None:
        """What the keyholder made is for this version, with one copy per grantee handed out."""
        if not isinstance(made, NewClientKey) or made.version != draft.new_version:
            raise UntrustedRecord("the new client key is not the version this rotation makes")
        grantees = [g.engineer.id for g in draft.grantees]
        sealed_to = [engineer_id for engineer_id, _ in made.engineer_seals]
        if sorted(sealed_to) != sorted(grantees) or len(set(sealed_to)) != len(sealed_to):
            raise UntrustedRecord("the new client key is sealed to other engineers than the grantees")
        fields = [made.slug_blob, made.name_blob, made.lookup_key_blob, made.audit_keys_blob]
        if made.backup_key_blob is not None:
            fields.append(made.backup_key_blob)
        if (made.backup_key_blob is None) != (draft.client.backup_key_blob is None) or any(
            blob_key_version(blob) != made.version for blob in fields
        ):
            raise UntrustedRecord("the client's fields are not under the new client key")

    def _store_new_key(
        self, s: Session, me: EngineerRow, client: m.Client, draft: StartDraft, made: NewClientKey, now: dt.datetime
    ) -> None:
        version = made.version
        record = m.ClientKey(
            client_id=client.id,
            version=version,
            state=ACTIVE,
            fingerprint=made.fingerprint,
            signed_by=me.id,
            signed_at=made.signed_at,
            signature=made.signature,
            encryptions=0,
            created_at=now,
        )
        self.checks.client_key_record(s, record)  # signed by the caller, for this vault, client and version
        s.add(record)
        s.flush()
        seals = [("recovery", draft.root_version, made.recovery_seal)]
        seals += [("engineer", engineer_id, blob) for engineer_id, blob in made.engineer_seals]
        for kind, recipient, blob in seals:
            s.add(
                m.ClientKeySeal(
                    client_id=client.id, version=version, recipient_kind=kind, recipient_id=recipient, blob=blob
                )
            )
        for old in s.scalars(
            select(m.ClientKey).where(
                m.ClientKey.client_id == client.id, m.ClientKey.state == ACTIVE, m.ClientKey.version != version
            )
        ):
            old.state, old.retired_at = RETIRING, now
        client.current_key_version = version
        client.slug_blob, client.name_blob = made.slug_blob, made.name_blob
        client.lookup_key_blob, client.audit_keys_blob = made.lookup_key_blob, made.audit_keys_blob
        if made.backup_key_blob is not None:  # the per-client backup key lives on (old backups need it)
            client.backup_key_blob = made.backup_key_blob
        s.flush()
        count_encryptions(rows.connection(s), client.id, version, 4)

    # -- re-wrap (rotation_batches.py) ---------------------------------------------------------

    def open(self, request: OpenRequest) -> RotationBasis:
        """What the rotation's batches share, for the keyholder to verify once."""
        return self.batches.open(request)

    def rewrap(
        self, request: BatchRequest, seal: RewrapSeal, *, s: Session | None = None, outer: Outer | None = None
    ) -> BatchDone:
        """Re-wrap the next page of data keys, if the basis the request names is still stored
        (``s`` and ``outer``: the team server's, ``rotation_batches.RotationBatches.rewrap``)."""
        return self.batches.rewrap(request, seal, s=s, outer=outer)

    # -- finish --------------------------------------------------------------------------------

    def finish(self, request: FinishRequest, *, s: Session | None = None) -> Finished:
        """End the rotation: destroy the retiring versions nothing refers to any more (``s``: inside
        the caller's unit of work: the team server's, its nonce remembered first)."""
        if not isinstance(request, FinishRequest) or not isinstance(request.final, bool):
            raise InvalidInput("not a finish request")
        checked_caller(request.caller)
        validation.number("rotation id", request.rotation_id, 1)
        if s is None:
            with self.store.transaction() as unit:
                return self.finish(request, s=unit)
        self._authorise(s, request.caller)
        rotation = s.get(m.Rotation, request.rotation_id)
        if rotation is None:
            raise NotFound("no such rotation")
        if rotation.state != RUNNING:
            return Finished(_row(rotation), True, ())
        in_use = old_versions_in_use(s, rotation.client_id, rotation.to_version)
        if in_use and not request.final:
            return Finished(_row(rotation), False, ())
        now = self.clock()
        destroyed = []
        for ck in s.scalars(
            select(m.ClientKey).where(m.ClientKey.client_id == rotation.client_id, m.ClientKey.state == RETIRING)
        ):
            if in_use.get(ck.version):  # a data key still needs it: never destroyed
                continue
            s.execute(
                delete(m.ClientKeySeal).where(
                    m.ClientKeySeal.client_id == ck.client_id, m.ClientKeySeal.version == ck.version
                )
            )
            ck.state, ck.destroyed_at = DESTROYED, now
            destroyed.append(ck.version)
        rotation.state, rotation.finished_at = DONE, now
        details = {"to_version": rotation.to_version, "data_keys": rotation.done}
        self.recorder.append(s, FINISH, client_id=rotation.client_id, details=details)
        return Finished(_row(rotation), True, tuple(destroyed))

    # -- the listing ---------------------------------------------------------------------------

    def list(self, request: ListRequest) -> tuple[RotationRow, ...]:
        """The rotations, oldest first (read without the write lock; ``rotation_reads.py``)."""
        return self.reads.list(request).rotations

    def versions(self, request: VersionsRequest) -> tuple[KeyVersionRow, ...]:
        """A client's key versions and their states, oldest first (``rotation_reads.py``)."""
        return self.reads.versions(request).versions

    # -- who calls -----------------------------------------------------------------------------

    def _authorise(self, s: Session, caller: Caller, *, client_id: int | None = None) -> CallerRead:
        """An active admin whose certificate verifies, of the key generation the request names
        (``client_id``: or an engineer holding the head of their grant ledger for it). Nothing
        of a client or a rotation is read before: the caller's read names the client's id only."""
        return CallerGate(self.checks).authorise(s, caller, admin=client_id is None, client_id=client_id)

    # -- rows ----------------------------------------------------------------------------------

    @staticmethod
    def _org_chain(s: Session, pinned: bytes, current: bytes) -> tuple[OrgKeyRow, ...]:
        return org_chain_rows(rows.connection(s), pinned, current)

    @staticmethod
    def _sealed_key(s: Session, client_id: int, version: int, root_version: int) -> SealedClientKey | None:
        """The signed record of a client-key version, its signer and its recovery copy."""
        params = {"client": client_id, "version": version, "kind": "recovery", "recipient": root_version}
        found = SEALED_KEY.all(rows.connection(s), params)
        if not found:
            return None
        r = found[0]
        signer = None if r[8] is None else EngineerRow._make(r[8 : 8 + ENGINEER_WIDTH])
        return SealedClientKey(ClientKeyRow(*r[:7]), signer, "recovery", root_version, r[7])
