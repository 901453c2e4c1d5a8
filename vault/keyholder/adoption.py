"""The adoption of an engineer's signed records in a re-key through the team server, on the admin's machine.

The server drafts what the engineer re-keyed signed (``authority/adoption_drafts.py``, values
``adoption_draft_values.py``); this module decides, as ``Offboarding.adopt_signatures`` does in-process,
what verifies, and signs only that:

* every record shown must name the engineer re-keyed as its signer (the row this keyholder verified in
  ``rekey``), and each grant must be unrevoked, of a grantee whose certificate verifies: else the whole
  re-key is refused (a compromised server offering a record for adoption that the engineer did not
  sign, or an altered grantee, gets nothing signed);
* a client-key version is adopted only if its record verifies under the engineer's certified key
  (while they are an active admin) and its copy sealed to the recovery key this admin holds opens to
  the signed fingerprint; a grant only if it verifies under the engineer's key over its grantee's
  sealing key; policies and settings as ``DepartingAdoption`` decides. What does not verify is set aside
  (planted by a writer of the database: the server deletes its copies, or revokes the grant).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from vault.authority.adoption_draft_values import AdoptionDraft, AdoptionMade
from vault.authority.engineer_requests import Identity, RekeyDraft
from vault.authority.grant_signatures import grant_fields, grant_label, verify_grant
from vault.authority.policy_adoption import DepartingDraft
from vault.authority.record_signatures import client_key_fields
from vault.crypto import sealing, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL, LABEL_SIG_CLIENT_KEY
from vault.errors import UntrustedRecord, VaultError
from vault.keyholder.keys import Keys, RootBundle
from vault.keyholder.policy_adoption import DepartingAdoption
from vault.keyholder.responses import ResponseChecks
from vault.storage.rows import is_revoked

NOT_THEIRS = "the authority offers for adoption a record the engineer re-keyed did not sign: nothing is signed"


class _SigningKeys:
    """``keyholder.policies.SigningKeys`` over this keyholder's ``Keys`` (the policies' adoption)."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def session(self) -> object:
        return self.keys.me()

    def sealing_public(self) -> bytes:
        return self.keys.session_sealing_public(self.keys.me())

    def sign(self, label: bytes, *fields: signing.ContextItem) -> bytes:
        return self.keys.my_signing_key().sign(label, *fields)


def adoption_made(
    keys: Keys, clock: dt.datetime, rekey: RekeyDraft, org: bytes, bundle: RootBundle, draft: AdoptionDraft
) -> AdoptionMade:
    """The adoption of what ``rekey``'s engineer signed, made by this admin (module docstring)."""
    identity: Identity = rekey.identity
    departing, vault_id, me = rekey.engineer, identity.vault_id, identity.me
    checks = ResponseChecks(vault_id, org, clock)
    policies: DepartingDraft = draft.policies
    if (policies.vault_id, policies.me, policies.departing) != (vault_id, me, departing):
        raise UntrustedRecord(NOT_THEIRS)
    key_sigs, skipped_keys, seen = [], [], set()
    for copy in draft.client_keys:
        record = copy.record
        where = (record.client_id, record.version)
        if record.signed_by != departing.id or copy.signer != departing or where in seen:
            raise UntrustedRecord(NOT_THEIRS)
        seen.add(where)
        try:
            checks.client_key(copy, *where)  # the engineer's signature, while an active admin
            if copy.blob is None or (copy.kind, copy.recipient_id) != ("recovery", bundle.version):
                raise UntrustedRecord("no recovery copy")
            context = (LABEL_CLIENT_KEY_SEAL, vault_id, *where, "recovery", bundle.version)
            key = sealing.open_sealed(bundle.recovery, record.version, copy.blob, context)
            if signing.client_key_fingerprint(key) != record.fingerprint:
                raise UntrustedRecord("another key")
        except VaultError:
            skipped_keys.append(where)
            continue
        fields = client_key_fields(vault_id, dataclasses.replace(record, signed_by=me.id))
        key_sigs.append((*where, keys.my_signing_key().sign(LABEL_SIG_CLIENT_KEY, *fields)))
    grant_sigs, skipped_grants = [], []
    for adopted in draft.grants:
        grant, grantee = adopted.grant, adopted.engineer
        if grant.granted_by != departing.id or is_revoked(grant) or grant.engineer_id != grantee.id:
            raise UntrustedRecord(NOT_THEIRS)
        checks.certificate(grantee)  # the sealing key the new signature will cover is the grantee's
        try:
            verify_grant(vault_id, grant, grantee, checks.admin(departing, grant.granted_by))
        except VaultError:
            skipped_grants.append(grant.id)
            continue
        fields = grant_fields(vault_id, grant, grantee.sealing_public)
        grant_sigs.append((grant.id, keys.my_signing_key().sign(grant_label(grant), *fields)))
    adoption = DepartingAdoption(None, _SigningKeys(keys), lambda: clock)  # type: ignore[arg-type]
    made = adoption.sign_draft(departing.id, policies)
    return AdoptionMade(tuple(key_sigs), tuple(grant_sigs), made, tuple(skipped_keys), tuple(skipped_grants))
