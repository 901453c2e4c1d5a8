"""The values that cross between the keyholder and the authority, for client-key rotation.

As for the checkout and the secrets (``requests.py``, ``secret_requests.py``): frozen values
of ints, bytes, strings and the storage layer's plain rows, so that the same requests can be
serialised and cross a network later. A request names the action (its type), the caller and
the target by ids only; what the authority answers is ciphertext, ids and signed public
records, which the keyholder verifies before it uses any of them.

A rotation has three steps, each its own unit of work at the authority:

* **start** (``StartRequest`` → ``StartDraft`` → ``NewClientKey`` → ``Started``): the
  authority reads the client, its current key version (the recovery copy and its signed
  record), the number of the new version and the grantees it would seal to (each with its
  certificate, grant head and signer); the keyholder verifies all of it, makes the new key,
  signs its record and seals it to the recovery key and each verified grantee, and
  re-encrypts the client's fields under it; the authority stores exactly that.
* **open** (``OpenRequest`` → ``RotationBasis``), once per run of the re-wrap (a rotation
  just started, or resumed): what no batch changes — the caller's own row and the
  organisation chain, the rotation, and the signed record, signer and recovery copy of
  every client-key version of the client. The keyholder verifies it once, keeps the keys
  it opened from it and its ``digest``.
* **re-wrap** (``BatchRequest`` → ``Batch`` → ``Rewrapped`` rows → ``BatchDone``): the
  request names the basis's digest; the authority reads the rotation and the client-key
  versions again (one statement) and refuses (``STALE_BASIS``, nothing written) unless
  they are the rows the keyholder verified; then it hands a page of wrapped data keys,
  which the keyholder re-wraps under the new version with the keys it opened; the
  authority stores a re-wrapped key only for a row it handed out in this page.
* **finish** (``FinishRequest`` → ``Finished``): the authority destroys the retiring
  versions no data key refers to any more and marks the rotation done.

``ListRequest`` reads the rotations (``RotationRow``: ids and counters only; the keyholder
opens the client's slug itself); ``VersionsRequest`` a client's key versions and states.
Refusals the keyholder says in the user's words: ``ALREADY_RUNNING`` and ``NO_CLIENT``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from vault.authority.grant_requests import GRANT, REVOKE
from vault.authority.requests import Caller, OrgKeyRow, SealedClientKey
from vault.crypto.chain import ContextItem, typed_ctx
from vault.storage.rows import EngineerRow, GrantRow

START, FINISH = "client-key-rotate", "client-key-rotated"
RUNNING, RETIRING, DESTROYED, DONE, SUPERSEDED = "running", "retiring", "destroyed", "done", "superseded"
ALREADY_RUNNING = "a rotation of this client is already under way"
NO_CLIENT = "no such client"
MAX_BATCH = 100_000  # data keys re-wrapped in one unit of work, at most
STALE_BASIS = "the rotation or its client-key versions changed since this admin verified them: nothing re-wrapped"
BASIS_LABEL = b"credvault/v1/rotation-basis"  # the digest of a basis (``basis_digest``): compared, never stored


@dataclass(frozen=True)
class StartRequest:
    """Start a rotation of client ``client_id``. ``supersede``: a rotation of it under way is
    superseded (an engineer's removal); else the request is refused (``ALREADY_RUNNING``)."""

    caller: Caller
    client_id: int
    supersede: bool
    org_pin: bytes  # the organisation key the engineer trusts


@dataclass(frozen=True, repr=False)
class RotatedClient:
    """The client's fields as stored: ciphertext under its current key version."""

    id: int
    slug_blob: bytes
    name_blob: bytes
    lookup_key_blob: bytes
    backup_key_blob: bytes | None
    audit_keys_blob: bytes | None

    def __repr__(self) -> str:
        return f"RotatedClient(id={self.id}, <ciphertext>)"


@dataclass(frozen=True, repr=False)
class Grantee:
    """An engineer the new version would be sealed to: their row (certificate, sealing key),
    the head of their grant ledger for the client and its signer."""

    engineer: EngineerRow
    grant: GrantRow
    grant_signer: EngineerRow | None

    def __repr__(self) -> str:
        return f"Grantee(engineer={self.engineer.id}, grant={self.grant.id})"


GRANT_ACTIONS = (GRANT, REVOKE)  # the events a start hands the keyholder (``StartDraft.grant_events``)


@dataclass(frozen=True, repr=False)
class GrantEvent:
    """A grant or revoke event of the client as stored: its number, action and details
    (ciphertext under the client's audit key, bound to the client, the number and the
    action). The keyholder opens them: a revocation the database no longer shows on the
    grant row (its columns blanked) still takes the grantee out of the rotation."""

    seq: int
    action: str
    key_version: int | None
    details_blob: bytes | None
    request_id: bytes | None = None  # format 3: the details are bound to the request's id instead

    def __repr__(self) -> str:
        return f"GrantEvent(seq={self.seq}, action={self.action!r})"


@dataclass(frozen=True, repr=False)
class StartDraft:
    """What the keyholder is shown inside the start's unit of work, before anything is written."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]  # from the pinned key to the current one, when they differ
    me: EngineerRow
    client: RotatedClient
    old_key: SealedClientKey  # the current version: its signed record and its recovery copy
    new_version: int
    root_version: int  # the recovery key the new version is sealed to
    grantees: tuple[Grantee, ...]
    grant_events: tuple[GrantEvent, ...]  # every grant and revoke event of the client, by seq

    def __repr__(self) -> str:
        return f"StartDraft(client={self.client.id}, new_version={self.new_version})"


@dataclass(frozen=True, repr=False)
class NewClientKey:
    """The new client-key version as the keyholder made it: its signed record (no key), its
    sealed copies and the client's fields re-encrypted under it."""

    version: int
    fingerprint: bytes
    signed_at: int
    signature: bytes
    recovery_seal: bytes
    engineer_seals: tuple[tuple[int, bytes], ...]  # (engineer id, sealed copy), one per grantee
    slug_blob: bytes
    name_blob: bytes
    lookup_key_blob: bytes
    backup_key_blob: bytes | None
    audit_keys_blob: bytes

    def __repr__(self) -> str:
        return f"NewClientKey(version={self.version}, <ciphertext>)"


@dataclass(frozen=True)
class RotationRow:
    """A rotation as stored (``rotations``): ids, versions, state and counters."""

    id: int
    client_id: int
    from_version: int
    to_version: int
    state: str
    done: int
    total: int
    started_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class Started:
    """A committed start: the rotation and its event."""

    rotation: RotationRow
    seq: int


@dataclass(frozen=True)
class OpenRequest:
    """What the batches of rotation ``rotation_id`` share (``RotationBasis``), read once."""

    caller: Caller
    rotation_id: int
    org_pin: bytes  # the organisation key the engineer trusts


@dataclass(frozen=True, repr=False)
class RotationBasis:
    """What does not change from one batch of a rotation to the next, sent once per run of
    the re-wrap: the caller's own row and the organisation chain (the keyholder checks
    itself), the rotation, the recovery-key version the copies are sealed to, and every
    client-key version of the client, oldest first: its signed record, its signer and its
    recovery copy (``blob`` None for a destroyed version). ``digest`` covers all but the
    caller's row and chain, which every batch's caller check reads again."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    rotation: RotationRow
    root_version: int
    keys: tuple[SealedClientKey, ...]

    def __repr__(self) -> str:
        return f"RotationBasis(rotation={self.rotation.id}, versions={len(self.keys)})"

    def digest(self) -> bytes:
        return basis_digest(self.rotation, self.root_version, self.keys)


def basis_digest(rotation: RotationRow, root_version: int, keys: Sequence[SealedClientKey]) -> bytes:
    """SHA-256 of the typed encoding of the rotation's identity (not its counters), the
    recovery-key version and each client-key version's record, recovery copy and signer:
    the same rows give the same digest on both halves, any change to one another digest."""
    items: list[ContextItem] = [BASIS_LABEL, rotation.id, rotation.client_id, rotation.from_version]
    items += [rotation.to_version, rotation.state, root_version, len(keys)]
    for key in keys:
        record, signer = key.record, key.signer
        items += [record.client_id, record.version, record.fingerprint, record.signed_at, record.signed_by]
        items += [record.signature, record.state, key.kind, key.recipient_id, key.blob]
        items += [0] if signer is None else [1, *signer]
    return hashlib.sha256(typed_ctx(*items)).digest()


@dataclass(frozen=True)
class BatchRequest:
    """The next page of data keys of rotation ``rotation_id`` after ``after`` (secret id,
    version), at most ``size`` of them, to be re-wrapped; ``basis``: the digest of the
    rotation's basis the keyholder verified (the batch is refused if the rows changed)."""

    caller: Caller
    rotation_id: int
    after: tuple[int, int]
    size: int
    basis: bytes


class WrappedKey(NamedTuple):
    """One version's data key, wrapped by client-key version ``key_version``. A named tuple
    (like the storage layer's rows): a page's rows are made from the driver's rows as they
    come, a thousand at a time, without a constructor's checks (the keyholder's AEAD is
    the check: a wrapped key opens only under its client, secret and version)."""

    secret_id: int
    version: int
    key_version: int
    wrapped_dek: bytes

    def __repr__(self) -> str:
        return f"WrappedKey(secret={self.secret_id}, version={self.version}, key_version={self.key_version})"


@dataclass(frozen=True, repr=False)
class Batch:
    """A page handed to the keyholder inside the batch's unit of work: the rotation, the
    digest of its basis the authority compared with what is stored, and the page's rows."""

    rotation_id: int
    basis: bytes
    rows: tuple[WrappedKey, ...]

    def __repr__(self) -> str:
        return f"Batch(rotation={self.rotation_id}, rows={len(self.rows)})"


class Rewrapped(NamedTuple):
    """A data key re-wrapped by the keyholder under the rotation's new version."""

    secret_id: int
    version: int
    wrapped_dek: bytes

    def __repr__(self) -> str:
        return f"Rewrapped(secret={self.secret_id}, version={self.version})"


@dataclass(frozen=True)
class BatchDone:
    """A committed batch: how many were re-wrapped, the cursor past them, the counters."""

    rotation_id: int
    count: int
    cursor: tuple[int, int]
    done: int
    total: int


@dataclass(frozen=True)
class FinishRequest:
    """End rotation ``rotation_id`` if nothing refers to a retiring version any more, or
    (``final``: a second walk found rows again) destroy only those nothing refers to."""

    caller: Caller
    rotation_id: int
    final: bool


@dataclass(frozen=True)
class Finished:
    """The rotation after the finish's unit (``ended`` False: walk again), and the versions
    it destroyed."""

    rotation: RotationRow
    ended: bool
    destroyed: tuple[int, ...]


@dataclass(frozen=True)
class VersionsRequest:
    """The client-key versions of client ``client_id`` and their states (an admin, or an
    engineer holding the head of their grant ledger for the client)."""

    caller: Caller
    client_id: int


@dataclass(frozen=True)
class KeyVersionRow:
    """A client-key version and its state (``active``, ``retiring``, ``destroyed``)."""

    version: int
    state: str


@dataclass(frozen=True)
class ListRequest:
    """The rotations (``running_only``: those under way), oldest first."""

    caller: Caller
    running_only: bool
