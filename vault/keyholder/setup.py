"""Creating a vault and an enrolled engineer's fingerprint, where the keys are.

``SetupKeyholder.initialise`` chooses the vault id and makes the organisation signing key
and the root bundle (recovery key and organisation seed) here; only their public halves
cross, in an ``InitRequest``. Inside the authority's unit of work its seal is shown the
draft (``InitDraft``): it refuses one for another vault, another name, a row that is not a
fresh admin, or a certificate time far from its own clock; else it makes the admin's keys
for the id the authority gave, locks their key record with the passphrase, certifies the
row and the engineer-key record under the new organisation key, seals the root bundle to
the admin, and signs the share policy. The answer must carry the admin's row with exactly
those keys and a certificate that verifies under the organisation key it made; the
recovery shares are split here and never cross.

``SetupKeyholder.pending_fingerprint`` computes the fingerprint of the public keys an
enrolled engineer's row holds: it certifies nothing (a person compares it with what
``enroll`` printed on the engineer's machine, then ``confirm`` certifies).

Locking a session is keyholder-only (no authority, no request, no event): the service's
``Engineers.lock`` forgets the keys this process holds and the session kept for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vault.authority.engineer_requests import ENROLLED, EngineerKeyRow
from vault.authority.setup_requests import (
    FIRST,
    AdminKeys,
    InitAnswer,
    InitDraft,
    InitRequest,
    PendingKeyRequest,
    PendingKeyRows,
)
from vault.crypto import _primitives as prim
from vault.crypto import keyrecord, sealing, shamir, signing
from vault.crypto.labels import LABEL_ROOT_BUNDLE, LABEL_SIG_ENGINEER, LABEL_SIG_ENGINEER_KEY, LABEL_SIG_SHARE_POLICY
from vault.errors import EnrolmentError, UntrustedRecord
from vault.keyholder.invitations import fingerprint_of
from vault.keyholder.keys import RootBundle
from vault.keyholder.responses import ResponseChecks
from vault.keyholder.trust import certificate_fields, engineer_key_fields
from vault.storage.rows import ACTIVE, ROLE_ADMIN

CLOCK_SKEW = 300  # seconds a draft's certificate time may differ from this keyholder's clock


class SetupTransport(Protocol):
    def initialise(self, request: InitRequest, seal: _InitSeal) -> InitAnswer: ...
    def pending_key(self, request: PendingKeyRequest) -> PendingKeyRows: ...


def share_policy_fields(
    vault_id: bytes, version: int, org_public: bytes, k: int, n: int
) -> tuple[signing.ContextItem, ...]:
    """What the k-of-n of the recovery shares is signed over by the organisation key
    ``version`` (the layout of ``service/core.share_policy_fields``; docs/format.md §6)."""
    return (vault_id, version, org_public, k, n)


@dataclass(frozen=True, repr=False)
class Founded:
    """A new vault as its keyholder made it: the admin's row as stored, the recovery shares."""

    vault_id: bytes
    org_signing_public: bytes
    admin_fingerprint: str
    shares: tuple[str, ...]

    def __repr__(self) -> str:
        return f"Founded(vault={self.vault_id.hex()}, <shares redacted>)"


