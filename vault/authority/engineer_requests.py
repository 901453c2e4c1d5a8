"""The values that cross between the keyholder and the authority, for engineers.

As for the checkout and the secrets (``requests.py``, ``secret_requests.py``): frozen values
of ints, bytes, strings and the storage layer's plain rows, so that the same requests can
be serialised and cross a network later. A request names its action, the acting engineer
(``Caller``; none for an enrolment, which the invitation authorises) and the engineer acted
on, by name. What the authority answers is public keys, signatures and sealed blobs, which
the keyholder verifies before it signs, seals or shows anything.

Each writing operation shows the keyholder a draft inside the authority's unit of work
(``InvitationDraft``, ``EnrolmentDraft``, ``PendingRows``) and stores only what the keyholder
made for it (``SignedInvitation``, ``NewKeys``, ``Certification``): a refusal writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from vault.authority.carry_draft_values import CarryDraft
from vault.authority.requests import Caller, OrgKeyRow, SealedClientKey
from vault.storage.rows import ROLE_ADMIN, ROLE_ENGINEER, ROLE_SERVICE, EngineerRow, GrantRow

INVITE, ENROLL, CONFIRM, LIST = "engineer-invite", "enroll", "engineer-confirm", "engineer-list"
RELOCK = "passphrase-change"
ROTATE, REMOVE = "engineer-key-rotate", "engineer-remove"
UNLOCK, UNLOCK_FAILED, KEY_RECORD = "unlock", "unlock-failed", "key-record"
PENDING, WHOAMI = "engineer-pending", "whoami"  # reads: no event (they never wrote one)
INVITED, ENROLLED, DISABLED = "invited", "enrolled", "disabled"
ROLES = (ROLE_ENGINEER, ROLE_ADMIN, ROLE_SERVICE)


@dataclass(frozen=True)
class InviteRequest:
    """Invite (or re-invite) ``name`` as ``role``; the invitation expires at ``expires_at`` (epoch s)."""

    caller: Caller
    name: str
    role: str
    expires_at: int
    org_pin: bytes  # the organisation key the caller trusts: a later current key comes with its chain
    action: str = INVITE


@dataclass(frozen=True)
class EnrollRequest:
    """Enrol ``name`` on this machine; ``org_fingerprint``: the prefix the enrolment code carries."""

    name: str
    org_fingerprint: bytes
    action: str = ENROLL

    def __repr__(self) -> str:
        return f"EnrollRequest(name={self.name!r})"


@dataclass(frozen=True, repr=False)
class EnrollCommit:
    """An enrolment over HTTPS (``engineers.enroll``): the keys the enrolling keyholder made for
    the invitation its draft showed, as ``caller`` (the engineer's id and the new key generation:
    the request is signed by the new signing key, keyid ``e:<id>:<generation>``), and
    ``invite_proof``: the code's derived key's signature over them (``keyholder/enrolment.py``)."""

    caller: Caller
    name: str
    org_fingerprint: bytes
    keys: NewKeys
    invite_proof: bytes
    action: str = ENROLL

    def __repr__(self) -> str:
        return f"EnrollCommit(engineer={self.caller.engineer_id}, generation={self.caller.key_generation})"


@dataclass(frozen=True)
class ConfirmRequest:
    """``PENDING`` (what confirming would do) or ``CONFIRM`` (certify the keys of ``name`` whose
    fingerprint a person compared: ``fingerprint``); ``shown``: only if what the keyholder
    showed the admin is unchanged (it compares, with the slugs it opens: none cross here)."""

    caller: Caller
    name: str
    fingerprint: str | None
    shown: bool
    org_pin: bytes
    action: str = CONFIRM


@dataclass(frozen=True)
class ListRequest:
    """``LIST`` (every engineer, an audited read) or ``WHOAMI`` (the caller's own row)."""

    caller: Caller
    org_pin: bytes
    action: str = LIST


@dataclass(frozen=True)
class PassphraseRequest:
    """Re-lock the caller's own key record under a new passphrase (the keyholder's work)."""

    caller: Caller
    org_pin: bytes
    action: str = RELOCK


@dataclass(frozen=True, repr=False)
class KeyRecordDraft:
    """The caller's row and their passphrase-locked key record, as stored."""

    identity: Identity
    key_record: bytes

    def __repr__(self) -> str:
        return "KeyRecordDraft(<key record>)"


@dataclass(frozen=True)
class KeyRecordRequest:
    """``KEY_RECORD``: an engineer's key record, by name, to open with their passphrase (no
    session yet); ``UNLOCK_FAILED``: record that it did not open (an unsigned event)."""

    name: str
    action: str = KEY_RECORD


@dataclass(frozen=True, repr=False)
class KeyRecordRows:
    """The vault's identity, its organisation keys (oldest first), the engineer and their record."""

    vault_id: bytes
    org_signing_public: bytes
    org_keys: tuple[OrgKeyRow, ...]
    engineer: EngineerRow
    key_record: bytes

    def __repr__(self) -> str:
        return f"KeyRecordRows(engineer={self.engineer.id})"


@dataclass(frozen=True, repr=False)
class UnlockRequest:
    """Record the unlock of the caller's session; ``repinned``: their key record re-locked to
    pin the current organisation key, stored only if the record is still ``opened``."""

    caller: Caller
    org_pin: bytes
    ttl_seconds: int
    opened: bytes | None = None
    repinned: bytes | None = None
    action: str = UNLOCK

    def __repr__(self) -> str:
        return f"UnlockRequest(engineer={self.caller.engineer_id}, repinned={self.repinned is not None})"


@dataclass(frozen=True)
class RotateRequest:
    """Destroy the keys of ``name`` (a lost laptop) and re-invite them with their certified role."""

    caller: Caller
    name: str
    expires_at: int
    org_pin: bytes
    action: str = ROTATE


@dataclass(frozen=True)
class EngineerKeyRow:
    """A certified copy of an engineer's public keys of one generation (``engineer_keys``)."""

    engineer_id: int
    generation: int
    sealing_public: bytes
    signing_public: bytes
    certified_at: int | None
    certificate: bytes | None


@dataclass(frozen=True)
class Invitation:
    """An engineer's signed invitation as stored (docs/format.md §5), and its signer's row."""

    prev_generation: int | None
    root_version: int | None
    expires_at: int | None
    seal: bytes | None
    signed_by: int | None
    signature: bytes | None
    signer: EngineerRow | None
    enroll_mac: bytes | None
    auth_public: bytes | None = None  # the code's derived key (``signing.invite_auth_key``), revision 0018


@dataclass(frozen=True)
class Identity:
    """The vault's identity and the caller's own row, with the organisation key chain from the
    key the caller pinned (empty when it is the current key)."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow


@dataclass(frozen=True)
class RootCopy:
    """The current recovery key (its public half) and the caller's sealed copy of the root bundle."""

    version: int
    recovery_public: bytes
    sealed: bytes | None


@dataclass(frozen=True)
class InvitationDraft:
    """What an invitation will sign: the engineer's row as reset, their newest certified key."""

    identity: Identity
    root: RootCopy
    engineer_id: int
    name: str
    role: str
    key_generation: int
    previous_key: EngineerKeyRow | None
    expires_at: int


@dataclass(frozen=True, repr=False)
class SignedInvitation:
    """The invite secret sealed to the recovery key, and the inviting admin's signature."""

    seal: bytes
    prev_generation: int
    signed_by: int
    signature: bytes
    auth_public: bytes | None = None  # the public key the code's secret derives (checked by the server)

    def __repr__(self) -> str:
        return f"SignedInvitation(signed_by={self.signed_by})"


@dataclass(frozen=True)
class EnrolmentDraft:
    """The open invitation an enrolling engineer is shown (no caller: nothing of theirs yet)."""

    vault_id: bytes
    org_signing_public: bytes
    engineer: EngineerRow
    invitation: Invitation


@dataclass(frozen=True, repr=False)
class NewKeys:
    """The enrolling engineer's public keys, their passphrase-locked record and enrolment MAC."""

    key_generation: int
    sealing_public: bytes
    signing_public: bytes
    key_record: bytes
    enroll_mac: bytes

    def __repr__(self) -> str:
        return f"NewKeys(key_generation={self.key_generation}, <redacted>)"


@dataclass(frozen=True)
class CarriedRow:
    """A grant a confirmation re-signs and re-seals: ids, the client's slug as stored (ciphertext)."""

    grant_id: int
    client_id: int
    slug_blob: bytes
    until: int | None  # epoch s


@dataclass(frozen=True)
class DroppedRow:
    """A grant row a confirmation does not carry, and why (the slug as stored, if any)."""

    grant_id: int
    client_id: int
    slug_blob: bytes | None
    reason: str


@dataclass(frozen=True)
class CarryPlan:
    """What a confirmation does with the engineer's grant rows (``invitations.py``): ids and
    ciphertext only, with the client-key versions the slugs are under, sealed to the recovery
    key (the keyholder opens each slug to show it)."""

    signer: str
    carried: tuple[CarriedRow, ...]
    dropped: tuple[DroppedRow, ...]
    keys: tuple[SealedClientKey, ...] = ()
    draft: CarryDraft | None = None  # through the team server: what the admin's machine re-signs and re-seals


@dataclass(frozen=True)
class PendingRows:
    """An enrolled engineer waiting for confirmation, as the confirming admin is shown it."""

    identity: Identity
    root: RootCopy
    engineer: EngineerRow
    invitation: Invitation
    plan: CarryPlan


@dataclass(frozen=True, repr=False)
class Certification:
    """The organisation key's certificate of the pending keys (and of their engineer-key
    record), and for an admin a copy of the root bundle sealed to them."""

    certified_at: int
    certificate: bytes
    key_certificate: bytes
    root_version: int
    root_seal: bytes | None

    def __repr__(self) -> str:
        return f"Certification(certified_at={self.certified_at})"


@dataclass(frozen=True)
class EngineerListRow:
    """One engineer as the list shows them (public keys only)."""

    name: str
    role: str
    status: str
    sealing_public: bytes | None
    signing_public: bytes | None
    key_generation: int
    created_at: dt.datetime


@dataclass(frozen=True)
class EngineerAnswer:
    """The committed answer: the event's seq (0 for a read), the caller's identity, and what
    the operation wrote or read (``engineer``: the row acted on; ``engineers``: the list)."""

    seq: int
    identity: Identity | None
    engineer: EngineerRow | None = None
    created_at: dt.datetime | None = None
    engineers: tuple[EngineerListRow, ...] = ()
    pending: PendingRows | None = None


@dataclass(frozen=True)
class RekeyDraft:
    """An active engineer about to lose their keys: their row (its certificate says the role
    they are re-invited with), and whether their current key generation has its record."""

    identity: Identity
    root: RootCopy
    engineer: EngineerRow
    key_recorded: bool


@dataclass(frozen=True, repr=False)
class Rekeyed:
    """The current generation's engineer-key record certified (None when it exists already)."""

    key_certificate: bytes | None

    def __repr__(self) -> str:
        return "Rekeyed()"


@dataclass(frozen=True)
class RemoveRequest:
    """Offboard ``name``: every grant revoked, every sealed copy deleted, the account disabled;
    ``log_verified``: whether the audit log verified (if not, every client is rotated)."""

    caller: Caller
    name: str
    org_pin: bytes
    log_verified: bool
    action: str = REMOVE


@dataclass(frozen=True)
class RemovalDraft:
    """The engineer to remove, their unrevoked grant rows, the revocation time, and whether
    their certificate is re-issued (status disabled: old events still verify)."""

    identity: Identity
    root: RootCopy
    engineer: EngineerRow
    grants: tuple[GrantRow, ...]
    revoked_at: int
    recertify: bool


@dataclass(frozen=True, repr=False)
class Removal:
    """The acting admin's signed revocation of each grant shown, and the re-issued certificate."""

    revocations: tuple[tuple[int, bytes], ...]  # (grant id, signature)
    certified_at: int | None
    certificate: bytes | None

    def __repr__(self) -> str:
        return f"Removal(revocations={len(self.revocations)})"


@dataclass(frozen=True)
class RemovalAnswer:
    """The removed engineer's row and every grant row of theirs as committed, and the client-key
    rotations started (their re-wrapping follows, outside the unit of work)."""

    seq: int
    identity: Identity
    engineer: EngineerRow
    grants: tuple[GrantRow, ...]
    rotation_ids: tuple[int, ...]
    was_admin: bool


@dataclass(frozen=True)
class WhoamiRequest:
    """``engineers.whoami`` over HTTPS: an empty body, the request's signature names the caller."""


@dataclass(frozen=True)
class WhoamiAnswer:
    """The authenticated caller's own row, as the server checked it (certified, active, current keys)."""

    vault_id: bytes
    engineer_id: int
    name: str
    role: str
    key_generation: int
