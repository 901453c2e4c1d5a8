"""Engineers, where the keys are: sign invitations, make an enrolling engineer's keys,
certify a pending engineer's keys, and verify every row the authority shows first.

``EngineerKeyholder`` sends requests naming engineers by name and the caller by id and key
generation, and checks what it is shown before it signs, seals or returns anything:

* its own row: certified under the organisation key it pinned (or one the signed chain
  leads to), active, with this session's id, name, key generation and sealing key; an
  admin where the operation needs one; the root bundle sealed to it opening to the
  vault's recovery and organisation keys;
* an invitation: signed by an active, certified admin over the vault, the engineer's id,
  name and role, the previous key generation, the root version, the expiry and the sealed
  invite secret (docs/format.md §5); the engineer's previous key record certified;
* a pending enrolment: the fingerprint of the keys shown must be the one a person
  compared, the keys not weak, and made with the invitation's one-time code (its MAC);
  only those keys are certified, and the answer must show them certified; the grants
  carried over are shown by ids and ciphertext, each slug opened here (``slugs.py``), and
  what the admin was shown is compared here, against the slugs opened again.

The invite secret, the new private keys and the root bundle never leave this module's
objects; the authority is given sealed blobs, public keys and signatures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from vault.authority.adoption_draft_values import AdoptionDraft, AdoptionMade
from vault.authority.carry_draft_values import CarryMade
from vault.authority.engineer_requests import (
    ENROLLED,
    LIST,
    PENDING,
    WHOAMI,
    Certification,
    ConfirmRequest,
    EngineerAnswer,
    EngineerKeyRow,
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
    RekeyDraft,
    Rekeyed,
    RemovalAnswer,
    RemoveRequest,
    RootCopy,
    RotateRequest,
    SignedInvitation,
    UnlockRequest,
)
from vault.authority.requests import Caller
from vault.crypto import _primitives as prim
from vault.crypto import keyrecord, sealing, signing
from vault.crypto.labels import (
    LABEL_INVITE,
    LABEL_ROOT_BUNDLE,
    LABEL_SIG_ENGINEER,
    LABEL_SIG_ENGINEER_KEY,
    LABEL_SIG_INVITE,
)
from vault.errors import AccessDenied, EnrolmentError, Locked, UntrustedRecord
from vault.keyholder.adoption import adoption_made
from vault.keyholder.carry import carry_made, checked_carry, named_in_plan
from vault.keyholder.enrolment import enrolment_keys
from vault.keyholder.invitations import (
    engineer_key_fields,
    fingerprint_of,
    invite_fields,
    normalise_fingerprint,
    verified_invitation,
)
from vault.keyholder.keys import Keys, RootBundle
from vault.keyholder.responses import ResponseChecks, trusted_org_key
from vault.keyholder.slugs import SlugOpener
from vault.keyholder.trust import certificate_fields
from vault.records import CarriedGrant, DroppedGrant, EngineerInfo, PendingConfirmation, SessionInfo
from vault.storage.rows import ACTIVE, ROLE_ADMIN


class EngineerTransport(Protocol):
    def invite(self, request: InviteRequest, seal: Any) -> EngineerAnswer: ...
    def enroll(self, request: EnrollRequest, seal: Any) -> EngineerAnswer: ...
    def confirm(self, request: ConfirmRequest, seal: Any) -> EngineerAnswer: ...
    def list(self, request: ListRequest) -> EngineerAnswer: ...
    def change_passphrase(self, request: PassphraseRequest, seal: Any) -> EngineerAnswer: ...
    def key_record(self, request: KeyRecordRequest) -> KeyRecordRows: ...
    def unlock_failed(self, request: KeyRecordRequest) -> int: ...
    def unlock(self, request: UnlockRequest) -> EngineerAnswer: ...
    def rotate(self, request: RotateRequest, seal: Any) -> EngineerAnswer: ...
    def remove(self, request: RemoveRequest, seal: Any) -> RemovalAnswer: ...


class _Seal:
    """The keyholder's side of ``EngineerSeal`` for one request: it acts on the draft only if
    it verifies, and keeps what it made (the invite secret, the new signing seed) to itself."""

    def __init__(
        self,
        owner: EngineerKeyholder,
        request: Any,
        passphrase: str = "",
        secret: bytes = b"",
        new_passphrase: str = "",
        shown: PendingConfirmation | None = None,
    ) -> None:
        self._owner, self._request, self._passphrase, self._secret = owner, request, passphrase, secret
        self._shown = shown
        self._new_passphrase = new_passphrase
        # the invitation this request may sign: (name, role, expiry); a rotation's role is the certified one
        self.expected: tuple[str, str, int] | None = None
        if isinstance(request, InviteRequest):
            self.expected = (request.name, request.role, request.expires_at)
        self.invite_secret: bytes | None = None
        self.org: bytes | None = None
        self.certified: tuple[bytes, bytes] | None = None  # (sealing, signing) public keys certified
        self.engineer_id: int | None = None
        self._seed: bytes | None = None
        self._rekeyed: tuple[RekeyDraft, bytes, RootBundle] | None = None

    def __repr__(self) -> str:
        return "EngineerSeal(<redacted>)"

    def event_seed(self) -> bytes:
        """The enrolling engineer's new signing key, for the enrolment's event (in-process only)."""
        if self._seed is None:
            raise UntrustedRecord("nothing was enrolled by this request")
        return self._seed

    def sign_invitation(self, draft: InvitationDraft) -> SignedInvitation:
        owner = self._owner
        org = owner.verified_me(draft.identity, admin=True)
        if self.expected is None or (draft.name, draft.role, draft.expires_at) != self.expected:
            raise UntrustedRecord("the invitation drafted is not the one asked for")
        bundle = owner.root_bundle(draft.identity, draft.root, org)
        vault_id, previous = draft.identity.vault_id, draft.previous_key
        prev_generation = 0
        if previous is not None:
            if previous.engineer_id != draft.engineer_id:
                raise UntrustedRecord("the previous keys shown are another engineer's")
            signing.verify(
                org,
                previous.certificate,
                LABEL_SIG_ENGINEER_KEY,
                *engineer_key_fields(vault_id, previous, draft.name),
                what=f"key generation {previous.generation} of engineer {draft.name!r}",
            )
            prev_generation = previous.generation
        secret = prim.random_bytes(signing.INVITE_SECRET_SIZE)
        context = (LABEL_INVITE, vault_id, draft.engineer_id, bundle.version)
        blob = sealing.seal(bundle.recovery.public, bundle.version, secret, context)
        inv = Invitation(prev_generation, bundle.version, draft.expires_at, blob, None, None, None, None)
        me = owner.keys.me()
        fields = invite_fields(vault_id, draft.engineer_id, draft.name, draft.role, inv)
        signature = owner.keys.my_signing_key().sign(LABEL_SIG_INVITE, *fields)
        self.invite_secret, self.org, self.engineer_id = secret, org, draft.engineer_id
        auth_public = signing.invite_auth_key(secret).public  # the server's check of the code (enrolment over HTTPS)
        return SignedInvitation(blob, prev_generation, me.engineer_id, signature, auth_public)

    def rekey(self, draft: RekeyDraft) -> Rekeyed:
        """Before an engineer's keys are destroyed: their certificate verifies (the role they are
        re-invited with is the certified one); their current key record certified if missing."""
        owner, request, row = self._owner, self._request, draft.engineer
        org = owner.verified_me(draft.identity, admin=True)
        vault_id = draft.identity.vault_id
        if row.name != request.name or row.status != ACTIVE:
            raise UntrustedRecord(f"the authority showed another engineer than the active {request.name!r}")
        ResponseChecks(vault_id, org, owner.clock()).certificate(row)
        bundle = owner.root_bundle(draft.identity, draft.root, org)
        certificate = None
        if not draft.key_recorded:
            if row.sealing_public is None or row.signing_public is None:
                raise UntrustedRecord(f"engineer {row.name!r} has no confirmed keys")
            public = (row.sealing_public, row.signing_public)
            key = EngineerKeyRow(row.id, row.key_generation, *public, row.certified_at, None)
            certificate = bundle.org.sign(LABEL_SIG_ENGINEER_KEY, *engineer_key_fields(vault_id, key, row.name))
        self.expected = (row.name, row.role, request.expires_at)
        self._rekeyed = (draft, org, bundle)
        return Rekeyed(certificate)

    def adopt(self, draft: AdoptionDraft) -> AdoptionMade:
        """After ``rekey``: what its engineer signed, adopted by this admin (through the team server;
        in-process the authority's unit adopts: ``keyholder/adoption.py``)."""
        if self._rekeyed is None:
            raise UntrustedRecord("an adoption is made only for the engineer this keyholder re-keys")
        rekey, org, bundle = self._rekeyed
        return adoption_made(self._owner.keys, self._owner.clock(), rekey, org, bundle, draft)

    def enrol(self, draft: EnrolmentDraft) -> NewKeys:
        request, owner = self._request, self._owner
        made, seed = enrolment_keys(
            draft,
            request.name,
            request.org_fingerprint,
            self._passphrase,
            self._secret,
            owner.clock(),
            owner.kdf_params(),
        )
        self._seed, self.engineer_id = seed, draft.engineer.id
        self.certified = (made.sealing_public, made.signing_public)
        return made

    def certify(self, draft: PendingRows) -> Certification:
        owner, request, row, inv = self._owner, self._request, draft.engineer, draft.invitation
        org = owner.verified_me(draft.identity, admin=True)
        vault_id, name = draft.identity.vault_id, request.name
        if row.name != name:
            raise UntrustedRecord(f"the authority showed another engineer than {name!r}: not confirmed")
        if row.status != ENROLLED or row.sealing_public is None or row.signing_public is None:
            raise EnrolmentError(f"engineer {name!r} is not waiting for confirmation (status: {row.status})")
        verified_invitation(vault_id, org, owner.clock(), row, inv)
        bundle = owner.root_bundle(draft.identity, draft.root, org)
        shown = self._shown
        if shown is not None and (
            (shown.name, shown.role, shown.fingerprint) != (row.name, row.role, fingerprint_of(row))
            or tuple(shown.carried) != owner.shown_plan(draft, org)[0]
        ):
            raise EnrolmentError(
                f"what confirming {name!r} would do has changed since it was shown: not confirmed",
                hint=f"run `credvault engineer confirm {name}` again and check what it shows",
            )
        if signing.is_weak_signing_key(row.signing_public) or sealing.is_weak_public(row.sealing_public):
            raise UntrustedRecord(
                f"the keys {name!r} enrolled are weak (small-order): not confirmed", hint="invite the engineer again"
            )
        if normalise_fingerprint(request.fingerprint) != fingerprint_of(row):
            raise UntrustedRecord(
                f"the fingerprint does not match the keys {name!r} enrolled: not confirmed",
                hint="compare again with the engineer in person or by phone; re-invite if in doubt",
            )
        if inv.root_version != bundle.version or inv.seal is None:
            raise EnrolmentError("the invitation predates a recovery-key rotation", hint="invite the engineer again")
        secret = sealing.open_sealed(
            bundle.recovery, bundle.version, inv.seal, (LABEL_INVITE, vault_id, row.id, bundle.version)
        )
        if not signing.check_enrolment_mac(
            secret, inv.enroll_mac, vault_id, row.id, row.name, row.sealing_public, row.signing_public
        ):
            raise UntrustedRecord(
                f"the keys of {name!r} were not made with their enrolment code: not confirmed",
                hint="invite the engineer again",
            )
        certified_at = int(owner.clock().timestamp())
        active = row._replace(status=ACTIVE, certified_at=certified_at)
        certificate = bundle.org.sign(LABEL_SIG_ENGINEER, *certificate_fields(vault_id, active))
        key = EngineerKeyRow(row.id, row.key_generation, row.sealing_public, row.signing_public, certified_at, None)
        key_certificate = bundle.org.sign(LABEL_SIG_ENGINEER_KEY, *engineer_key_fields(vault_id, key, row.name))
        root_seal = None
        if row.role == ROLE_ADMIN:
            context = (LABEL_ROOT_BUNDLE, vault_id, bundle.version, row.id)
            root_seal = sealing.seal(row.sealing_public, bundle.version, bundle.to_bytes(), context)
        self.org, self.certified, self.engineer_id = org, (row.sealing_public, row.signing_public), row.id
        return Certification(certified_at, certificate, key_certificate, bundle.version, root_seal)

    def carry(self, draft: PendingRows) -> CarryMade | None:
        """After ``certify`` of the same rows: the carry-over they draft, verified and made here
        (through the team server; in-process the authority's unit makes it: ``keyholder/carry.py``)."""
        if self.org is None or self.engineer_id != draft.engineer.id:
            raise UntrustedRecord("a carry-over is made only for the rows this keyholder certified")
        return carry_made(self._owner, draft, self.org)

    def relock(self, draft: KeyRecordDraft) -> bytes:
        """The caller's own key record, opened with the old passphrase and locked under the new
        one (the same ids and key generation it is bound to; this session's keys inside)."""
        owner = self._owner
        owner.verified_me(draft.identity, admin=False)
        me, row = owner.keys.me(), draft.identity.me
        bundle = keyrecord.open_record(draft.key_record, self._passphrase, me.vault_id, row.id, row.key_generation)
        if bundle.signing_seed != me.signing_seed or bundle.sealing_private != me.sealing_private:
            raise UntrustedRecord("the key record shown holds other keys than this session's")
        self.engineer_id = row.id
        return keyrecord.lock_record(
            bundle, self._new_passphrase, me.vault_id, row.id, row.key_generation, owner.kdf_params()
        )


class EngineerKeyholder:
    """Invite, enrol, pending confirmation, confirm, list and whoami for the engineer whose keys
    ``keys`` holds (none for an enrolment)."""

    def __init__(
        self,
        transport: EngineerTransport,
        keys: Keys,
        clock: Callable[[], dt.datetime],
        kdf_params: Callable[[], keyrecord.Argon2Params],
    ) -> None:
        self.transport, self.keys, self.clock, self.kdf_params = transport, keys, clock, kdf_params
        # through the team server: (name, now) -> each client whose grant the verified chain says is live
        self.live_grants: Callable[[str, int], dict[int, int | None]] | None = None

    def __repr__(self) -> str:
        return "EngineerKeyholder()"

    # -- the operations ----------------------------------------------------------------------

    def invite(self, name: str, role: str, valid_for: dt.timedelta) -> str:
        """The enrolment code of a new (or renewed) invitation, signed by this admin."""
        expires_at = int((self.clock() + valid_for).timestamp())
        request = InviteRequest(self.caller(), name, role, expires_at, self.keys.me().org_signing_public)
        seal = _Seal(self, request)
        answer = self.transport.invite(request, seal)
        if seal.invite_secret is None or seal.org is None or answer.engineer is None:
            raise UntrustedRecord("the authority answered an invitation this keyholder did not sign")
        if (answer.engineer.id, answer.engineer.name, answer.engineer.role) != (seal.engineer_id, name, role):
            raise UntrustedRecord("the authority answered for another invitation")
        return signing.make_enrolment_code(seal.invite_secret, seal.org)

    def rotate(self, name: str, valid_for: dt.timedelta) -> str:
        """Destroy ``name``'s keys and re-invite them with their certified role; the new code."""
        expires_at = int((self.clock() + valid_for).timestamp())
        request = RotateRequest(self.caller(), name, expires_at, self.keys.me().org_signing_public)
        seal = _Seal(self, request)
        answer = self.transport.rotate(request, seal)
        if seal.invite_secret is None or seal.org is None or answer.engineer is None:
            raise UntrustedRecord("the authority answered a rotation this keyholder did not sign")
        if (answer.engineer.id, answer.engineer.name) != (seal.engineer_id, name):
            raise UntrustedRecord("the authority answered for another engineer")
        return signing.make_enrolment_code(seal.invite_secret, seal.org)

    def enroll(self, name: str, code: str, passphrase: str) -> str:
        """Make this engineer's keys for their invitation; the fingerprint to compare."""
        secret, org_fp = signing.parse_enrolment_code(code)
        keyrecord.normalise_passphrase(passphrase)
        request = EnrollRequest(name, org_fp)
        seal = _Seal(self, request, passphrase, secret)
        answer = self.transport.enroll(request, seal)
        if seal.certified is None or answer.engineer is None or answer.engineer.id != seal.engineer_id:
            raise UntrustedRecord("the authority answered an enrolment this keyholder did not make")
        if (answer.engineer.sealing_public, answer.engineer.signing_public) != seal.certified:
            raise UntrustedRecord("the authority stored other keys than the ones enrolled")
        return signing.engineer_fingerprint(*seal.certified)

    def pending(self, name: str) -> PendingConfirmation:
        """What confirming ``name`` would certify and carry over, verified."""
        answer = self.transport.confirm(self._confirm_request(PENDING, name, None, False), None)
        pending = answer.pending
        if pending is None or answer.identity is None:
            raise UntrustedRecord("the authority answered no pending enrolment")
        org = self.verified_me(answer.identity, admin=True)
        row = pending.engineer
        fingerprint = fingerprint_of(row)
        if row.name != name:
            raise UntrustedRecord(f"the authority showed another engineer than {name!r}")
        if row.status != ENROLLED or fingerprint is None:
            raise EnrolmentError(f"engineer {name!r} has not enrolled yet (status: {row.status})")
        signer = verified_invitation(answer.identity.vault_id, org, self.clock(), row, pending.invitation)
        if signer != pending.plan.signer:
            raise UntrustedRecord("the plan shown is not that of the signed invitation")
        carried, dropped = self.shown_plan(pending, org)
        return PendingConfirmation(
            name=row.name,
            role=row.role,
            fingerprint=fingerprint,
            key_generation=row.key_generation,
            invited_by=signer,
            carried=list(carried),
            dropped=list(dropped),
        )

    def confirm(self, name: str, fingerprint: str, shown: PendingConfirmation | None) -> EngineerInfo:
        """Certify the keys of ``name`` whose fingerprint a person compared, and only those."""
        request = self._confirm_request("engineer-confirm", name, fingerprint, shown is not None)
        seal = _Seal(self, request, shown=shown)
        answer = self.transport.confirm(request, seal)
        row = answer.engineer
        if seal.certified is None or seal.org is None or row is None or answer.identity is None:
            raise UntrustedRecord("the authority answered a confirmation this keyholder did not certify")
        if row.id != seal.engineer_id or (row.sealing_public, row.signing_public) != seal.certified:
            raise UntrustedRecord("the authority certified other keys than the ones compared")
        ResponseChecks(answer.identity.vault_id, seal.org, self.clock()).certificate(row)
        if answer.created_at is None:
            raise UntrustedRecord("the authority's answer has no creation time")
        return EngineerInfo(row.name, row.role, row.status, fingerprint_of(row), row.key_generation, answer.created_at)

    def list(self) -> list[EngineerInfo]:
        answer = self.transport.list(ListRequest(self.caller(), self.keys.me().org_signing_public, LIST))
        if answer.identity is None:
            raise UntrustedRecord("the authority answered no caller")
        self.verified_me(answer.identity, admin=False)
        return [
            EngineerInfo(r.name, r.role, r.status, fingerprint_of(r), r.key_generation, r.created_at)
            for r in answer.engineers
        ]

    def whoami(self) -> SessionInfo:
        me = self.keys.me()
        answer = self.transport.list(ListRequest(self.caller(), me.org_signing_public, WHOAMI))
        if answer.identity is None:
            raise UntrustedRecord("the authority answered no caller")
        self.verified_me(answer.identity, admin=False)
        row = answer.identity.me
        return SessionInfo(row.name, row.role, me.expires_at, answer.identity.vault_id.hex())

    def change_passphrase(self, old: str, new: str) -> None:
        """Re-lock this engineer's key record under ``new`` (opened with ``old`` here)."""
        keyrecord.normalise_passphrase(new)
        request = PassphraseRequest(self.caller(), self.keys.me().org_signing_public)
        seal = _Seal(self, request, old, new_passphrase=new)
        answer = self.transport.change_passphrase(request, seal)
        if seal.engineer_id is None or answer.identity is None or answer.identity.me.id != seal.engineer_id:
            raise UntrustedRecord("the authority answered a passphrase change this keyholder did not make")

    # -- the checks ----------------------------------------------------------------------------

    def caller(self) -> Caller:
        me = self.keys.me()
        return Caller(me.engineer_id, me.key_generation)

    def _confirm_request(self, action: str, name: str, fingerprint: str | None, shown: bool) -> ConfirmRequest:
        return ConfirmRequest(self.caller(), name, fingerprint, shown, self.keys.me().org_signing_public, action)

    def verified_me(self, identity: Identity, *, admin: bool) -> bytes:
        """The organisation key trusted from this session's pin, after checking the caller's own
        row: certified under it, active, this session's keys (an admin if ``admin``)."""
        me, row = self.keys.me(), identity.me
        if identity.vault_id != me.vault_id:
            raise UntrustedRecord("the authority answered for another vault")
        org = trusted_org_key(identity.vault_id, me.org_signing_public, identity.org_signing_public, identity.org_chain)
        if row.id != me.engineer_id or row.name != me.name:
            raise Locked(f"engineer {me.name!r} no longer exists in this vault")
        ResponseChecks(identity.vault_id, org, self.clock()).certificate(row)
        if row.status != ACTIVE:
            raise AccessDenied(f"the account of {me.name!r} is {row.status}", hint="ask an admin")
        if row.key_generation != me.key_generation or row.sealing_public != self.keys.session_sealing_public(me):
            raise Locked(
                f"the keys of {me.name!r} have changed since this session was unlocked",
                hint="run `credvault unlock` again",
            )
        if admin and row.role != ROLE_ADMIN:
            raise AccessDenied(f"{row.name!r} is not an admin", hint="ask an admin to do this")
        return org

    def shown_plan(self, pending: PendingRows, org: bytes) -> tuple[tuple[CarriedGrant, ...], tuple[DroppedGrant, ...]]:
        """The plan as the admin reads it: each slug opened here (the authority's plan holds ids
        and ciphertext); a carried grant whose slug does not open is refused. Through the team server
        the draft is verified here first (``keyholder/carry.py``) and a carried grant the audit log
        takes back is shown dropped, with why (in-process the authority's ledger drops it)."""
        named_in_plan(self, pending)
        opened = SlugOpener(self, pending, org)
        checked = checked_carry(self, pending, org) if pending.plan.draft is not None else None
        aside = {} if checked is None else checked.set_aside
        carried, dropped = [], []
        for row in pending.plan.carried:
            slug = opened.slug(row.client_id, row.slug_blob)
            if slug is None:
                raise UntrustedRecord("a grant the plan carries over is of a client whose keys do not open")
            if row.grant_id in aside:
                dropped.append(DroppedGrant(row.grant_id, slug, aside[row.grant_id]))
                continue
            until = None if row.until is None else dt.datetime.fromtimestamp(row.until, dt.UTC)
            carried.append(CarriedGrant(slug, until))
        dropped += [
            DroppedGrant(row.grant_id, opened.slug(row.client_id, row.slug_blob), row.reason)
            for row in pending.plan.dropped
        ]
        return tuple(carried), tuple(dropped)

    def root_bundle(self, identity: Identity, root: RootCopy, org: bytes) -> RootBundle:
        """The root bundle sealed to this admin, for the recovery key the authority names: it
        must hold that recovery key and the organisation key trusted from the pin."""
        cached = self.keys.root
        if cached is not None and cached.version == root.version:
            bundle = cached
        else:
            if root.sealed is None:
                raise AccessDenied("no copy of the recovery key is sealed to this admin")
            context = (LABEL_ROOT_BUNDLE, identity.vault_id, root.version, identity.me.id)
            raw = sealing.open_sealed(self.keys.my_keypair(), root.version, root.sealed, context)
            bundle = RootBundle(raw, root.version)
        if bundle.recovery.public != root.recovery_public or bundle.org.public != org:
            raise UntrustedRecord("the sealed recovery key does not match the vault's public recovery key")
        self.keys.root = bundle
        return bundle
