"""Enrolling over HTTPS: a new engineer, with the enrolment code an admin gave them, and no
database, no ``Vault`` and no key yet (docs/server.md §2–§4; the server's side is
``vault/server/enrolment_routes.py``).

``enroll_over_https`` makes two requests:

1. ``engineers.enroll_draft``, signed with the key the code's secret derives
   (``signing.invite_auth_key``; keyid ``i:<its public key>``): the server answers the open
   invitation of that code as stored. The keyholder checks it as the in-process enrolment does
   (``keyholder/enrolment.py``): the organisation key must be the one the code's fingerprint
   prefix names, the invitation signed by an admin certified under it, for this name, unexpired;
   and it must be the invitation of this code (its stored key is the code's).
2. ``engineers.enroll``: the keys made for it (the passphrase-locked key record, the public keys,
   the enrolment MAC the confirming admin checks), the code key's signature over them
   (``invite_proof``), signed with the *new* signing key (keyid ``e:<id>:<generation>``). The
   answer must show the row with exactly these keys.

What comes back is an ``EnrolledRecord``: the key record as the database stores it, with the
ids it is bound to and the organisation key it pins, and the fingerprint the person reads to
their admin. The passphrase, the code's secret and the private keys never leave this process.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from vault.authority.engineer_requests import EngineerAnswer, EnrollCommit, EnrollRequest, EnrolmentDraft
from vault.authority.enrolment_proof import invite_keyid, sign_proof
from vault.authority.requests import Caller
from vault.crypto import keyrecord, signing
from vault.crypto.signing import SigningKey
from vault.errors import ConfigurationError, InvalidInput, UntrustedRecord, VaultError
from vault.keyholder.enrolment import enrolment_keys
from vault.storage.rows import ROLE_SERVICE
from vault.transport.https import HttpsTransport
from vault.transport.https_calls import answer_of

DRAFT, COMMIT = "engineers.enroll_draft", "engineers.enroll"


@dataclass(frozen=True, repr=False)
class EnrolledRecord:
    """An engineer's enrolment as this machine keeps it: the passphrase-locked key record
    (``keyrecord``; bound to ``vault_id``, ``engineer_id`` and ``key_generation``), the
    organisation key it pins and the fingerprint to read to the admin who confirms."""

    vault_id: bytes
    engineer_id: int
    name: str
    key_generation: int
    key_record: bytes
    org_signing_public: bytes
    fingerprint: str

    def __repr__(self) -> str:
        return (
            f"EnrolledRecord(name={self.name!r}, engineer_id={self.engineer_id}, key_generation={self.key_generation})"
        )


class _NoSession:
    """An enrolment has no session: ``_EnrolmentTransport`` signs with the key it is given."""

    def me(self) -> Any:
        raise ConfigurationError("an enrolment has no session")

    def my_signing_key(self) -> SigningKey:
        raise ConfigurationError("an enrolment has no session")


class _EnrolmentTransport(HttpsTransport):
    """``HttpsTransport`` signing with the enrolment's keys: the code's, then the new one."""

    def __init__(
        self, url: str, ca_file: str | None, transport: httpx.BaseTransport | None, clock: Callable[[], float]
    ) -> None:
        super().__init__(url, _NoSession(), ca_file=ca_file, transport=transport, clock=clock)
        self._signer: tuple[SigningKey, str] | None = None

    def __repr__(self) -> str:
        return "EnrolmentTransport()"

    def use(self, key: SigningKey, keyid: str) -> None:
        self._signer = (key, keyid)

    def signer(self) -> tuple[SigningKey, str]:
        if self._signer is None:
            raise ConfigurationError("no enrolment key to sign with")
        return self._signer

    def explained(self, error: VaultError) -> VaultError:
        return error  # signed by a code's key first: an unknown key is a wrong or spent code, said by the caller


def enroll_over_https(
    url: str,
    *,
    ca_file: str | None,
    name: str,
    code: str,
    passphrase: str,
    kdf_params: keyrecord.Argon2Params | None = None,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], dt.datetime] | None = None,
    roles: tuple[str, ...] | None = None,
) -> EnrolledRecord:
    """Enrol ``name`` with the enrolment ``code`` at the team server ``url`` (module docstring).
    ``ca_file``: the pinned CA (or the server's own certificate); ``transport``: an httpx
    transport for tests (as ``HttpsTransport``'s); ``clock``: the time the requests are signed at and
    the key record made (a ``RemoteVault``'s, which signs every other request on it; the wall clock
    by default); ``roles``: the roles this enrolment is for (a service identity's key file is made only
    for a ``service`` invitation, an engineer's passphrase-locked record never for one), checked on the
    admin-signed invitation before anything is committed."""
    now_of = clock or (lambda: dt.datetime.now(dt.UTC))
    secret, org_fingerprint = signing.parse_enrolment_code(code)
    keyrecord.normalise_passphrase(passphrase)
    invite = signing.invite_auth_key(secret)
    https = _EnrolmentTransport(url, ca_file, transport, lambda: now_of().timestamp())
    try:
        https.use(invite, invite_keyid(invite.public))
        draft = answer_of(https, DRAFT, EnrollRequest(name, org_fingerprint), EnrolmentDraft)
        if draft.invitation.auth_public != invite.public:
            raise UntrustedRecord("the server showed the invitation of another code")
        now = now_of()
        params = kdf_params or keyrecord.DEFAULT_PARAMS
        made, seed = enrolment_keys(draft, name, org_fingerprint, passphrase, secret, now, params)
        if roles is not None and draft.engineer.role not in roles:  # the role the admin signed (verified above)
            how = "with --key-file FILE" if draft.engineer.role == ROLE_SERVICE else "without --key-file"
            raise InvalidInput(
                f"this invitation is for the role {draft.engineer.role!r}: enrol it {how}",
                hint="a service identity (role service) enrols with a key file; an engineer or admin with a passphrase",
            )
        row = draft.engineer
        proof = sign_proof(secret, draft.vault_id, row.id, row.name, made)
        commit = EnrollCommit(Caller(row.id, made.key_generation), row.name, org_fingerprint, made, proof)
        https.use(SigningKey(seed), f"e:{row.id}:{made.key_generation}")
        answer = answer_of(https, COMMIT, commit, EngineerAnswer)
    finally:
        https.close()
    stored = answer.engineer
    expected = (row.id, row.name, made.key_generation, made.sealing_public, made.signing_public)
    if (
        stored is None
        or (stored.id, stored.name, stored.key_generation, stored.sealing_public, stored.signing_public) != expected
    ):
        raise UntrustedRecord("the server stored other keys than the ones enrolled")
    return EnrolledRecord(
        draft.vault_id,
        row.id,
        row.name,
        made.key_generation,
        made.key_record,
        draft.org_signing_public,
        signing.engineer_fingerprint(made.sealing_public, made.signing_public),
    )
