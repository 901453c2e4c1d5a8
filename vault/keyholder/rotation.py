"""Client-key rotation, where the admin's keys are: verify what the authority hands, make,
sign, seal and re-wrap.

``RotationKeyholder`` drives the authority's state machine (authority/rotation.py) by
requests naming ids only, and checks everything it is handed before it uses it:

* its own row: certified under the organisation key it pinned (or one the signed chain
  leads to from it), active, an admin, with this session's id, key generation and key;
* a client-key version: its record signed by an active admin, for this client and
  version, not destroyed; its recovery copy opened with the admin's recovery key (the
  bundle this session opened, never a public key the authority names) and matching the
  signed fingerprint;
* at the start, every grantee the new version would be sealed to: their certificate (so
  their sealing key is the one the organisation certified), their account active, and
  the head of their grant ledger for this client, signed by an active admin over that
  sealing key, unrevoked and unexpired. One that does not verify refuses the rotation:
  the new key is sealed to no key the keyholder has not verified;
* once per run of the re-wrap (``open``: a rotation started or resumed), the rotation's
  basis: the rotation is the one asked for (client, new version), its new version the
  client's newest admin-signed one, and the versions' records and copies as above. The
  keys opened and the basis's digest are kept (``_Opened``); each batch names that digest,
  and the authority refuses the batch unless the rotation and its client-key versions are
  still those rows (a DBA's change between two batches writes nothing);
* in a batch: it is of the rotation opened, under the digest verified, and every data key
  unwraps under the client's key bound to (client, secret, version): a wrapped key of
  another client or row opens nothing, and the batch is refused whole.

The new key, its signature, its sealed copies, the client's fields re-encrypted under it
and the re-wrapped data keys are made here; the authority stores them as given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from vault.authority.requests import Caller, ClientKeyRow, SealedClientKey
from vault.authority.rotation_requests import (
    ALREADY_RUNNING,
    RUNNING,
    Batch,
    BatchDone,
    BatchRequest,
    Finished,
    FinishRequest,
    KeyVersionRow,
    ListRequest,
    NewClientKey,
    OpenRequest,
    Rewrapped,
    RotationBasis,
    RotationRow,
    StartDraft,
    Started,
    StartRequest,
    VersionsRequest,
    WrappedKey,
)
from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL, LABEL_SIG_CLIENT_KEY
from vault.errors import DecryptionFailed, IntegrityError, InvalidInput, Locked, UntrustedRecord, VaultError
from vault.keyholder.keys import Keys
from vault.keyholder.responses import ResponseChecks, trusted_org_key
from vault.keyholder.rotation_grants import check_grant_events
from vault.keyholder.sessionkeys import SessionKeys
from vault.keyholder.trust import client_key_fields
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRow, KeyCache

FIELDS = ("slug", "name", "lookup-key")  # the client's fields, re-encrypted under the new key


class RotationKeys(SessionKeys):
    """The admin's unlocked keys as rotation asks for them: those of ``SessionKeys``, the
    recovery key's version and public half (of the bundle this session opened) and a
    signature by the admin's key. No private key leaves it."""

    def __init__(self, keys: Keys, store: Store) -> None:
        super().__init__(keys, store)
        self._held = keys

    def recovery(self) -> tuple[int, bytes] | None:
        bundle = self._held.root
        return None if bundle is None else (bundle.version, bundle.recovery.public)

    def sign(self, label: bytes, *fields: signing.ContextItem) -> bytes:
        return self._held.my_signing_key().sign(label, *fields)


class RotationKeyring(Protocol):
    """What the rotation's keyholder asks of the admin's unlocked keys (``RotationKeys`` in-process,
    ``service/remotekeys.RemoteKeys`` through a team server): no private key leaves them."""

    def session(self) -> Any: ...
    def sealing_public(self) -> bytes: ...
    def open_sealed(
        self, kind: str, recipient_id: int, version: int, blob: bytes, context: tuple[Any, ...]
    ) -> bytes: ...
    def recovery(self) -> tuple[int, bytes] | None: ...
    def sign(self, label: bytes, *fields: signing.ContextItem) -> bytes: ...


class _Opened:
    """A rotation's basis as this keyholder verified it at the open: the rotation, the digest
    its batches name, the checks made under the organisation key it trusted, the client-key
    versions' verified-to-be-handed records (opened when a row needs one) and the keys opened."""

    __slots__ = ("checks", "digest", "keys", "records", "rotation")

    def __init__(self, rotation: RotationRow, digest: bytes, checks: ResponseChecks) -> None:
        self.rotation, self.digest, self.checks = rotation, digest, checks
        self.records: dict[int, SealedClientKey] = {}
        self.keys: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return f"OpenedRotation(rotation={self.rotation.id}, <keys redacted>)"


