"""An enrolling engineer's keys, made where the keys are (in-process and over HTTPS alike).

``enrolment_keys`` checks the open invitation the authority shows (the organisation key the
code's fingerprint prefix names, the engineer asked for, still invited, the invitation signed
by an admin whose certificate verifies under that key, not expired), then makes the new
sealing and signing keys, locks them under the passphrase in a key record bound to the
vault, the engineer and the next key generation, and MACs the public keys with the code's
secret (what the confirming admin checks). The passphrase, the secret and the private keys
never leave: the answer is ``NewKeys`` (public keys, the locked record, the MAC) and the new
signing seed, for the caller to sign the enrolment's event or request with.
"""

from __future__ import annotations

import datetime as dt

from vault.authority.engineer_requests import INVITED, EnrolmentDraft, NewKeys
from vault.crypto import keyrecord, sealing, signing
from vault.errors import EnrolmentError, UntrustedRecord
from vault.keyholder.invitations import verified_invitation


def enrolment_keys(
    draft: EnrolmentDraft,
    name: str,
    org_fingerprint: bytes,
    passphrase: str,
    secret: bytes,
    now: dt.datetime,
    kdf_params: keyrecord.Argon2Params,
) -> tuple[NewKeys, bytes]:
    """The keys enrolled for ``draft`` (module docstring) and the new signing seed."""
    engineer, inv = draft.engineer, draft.invitation
    if not signing.org_matches(draft.org_signing_public, org_fingerprint):
        raise EnrolmentError(
            "this enrolment code is for another vault (or the vault's key was replaced)",
            hint="check --db, or ask the admin",
        )
    if engineer.name != name:
        raise UntrustedRecord(f"the authority showed another invitation than that of {name!r}")
    if engineer.status != INVITED:
        raise EnrolmentError(f"there is no open invitation for {name!r}")
    verified_invitation(draft.vault_id, draft.org_signing_public, now, engineer, inv)  # role, expiry: the admin's
    if inv.expires_at is None or inv.expires_at <= int(now.timestamp()):
        raise EnrolmentError(f"the invitation for {engineer.name!r} has expired")
    keypair, sign_key = sealing.KeyPair.generate(), signing.SigningKey.generate()
    generation = engineer.key_generation + 1
    bundle = keyrecord.PrivateBundle(keypair.private, sign_key.seed, draft.org_signing_public)
    record = keyrecord.lock_record(bundle, passphrase, draft.vault_id, engineer.id, generation, kdf_params)
    mac = signing.enrolment_mac(secret, draft.vault_id, engineer.id, engineer.name, keypair.public, sign_key.public)
    return NewKeys(generation, keypair.public, sign_key.public, record, mac), sign_key.seed
