"""The trust checks a keyholder makes on the rows of an authority's response.

Under the organisation key the engineer pinned (or one the signed chain of organisation
keys leads to from it): certificates, an admin signer, a grant (the head of the caller's
ledger for the client: theirs, unrevoked, signed by an active admin, unexpired) and a
client-key record (signed by an active admin, not destroyed). The field layouts of
every signature are those of ``vault/keyholder/trust.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from vault.authority.certificates import trusted_org_key as trusted_org_key
from vault.authority.certificates import verify_certificate
from vault.authority.engineer_requests import DISABLED
from vault.authority.purge_requests import EngineerKeyRow
from vault.authority.requests import ClientKeyRow, SealedClientKey
from vault.crypto import signing
from vault.crypto.labels import (
    LABEL_SIG_CLIENT_KEY,
    LABEL_SIG_ENGINEER_KEY,
)
from vault.errors import DecryptionFailed, GrantExpired, NotFound, UntrustedRecord
from vault.keyholder.trust import client_key_fields, grant_fields, grant_label
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRecord, GrantRecord, is_revoked


class ResponseChecks:
    """The trust checks on the records of one response, under one organisation key."""

    def __init__(self, vault_id: bytes, org_public: bytes, now: dt.datetime) -> None:
        self.vault_id, self.org_public, self.now = vault_id, org_public, now

    def certificate(self, row: EngineerRecord) -> None:
        verify_certificate(self.vault_id, self.org_public, row)

    def admin(self, row: EngineerRecord | None, signer_id: int) -> EngineerRecord:
        """The signer of a record: the engineer it names, certified, an active admin."""
        if row is None or row.id != signer_id:
            raise UntrustedRecord("a record is signed by an unknown engineer")
        self.certificate(row)
        if row.role != ROLE_ADMIN or row.status != ACTIVE:
            raise UntrustedRecord(f"a record is signed by {row.name!r}, who is not an active admin")
        return row

    def grant(
        self, grant: GrantRecord | None, signer: EngineerRecord | None, me: EngineerRecord, client_id: int
    ) -> None:
        """The head of ``me``'s grant ledger for ``client_id``: theirs, unrevoked, signed, unexpired."""
        if grant is None or is_revoked(grant):
            raise NotFound("no such client, or you hold no grant for it")
        if (grant.engineer_id, grant.client_id) != (me.id, client_id):
            raise UntrustedRecord("the grant returned is not this engineer's for this client")
        admin = self.admin(signer, grant.granted_by)
        assert admin.signing_public is not None
        fields = grant_fields(self.vault_id, grant, me.sealing_public)
        signing.verify(admin.signing_public, grant.signature, grant_label(grant), *fields, what="the grant")
        if grant.until is not None and grant.until <= int(self.now.timestamp()):
            until = dt.datetime.fromtimestamp(grant.until, dt.UTC).isoformat(timespec="minutes")
            raise GrantExpired(f"your grant for this client expired at {until}", hint="ask an admin to renew it")

    def client_key(self, sealed: SealedClientKey, client_id: int, version: int) -> None:
        record = sealed.record
        if (record.client_id, record.version) != (client_id, version) or record.state == "destroyed":
            raise DecryptionFailed()
        self._client_key_signature(record, self.admin(sealed.signer, record.signed_by))

    def purged_client_key(
        self,
        record: ClientKeyRow,
        signer: EngineerRecord | None,
        keys: Sequence[EngineerKeyRow],
        client_id: int,
        version: int,
    ) -> None:
        """A client-key record a client purge destroys (any state): this client's version,
        signed by an active admin under their current key; or, a version destroyed already
        (its record is not re-signed when its signer goes or their keys are rotated), by an
        admin under one of their certified key generations ``keys``, within its lifetime."""
        if (record.client_id, record.version) != (client_id, version):
            raise UntrustedRecord("the authority drafted key records of another client")
        try:
            self._client_key_signature(record, self.admin(signer, record.signed_by))
        except UntrustedRecord:
            if record.state != "destroyed" or signer is None or signer.id != record.signed_by:
                raise
            self._signed_in_a_lifetime(record, signer, keys)

    def _signed_in_a_lifetime(
        self, record: ClientKeyRow, signer: EngineerRecord, keys: Sequence[EngineerKeyRow]
    ) -> None:
        """``record`` signed by a certified key generation of ``signer`` (an admin), dated
        between that generation's certification and the next certification of the signer
        (a later generation, or the certificate that disabled them)."""
        certified = True
        try:
            self.certificate(signer)
        except UntrustedRecord:
            certified = False  # keys rotated, not yet enrolled again: no current certificate
        if signer.role != ROLE_ADMIN:
            raise UntrustedRecord(f"a record is signed by {signer.name!r}, who is not an admin")
        mine = sorted((k for k in keys if k.engineer_id == signer.id), key=lambda k: k.generation)
        for i, key in enumerate(mine):
            ends = [k.certified_at for k in mine[i + 1 :]]
            if (
                certified
                and signer.certified_at is not None
                and (signer.key_generation > key.generation or signer.status == DISABLED)
            ):
                ends.append(signer.certified_at)
            if record.signed_at < key.certified_at or (ends and record.signed_at > min(ends)):
                continue
            try:
                public = self.archived_key(key, signer.name)
                signing.verify(
                    public,
                    record.signature,
                    LABEL_SIG_CLIENT_KEY,
                    *client_key_fields(self.vault_id, record),
                    what=f"client key version {record.version}",
                )
            except UntrustedRecord:
                continue
            return
        raise UntrustedRecord(f"client key version {record.version} is not signed by an admin in their key's lifetime")

    def archived_key(self, key: EngineerKeyRow, name: str) -> bytes:
        """The signing key of an engineer's archived key generation, its certificate verified."""
        fields = (
            self.vault_id,
            key.engineer_id,
            name,
            key.generation,
            key.sealing_public,
            key.signing_public,
            key.certified_at,
        )
        what = f"key generation {key.generation} of engineer {name!r}"
        signing.verify(self.org_public, key.certificate, LABEL_SIG_ENGINEER_KEY, *fields, what=what)
        return key.signing_public

    def _client_key_signature(self, record: ClientKeyRow, admin: EngineerRecord) -> None:
        assert admin.signing_public is not None
        signing.verify(
            admin.signing_public,
            record.signature,
            LABEL_SIG_CLIENT_KEY,
            *client_key_fields(self.vault_id, record),
            what=f"client key version {record.version}",
        )