class _InitSeal:
    """The keyholder's side of ``InitSeal`` for one request: it makes the keys once, for a
    draft of this request only, and keeps the admin's signing seed for the event."""

    def __init__(
        self,
        request: InitRequest,
        org: signing.SigningKey,
        bundle: RootBundle,
        passphrase: str,
        kdf_params: keyrecord.Argon2Params,
        now: dt.datetime,
    ) -> None:
        self._request, self._org, self._bundle, self._passphrase = request, org, bundle, passphrase
        self._kdf_params, self._now = kdf_params, now
        self._seed: bytes | None = None
        self.made: AdminKeys | None = None
        self.admin_id: int | None = None

    def __repr__(self) -> str:
        return "InitSeal(<redacted>)"

    def event_seed(self) -> bytes:
        """The new admin's signing key, for the ``vault-init`` event (in-process only)."""
        if self._seed is None:
            raise UntrustedRecord("no admin was made by this request")
        return self._seed

    def make(self, draft: InitDraft) -> AdminKeys:
        request, row = self._request, draft.admin
        if self.made is not None:
            raise UntrustedRecord("the authority asked for the first admin's keys twice")
        if (draft.vault_id, draft.org_signing_public, draft.recovery_public, draft.shares) != (
            request.vault_id,
            request.org_signing_public,
            request.recovery_public,
            request.shares,
        ):
            raise UntrustedRecord("the authority showed another vault than the one this keyholder made")
        if (row.name, row.role, row.status, row.key_generation) != (request.admin_name, ROLE_ADMIN, ACTIVE, 0):
            raise UntrustedRecord(f"the authority showed another row than a new admin {request.admin_name!r}")
        if abs(draft.certified_at - int(self._now.timestamp())) > CLOCK_SKEW:
            raise UntrustedRecord("the authority dated the admin's certificate far from this keyholder's clock")
        keypair, sign_key = sealing.KeyPair.generate(), signing.SigningKey.generate()
        private = keyrecord.PrivateBundle(keypair.private, sign_key.seed, request.org_signing_public)
        record = keyrecord.lock_record(private, self._passphrase, draft.vault_id, row.id, FIRST, self._kdf_params)
        certified = row._replace(
            key_generation=FIRST,
            sealing_public=keypair.public,
            signing_public=sign_key.public,
            certified_at=draft.certified_at,
        )
        certificate = self._org.sign(LABEL_SIG_ENGINEER, *certificate_fields(draft.vault_id, certified))
        key = EngineerKeyRow(row.id, FIRST, keypair.public, sign_key.public, draft.certified_at, None)
        key_certificate = self._org.sign(LABEL_SIG_ENGINEER_KEY, *engineer_key_fields(draft.vault_id, key, row.name))
        context = (LABEL_ROOT_BUNDLE, draft.vault_id, self._bundle.version, row.id)
        root_seal = sealing.seal(keypair.public, self._bundle.version, self._bundle.to_bytes(), context)
        share_signature = None
        if request.shares is not None:
            k, n = request.shares
            fields = share_policy_fields(draft.vault_id, FIRST, request.org_signing_public, k, n)
            share_signature = self._org.sign(LABEL_SIG_SHARE_POLICY, *fields)
        self._seed, self.admin_id = sign_key.seed, row.id
        self.made = AdminKeys(
            FIRST, keypair.public, sign_key.public, record, certificate, key_certificate, root_seal, share_signature
        )
        return self.made

    def close(self) -> None:
        self._passphrase, self._seed = "", None


class SetupKeyholder:
    """The two engineer operations without a session, for this process."""

    def __init__(
        self,
        transport: SetupTransport,
        clock: Callable[[], dt.datetime],
        kdf_params: Callable[[], keyrecord.Argon2Params],
    ) -> None:
        self.transport, self.clock, self.kdf_params = transport, clock, kdf_params

    def __repr__(self) -> str:
        return "SetupKeyholder()"

    def initialise(self, admin_name: str, passphrase: str, shares: tuple[int, int] | None) -> Founded:
        """A new vault and its first admin; the recovery shares when ``shares`` = (k, n)."""
        vault_id = prim.random_bytes(16)
        org = signing.SigningKey.generate()
        bundle = RootBundle(prim.random_bytes(32) + org.seed, FIRST)
        request = InitRequest(admin_name, vault_id, org.public, bundle.recovery.public, shares)
        seal = _InitSeal(request, org, bundle, passphrase, self.kdf_params(), self.clock())
        try:
            answer = self.transport.initialise(request, seal)
            made = seal.made
        finally:
            seal.close()
        if made is None or not isinstance(answer, InitAnswer):
            raise UntrustedRecord("the authority answered without the keys this keyholder made")
        row = answer.admin
        if (answer.vault_id, answer.org_signing_public) != (vault_id, org.public):
            raise UntrustedRecord("the authority answered for another vault than the one this keyholder made")
        if (row.id, row.name, row.sealing_public, row.signing_public, row.certificate) != (
            seal.admin_id,
            admin_name,
            made.sealing_public,
            made.signing_public,
            made.certificate,
        ):
            raise UntrustedRecord("the authority stored other keys for the first admin than this keyholder made")
        ResponseChecks(vault_id, org.public, self.clock()).certificate(row)
        texts: tuple[str, ...] = ()
        if shares is not None:
            k, n = shares
            texts = tuple(shamir.encode_share(vault_id, k, x, y) for x, y in shamir.split(bundle.to_bytes(), k, n))
        fingerprint = signing.engineer_fingerprint(made.sealing_public, made.signing_public)
        return Founded(vault_id, org.public, fingerprint, texts)

    def pending_fingerprint(self, name: str) -> str:
        """The fingerprint the enrolled (not yet confirmed) engineer ``name``'s keys show."""
        answer = self.transport.pending_key(PendingKeyRequest(name))
        if not isinstance(answer, PendingKeyRows):
            raise UntrustedRecord("the authority's answer is not an engineer's row")
        row = answer.engineer
        if row.name != name:
            raise UntrustedRecord(f"the authority answered with another engineer's row than {name!r}")
        fingerprint = fingerprint_of(row)
        if row.status != ENROLLED or fingerprint is None:
            raise EnrolmentError(
                f"engineer {name!r} has not enrolled yet (status: {row.status})",
                hint="they run `credvault engineer enroll NAME` and type the code when asked",
            )
        return fingerprint


__all__ = ["Founded", "SetupKeyholder", "share_policy_fields"]