class RotationTransport(Protocol):
    def start(self, request: StartRequest, seal: Any, unit: Any = None) -> Started: ...
    def open(self, request: OpenRequest) -> RotationBasis: ...
    def rewrap(self, request: BatchRequest, seal: Any) -> BatchDone: ...
    def finish(self, request: FinishRequest) -> Finished: ...
    def list(self, request: ListRequest) -> tuple[RotationRow, ...]: ...
    def versions(self, request: VersionsRequest) -> tuple[KeyVersionRow, ...]: ...


class RotationLookup(Protocol):
    """The client's id by its slug (the recovery key opened in the same unit), the slugs of
    clients by id, and the recovery key opened before a batch."""

    def client_id(self, slug: str, unit: Any = None) -> int: ...
    def open_recovery(self, unit: Any = None) -> None: ...
    def slugs(self, client_ids: Iterable[int]) -> dict[int, str]: ...


class RotationKeyholder:
    """Start, re-wrap and finish client-key rotations for the admin whose keys ``keys`` holds."""

    def __init__(
        self,
        transport: RotationTransport,
        keys: RotationKeyring,
        lookup: RotationLookup,
        cache: KeyCache,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.transport, self.keys, self.lookup, self.cache, self.clock = transport, keys, lookup, cache, clock
        self.cursors: dict[int, tuple[int, int]] = {}  # rotation id -> past the last re-wrapped (secret id, version)
        self.known: dict[int, tuple[int, int]] = {}  # rotation id -> (client id, new version), as started or listed
        self.opened: dict[int, _Opened] = {}  # rotation id -> its basis as verified at the open, with its keys

    def __repr__(self) -> str:
        return "RotationKeyholder(<redacted>)"

    # -- start ---------------------------------------------------------------------------------

    def rotate(self, slug: str) -> Started:
        """Start a rotation of client ``slug``; one under way is refused in the user's words."""
        client_id = self.lookup.client_id(slug)
        try:
            return self.start(client_id, supersede=False)
        except InvalidInput as error:
            if str(error) == ALREADY_RUNNING:
                raise InvalidInput(
                    f"a rotation of {slug!r} is already under way", hint="run `credvault rotate resume`"
                ) from None
            raise

    def start(self, client_id: int, *, supersede: bool, unit: Any = None) -> Started:
        """Start a rotation of ``client_id`` (``unit``: inside the caller's unit of work)."""
        me = self.keys.session()
        self.lookup.open_recovery(unit)
        request = StartRequest(Caller(me.engineer_id, me.key_generation), client_id, supersede, me.org_signing_public)
        made: list[NewClientKey] = []

        def made_for(draft: StartDraft) -> NewClientKey:
            if made:
                raise UntrustedRecord("the authority asked for a second new key in one start")
            made.append(self.new_key(client_id, draft))
            return made[0]

        seal = _Seal(start=made_for)
        try:
            started = self.transport.start(request, seal, unit)
        finally:
            seal.close()
        row = started.rotation
        if not made or (row.client_id, row.to_version, row.state) != (client_id, made[0].version, RUNNING):
            raise UntrustedRecord("the authority's answer is not the rotation this keyholder started")
        self.known[row.id] = (row.client_id, row.to_version)
        return started

    def new_key(self, client_id: int, draft: StartDraft) -> NewClientKey:
        """``draft`` verified row by row, then the new version made for it (a start's seal; a removal
        through the team server hands each drafted start here: ``service/remote_engineers.py``)."""
        checks = self._check_me(draft.vault_id, draft.org_signing_public, draft.org_chain, draft.me)
        client = draft.client
        if client.id != client_id:
            raise UntrustedRecord("the authority answered for another client than the one asked for")
        recovery = self.keys.recovery()
        if recovery is None or recovery[0] != draft.root_version:
            raise UntrustedRecord("the authority names another recovery key than the one this admin holds")
        old_version = draft.old_key.record.version
        if not 1 <= old_version < draft.new_version:
            raise UntrustedRecord("the new client-key version does not follow the current one")
        old = self._client_key(checks, client_id, draft.old_key)
        values = {
            purpose: self._field(old, old_version, blob, client_id, purpose)
            for purpose, blob in zip(FIELDS, (client.slug_blob, client.name_blob, client.lookup_key_blob), strict=True)
        }
        backup = None
        if client.backup_key_blob is not None:
            backup = self._field(old, old_version, client.backup_key_blob, client_id, "backup-key")
        ring = blobs.new_key()
        if client.audit_keys_blob is not None:
            ring = self._field(old, old_version, client.audit_keys_blob, client_id, "audit-keys")
            if not ring or len(ring) % 32:
                raise DecryptionFailed()
        seen = set()
        for grantee in draft.grantees:
            engineer = grantee.engineer
            try:
                checks.certificate(engineer)
                if engineer.status != ACTIVE or engineer.id in seen:
                    raise UntrustedRecord("not an active engineer")
                checks.grant(grantee.grant, grantee.grant_signer, engineer, client_id)
            except VaultError:
                raise UntrustedRecord(
                    f"the authority named a grantee ({engineer.name!r}) whose keys or grant do not verify: "
                    "the new client key is sealed to nobody unverified"
                ) from None
            seen.add(engineer.id)
        if client.audit_keys_blob is not None:  # a client without audit keys has no sealed grant events
            check_grant_events(draft, ring)
        # The new version: a fresh key, its record signed by this admin, sealed, fields moved to it.
        version, vault_id = draft.new_version, draft.vault_id
        key = blobs.new_key()
        record = ClientKeyRow(
            client_id,
            version,
            signing.client_key_fingerprint(key),
            int(self.clock().timestamp()),
            draft.me.id,
            None,
            ACTIVE,
        )

        def sealed_to(kind: str, recipient: int, public: bytes) -> bytes:
            return sealing.seal(
                public, version, key, (LABEL_CLIENT_KEY_SEAL, vault_id, client_id, version, kind, recipient)
            )

        def field(value: bytes, purpose: str) -> bytes:
            return blobs.encrypt_client_field(key, version, value, client_id, purpose)

        engineer_seals = []
        for grantee in draft.grantees:
            assert grantee.engineer.sealing_public is not None  # certified: checked above
            engineer_seals.append(
                (grantee.engineer.id, sealed_to("engineer", grantee.engineer.id, grantee.engineer.sealing_public))
            )
        new = NewClientKey(
            version=version,
            fingerprint=record.fingerprint,
            signed_at=record.signed_at,
            signature=self.keys.sign(LABEL_SIG_CLIENT_KEY, *client_key_fields(vault_id, record)),
            recovery_seal=sealed_to("recovery", recovery[0], recovery[1]),
            engineer_seals=tuple(engineer_seals),
            slug_blob=field(values["slug"], "slug"),
            name_blob=field(values["name"], "name"),
            lookup_key_blob=field(values["lookup-key"], "lookup-key"),
            backup_key_blob=None if backup is None else field(backup, "backup-key"),
            audit_keys_blob=field(ring + blobs.new_key(), "audit-keys"),  # a fresh audit key for later events
        )
        self.cache[(client_id, version)] = key
        return new

    # -- re-wrap -------------------------------------------------------------------------------

    def open(self, rotation_id: int) -> _Opened:
        """Rotation ``rotation_id``'s basis, asked once and verified here; kept (if the rotation
        is running) for its batches, which name its digest."""
        self.opened.pop(rotation_id, None)
        me = self.keys.session()
        self.lookup.open_recovery()
        basis = self.transport.open(
            OpenRequest(Caller(me.engineer_id, me.key_generation), rotation_id, me.org_signing_public)
        )
        if not isinstance(basis, RotationBasis) or not isinstance(basis.keys, tuple):
            raise UntrustedRecord("the authority's answer is not a rotation's basis")
        checks = self._check_me(basis.vault_id, basis.org_signing_public, basis.org_chain, basis.me)
        rotation = basis.rotation
        if rotation.id != rotation_id:
            raise UntrustedRecord("the authority handed the basis of another rotation")
        opened = _Opened(rotation, basis.digest(), checks)
        if rotation.state != RUNNING:
            return opened  # nothing to re-wrap: no key is opened, nothing kept
        client_id, new_version = rotation.client_id, rotation.to_version
        expected = self.known.get(rotation_id)
        if expected is not None and (client_id, new_version) != expected:
            raise UntrustedRecord("the authority handed a rotation of another client or key version")
        if new_version != self._newest_signed(checks, client_id, basis.keys):
            raise UntrustedRecord(
                "the rotation's new key version is not the client's newest admin-signed one: nothing is re-wrapped"
            )
        for sealed in basis.keys:
            if sealed.record.version in opened.records:
                raise UntrustedRecord("the authority handed a client-key version twice")
            opened.records[sealed.record.version] = sealed
        opened.keys[new_version] = self._client_key(checks, client_id, opened.records.pop(new_version))
        self.known.setdefault(rotation_id, (client_id, new_version))  # a later open must hand the same
        self.opened[rotation_id] = opened
        return opened

    def batch(self, rotation_id: int, size: int) -> BatchDone:
        """Re-wrap the next page of rotation ``rotation_id``; the cursor moves once it is committed."""
        me = self.keys.session()
        opened = self.opened.get(rotation_id) or self.open(rotation_id)
        cursor, row = self.cursors.get(rotation_id, (0, 0)), opened.rotation
        if row.state != RUNNING:
            return BatchDone(rotation_id, 0, cursor, row.done, row.total)
        request = BatchRequest(Caller(me.engineer_id, me.key_generation), rotation_id, cursor, size, opened.digest)
        made: list[int] = []

        def rewrap(batch: Batch) -> tuple[Rewrapped, ...]:
            out = self._rewrap(opened, batch)
            made.append(len(out))
            return out

        seal = _Seal(rewrap=rewrap)
        try:
            done = self.transport.rewrap(request, seal)
        except IntegrityError:
            self.opened.pop(rotation_id, None)  # a refused basis or batch: the next run verifies afresh
            raise
        finally:
            seal.close()
        if done.rotation_id != rotation_id or done.count != (made[0] if made else 0):
            raise UntrustedRecord("the authority's answer is not the batch this keyholder re-wrapped")
        self.cursors[rotation_id] = done.cursor
        return done

    def _rewrap(self, opened: _Opened, batch: Batch) -> tuple[Rewrapped, ...]:
        """The batch's rows re-wrapped with the keys of the basis verified at the open."""
        if batch.rotation_id != opened.rotation.id or batch.basis != opened.digest:
            raise UntrustedRecord("the authority handed a batch of another rotation, or under another basis")
        client_id, new_version = opened.rotation.client_id, opened.rotation.to_version
        rows = batch.rows
        if not isinstance(rows, tuple) or not all(type(row) is WrappedKey for row in rows):
            raise UntrustedRecord("the authority handed a batch that is not a page of wrapped keys")
        keys = opened.keys
        for version in {row.key_version for row in rows} - keys.keys():
            sealed = opened.records.get(version)
            if sealed is None:
                raise DecryptionFailed()  # a row wrapped by no version of the basis
            keys[version] = self._client_key(opened.checks, client_id, sealed)
        if any(row.key_version == new_version for row in rows):
            raise DecryptionFailed()  # a row said to be wrapped by the new version already
        old = {version: key for version, key in keys.items() if version != new_version}
        rewrapped = blobs.rewrap_data_keys(old, keys[new_version], new_version, client_id, rows)
        return tuple(Rewrapped(row[0], row[1], dek) for row, dek in zip(rows, rewrapped, strict=True))

    @staticmethod
    def _newest_signed(checks: ResponseChecks, client_id: int, records: tuple[SealedClientKey, ...]) -> int:
        """The newest client-key version whose record an admin signed and that is not destroyed
        (0: none). A version set back by the database on a resumed rotation is not it."""
        newest = 0
        for sealed in records if isinstance(records, tuple) else ():
            version = sealed.record.version
            try:
                checks.client_key(sealed, client_id, version)
            except VaultError:
                continue  # unsigned, forged or destroyed: never a version to re-wrap under
            newest = max(newest, version)
        return newest

    # -- finish and the listing ----------------------------------------------------------------

    def finish(self, rotation_id: int, *, final: bool) -> Finished:
        """End the rotation if nothing refers to an old version (or ``final``); drop destroyed keys."""
        me = self.keys.session()
        answer = self.transport.finish(FinishRequest(Caller(me.engineer_id, me.key_generation), rotation_id, final))
        row = answer.rotation
        if row.id != rotation_id or (
            rotation_id in self.known and self.known[rotation_id] != (row.client_id, row.to_version)
        ):
            raise UntrustedRecord("the authority's answer is not the rotation asked for")
        if row.to_version in answer.destroyed:
            raise UntrustedRecord("the authority says it destroyed the rotation's new client-key version")
        for version in answer.destroyed:
            self.cache.pop((row.client_id, version), None)
        if answer.ended:
            self.cursors.pop(rotation_id, None)
            self.opened.pop(rotation_id, None)
        return answer

    def list(self, *, running_only: bool) -> tuple[RotationRow, ...]:
        me = self.keys.session()
        found = self.transport.list(ListRequest(Caller(me.engineer_id, me.key_generation), running_only))
        for row in found:
            if row.state == RUNNING:
                self.known.setdefault(row.id, (row.client_id, row.to_version))
        return found

    def versions(self, slug: str) -> tuple[KeyVersionRow, ...]:
        """Client ``slug``'s key versions and states (looked up as the caller may: a grant's)."""
        me = self.keys.session()
        client_id = self.lookup.client_id(slug)
        return self.transport.versions(VersionsRequest(Caller(me.engineer_id, me.key_generation), client_id))

    def slugs(self, found: Iterable[RotationRow]) -> dict[int, str]:
        """The slug of each rotation's client (``#id`` for a client no longer there)."""
        return self.lookup.slugs({row.client_id for row in found})

    # -- the checks ----------------------------------------------------------------------------

    def _check_me(self, vault_id: bytes, current: bytes, chain: Any, row: EngineerRow) -> ResponseChecks:
        me = self.keys.session()
        if vault_id != me.vault_id:
            raise UntrustedRecord("the answer comes from another vault")
        org = trusted_org_key(vault_id, me.org_signing_public, current, chain)
        checks = ResponseChecks(vault_id, org, self.clock())
        if row.id != me.engineer_id or row.name != me.name:
            raise Locked(f"engineer {me.name!r} no longer exists in this vault")
        checks.certificate(row)
        if row.status != ACTIVE or row.role != ROLE_ADMIN:
            raise UntrustedRecord(f"{me.name!r} is not an active admin")
        if row.key_generation != me.key_generation or row.sealing_public != self.keys.sealing_public():
            raise Locked(f"the keys of {me.name!r} have changed since this session was unlocked")
        return checks

    def _client_key(self, checks: ResponseChecks, client_id: int, sealed: SealedClientKey) -> bytes:
        """The client key of ``sealed``: its record verified, then the copy held (its fingerprint
        checked) or the recovery copy opened with this admin's recovery key."""
        version = sealed.record.version
        checks.client_key(sealed, client_id, version)
        cached = self.cache.get((client_id, version))
        if cached is not None:
            if signing.client_key_fingerprint(cached) != sealed.record.fingerprint:
                raise UntrustedRecord(f"the signed record of client key version {version} names another key")
            return cached
        recovery = self.keys.recovery()
        if sealed.blob is None or recovery is None or (sealed.kind, sealed.recipient_id) != ("recovery", recovery[0]):
            raise DecryptionFailed()
        context = (LABEL_CLIENT_KEY_SEAL, checks.vault_id, client_id, version, "recovery", recovery[0])
        key = self.keys.open_sealed("recovery", recovery[0], version, sealed.blob, context)
        if signing.client_key_fingerprint(key) != sealed.record.fingerprint:
            raise UntrustedRecord(f"the sealed client key does not match its signed version {version}")
        self.cache[(client_id, version)] = key
        return key

    @staticmethod
    def _field(key: bytes, version: int, blob: bytes, client_id: int, purpose: str) -> bytes:
        if blobs.blob_key_version(blob) != version:
            raise DecryptionFailed()  # a client's fields are under its current key version
        return blobs.decrypt_client_field(key, version, blob, client_id, purpose)


class _Seal:
    """The keyholder's hands lent to the authority for one request (a start's or a batch's,
    never the other's), and for nothing after it."""

    def __init__(
        self,
        start: Callable[[StartDraft], NewClientKey] | None = None,
        rewrap: Callable[[Batch], tuple[Rewrapped, ...]] | None = None,
    ) -> None:
        self._start, self._rewrap = start, rewrap

    def __repr__(self) -> str:
        return "RotationSeal(<redacted>)"

    def new_key(self, draft: StartDraft) -> NewClientKey:
        if self._start is None or not isinstance(draft, StartDraft):
            raise UntrustedRecord("this request makes no new client key")
        return self._start(draft)

    def rewrap(self, batch: Batch) -> tuple[Rewrapped, ...]:
        if self._rewrap is None or not isinstance(batch, Batch):
            raise UntrustedRecord("this request re-wraps nothing")
        return self._rewrap(batch)

    def close(self) -> None:
        self._start = self._rewrap = None
