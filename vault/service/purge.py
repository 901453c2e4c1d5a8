"""Deletion requests and subject access: purge by crypto-shredding, with signed receipts.

``purge_client`` destroys, in one transaction, every copy of every version of the
client's key (the recovery copy, every grant's copy, this process's cache), deletes the
client's secrets, versions, lookup tags, policies, grants and checkouts, and appends a
**purge receipt**: request reference, admin, time, counts and the fingerprints of the
destroyed key versions, readable without any client key and signed by the admin. The
client's audit events keep their place in the chain; their details were encrypted under
the client's audit keys, which went with the client, so only pseudonymous ids remain.
After the commit, freed space is scrubbed (see ``scrub``).

``subject_find`` / ``subject_report`` / ``purge_subject`` answer a person's access
and erasure requests: an admin searches the decrypted metadata of every client for a
person (a name, an email address) and purges the matching secrets after review.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from vault.crypto import _primitives as prim
from vault.crypto import blobs, signing
from vault.crypto.labels import LABEL_FP_DATA_KEY, LABEL_SIG_RECEIPT
from vault.errors import InvalidInput, NotFound, StoreUnavailable, UntrustedRecord
from vault.service import validation
from vault.service.core import epoch
from vault.service.records import PurgePreview, ReceiptCheck, ReceiptInfo
from vault.storage import models as m
from vault.storage.engine import is_sqlite

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.secrets import Secrets


REQUEST_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:#/-]{0,63}")
MIN_QUERY = 3


def _request(ref: str) -> str:
    if not isinstance(ref, str) or not REQUEST_REF.fullmatch(ref):
        raise InvalidInput(
            "bad request reference",
            hint="use the ticket or request number (1-64 letters, digits and . _ : # / -), no personal data",
        )
    return ref


class Purge:
    """Purges: ``vault.purge.preview/client/secret/scrub/receipts/verify_receipt``."""

    def __init__(
        self, core: Core, keys: Keys, trust: Trust, journal: Journal, clients: Clients, secrets: Secrets
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.clients = clients
        self.secrets = secrets

    def preview(self, client: str) -> PurgePreview:
        """What ``purge_client`` would remove, for the admin to review first."""
        with self.core.store.transaction() as s:
            self.trust.my_admin_row(s)
            row = self.clients.client(s, client)
            return self._preview(s, client, row)

    def _preview(self, s: Session, slug: str, row: m.Client) -> PurgePreview:
        def count(query: Any) -> int:
            return int(s.scalar(query) or 0)

        secret_ids = select(m.Secret.id).where(m.Secret.client_id == row.id)
        return PurgePreview(
            client=slug,
            secrets=count(select(func.count()).select_from(m.Secret).where(m.Secret.client_id == row.id)),
            versions=count(
                select(func.count()).select_from(m.SecretVersion).where(m.SecretVersion.secret_id.in_(secret_ids))
            ),
            grants=count(select(func.count()).select_from(m.Grant).where(m.Grant.client_id == row.id)),
            open_checkouts=count(
                select(func.count())
                .select_from(m.Checkout)
                .where(
                    m.Checkout.client_id == row.id,
                    m.Checkout.released_at.is_(None),
                    m.Checkout.expires_at > self.core.clock(),
                )
            ),
            key_versions=count(select(func.count()).select_from(m.ClientKey).where(m.ClientKey.client_id == row.id)),
            audit_events=count(select(func.count()).select_from(m.AuditEvent).where(m.AuditEvent.client_id == row.id)),
        )

    # -- purging -----------------------------------------------------------------------------

    def client(self, client: str, *, request: str, vacuum: bool = False) -> ReceiptInfo:
        """Crypto-shred a client: every key copy destroyed, every row deleted, a signed receipt."""
        _request(request)
        with self.core.store.transaction() as s:
            self.trust.my_admin_row(s)
            row = self.clients.client(s, client)
            preview = self._preview(s, client, row)
            fingerprints = [
                ck.fingerprint.hex()
                for ck in s.scalars(
                    select(m.ClientKey).where(m.ClientKey.client_id == row.id).order_by(m.ClientKey.version)
                )
            ]
            secret_ids = sorted(s.scalars(select(m.Secret.id).where(m.Secret.client_id == row.id)))
            client_id = row.id
            self._delete_client_rows(s, client_id)
            counts = preview.to_json()
            counts.pop("client")
            receipt = self._receipt(s, "client", request, client_id, secret_ids, counts, fingerprints)
        self.scrub(vacuum=vacuum)
        return receipt

    def _delete_client_rows(self, s: Session, client_id: int) -> None:
        secret_ids = select(m.Secret.id).where(m.Secret.client_id == client_id)
        s.execute(delete(m.Checkout).where(m.Checkout.client_id == client_id))
        s.execute(delete(m.SecretVersion).where(m.SecretVersion.secret_id.in_(secret_ids)))
        s.execute(delete(m.Secret).where(m.Secret.client_id == client_id))
        s.execute(delete(m.ClientKeySeal).where(m.ClientKeySeal.client_id == client_id))
        s.execute(delete(m.Rotation).where(m.Rotation.client_id == client_id))
        s.execute(delete(m.Grant).where(m.Grant.client_id == client_id))
        s.execute(delete(m.ClientPolicy).where(m.ClientPolicy.client_id == client_id))
        s.execute(delete(m.ClientKey).where(m.ClientKey.client_id == client_id))
        s.execute(delete(m.Client).where(m.Client.id == client_id))
        for cached in [k for k in self.keys.client_keys if k[0] == client_id]:
            del self.keys.client_keys[cached]

    def secret(self, ref: str, *, request: str, vacuum: bool = False) -> ReceiptInfo:
        """Destroy one secret: every version and its data key; a signed receipt."""
        _request(request)
        with self.core.store.transaction() as s:
            self.trust.my_admin_row(s)
            client, secret, _slug = self.secrets.secret(s, ref)
            receipt = self.purge_secrets(s, client, [secret], "secret", request)
        self.scrub(vacuum=vacuum)
        return receipt

    def purge_secrets(
        self, s: Session, client: m.Client, secrets: list[m.Secret], kind: str, request: str
    ) -> ReceiptInfo:
        fingerprints: list[str] = []
        versions = checkouts = 0
        for secret in secrets:
            for row in s.scalars(select(m.SecretVersion).where(m.SecretVersion.secret_id == secret.id)):
                key = self.keys.client_key(s, client.id, row.key_version)
                dek = blobs.unwrap_data_key(key, row.key_version, row.wrapped_dek, client.id, secret.id, row.version)
                fingerprints.append(prim.sha256(prim.ctx(LABEL_FP_DATA_KEY, dek))[:16].hex())
                versions += 1
            checkouts += s.execute(delete(m.Checkout).where(m.Checkout.secret_id == secret.id)).rowcount or 0  # type: ignore[attr-defined]
            s.execute(delete(m.SecretVersion).where(m.SecretVersion.secret_id == secret.id))
            s.execute(delete(m.Secret).where(m.Secret.id == secret.id))
        counts = {"secrets": len(secrets), "versions": versions, "checkouts": checkouts}
        return self._receipt(s, kind, request, client.id, sorted(x.id for x in secrets), counts, fingerprints)

    def _receipt_fields(self, s: Session, r: m.PurgeReceipt) -> tuple[signing.ContextItem, ...]:
        return (
            self.core.vid(s),
            r.id,
            r.kind,
            r.request_ref,
            r.client_id,
            r.secret_ids,
            r.counts,
            r.fingerprints,
            r.admin_id,
            r.admin_generation,
            r.purged_at,
            r.event_seq,
        )

    def _receipt(
        self,
        s: Session,
        kind: str,
        request: str,
        client_id: int,
        secret_ids: list[int],
        counts: dict[str, Any],
        fingerprints: list[str],
    ) -> ReceiptInfo:
        me = self.trust.my_admin_row(s)
        receipt = m.PurgeReceipt(
            kind=kind,
            request_ref=request,
            client_id=client_id,
            secret_ids=json.dumps(secret_ids),
            counts=json.dumps(counts, sort_keys=True),
            fingerprints=json.dumps(fingerprints),
            admin_id=me.id,
            admin_generation=me.key_generation,
            purged_at=epoch(self.core.clock()),
            event_seq=0,
            signature=b"",
        )
        s.add(receipt)
        s.flush()
        event = self.journal.append(
            s,
            f"purge-{kind}",
            client_id=client_id,
            secret_id=secret_ids[0] if len(secret_ids) == 1 else None,
            public={"receipt": receipt.id, "request": request, "counts": counts},
        )
        receipt.event_seq = event.seq
        receipt.signature = self.keys.my_signing_key().sign(LABEL_SIG_RECEIPT, *self._receipt_fields(s, receipt))
        return self._receipt_info(s, receipt)

    def _receipt_info(self, s: Session, r: m.PurgeReceipt) -> ReceiptInfo:
        admin = s.get(m.Engineer, r.admin_id)
        return ReceiptInfo(
            r.id,
            r.kind,
            r.request_ref,
            r.client_id,
            json.loads(r.secret_ids),
            json.loads(r.counts),
            json.loads(r.fingerprints),
            admin.name if admin else "?",
            dt.datetime.fromtimestamp(r.purged_at, dt.UTC),
            r.event_seq,
        )

    # -- scrubbing ---------------------------------------------------------------------------

    def scrub(self, *, vacuum: bool = False) -> str:
        """Remove freed data from disk after a purge; returns what was done.

        SQLite: ``secure_delete`` already zeroed freed pages; a ``wal_checkpoint(TRUNCATE)``
        moves them into the database file and empties the WAL; ``vacuum`` rebuilds the
        file. PostgreSQL: deleted rows stay in their pages until ``VACUUM`` marks them
        reusable, and whole-file rewrite needs ``VACUUM FULL`` (run when ``vacuum``);
        WAL segments and replicas keep old row images until they are recycled.
        """
        try:
            if is_sqlite(self.core.store.engine):
                raw = self.core.store.engine.raw_connection()  # outside any transaction, as these need
                try:
                    cursor = raw.cursor()
                    if vacuum:
                        cursor.execute("VACUUM")
                    cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    cursor.close()
                finally:
                    raw.close()
                return "sqlite: freed pages zeroed (secure_delete), WAL checkpointed and truncated" + (
                    ", file vacuumed" if vacuum else ""
                )
            with self.core.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for table in (
                    "secret_versions",
                    "secrets",
                    "client_key_seals",
                    "client_keys",
                    "clients",
                    "grants",
                    "checkouts",
                ):
                    conn.execute(text(f"VACUUM {'FULL ' if vacuum else ''}{table}"))
            return "postgresql: VACUUM" + (" FULL" if vacuum else "") + " run on the purged tables"
        except Exception as error:  # the purge itself is committed; scrubbing is best effort
            raise StoreUnavailable(
                f"the purge is committed but scrubbing failed ({type(error).__name__})",
                hint="`credvault receipts` shows its receipt; run `credvault purge scrub --vacuum` later",
            ) from None

    # -- receipts -------------------------------------------------------------------------------

    def receipts(self) -> list[ReceiptInfo]:
        with self.core.store.transaction() as s:
            self.trust.my_admin_row(s)
            return [self._receipt_info(s, r) for r in s.scalars(select(m.PurgeReceipt).order_by(m.PurgeReceipt.id))]

    def verify_receipt(self, receipt_id: int) -> ReceiptCheck:
        """Check the receipt's signature, that nothing it destroyed can be found in the store,
        and that the database holds no object (a trigger, a table …) that could have kept a copy."""
        with self.core.store.inspecting() as foreign, self.core.store.transaction() as s:
            self.trust.my_row(s)
            r = s.get(m.PurgeReceipt, validation.number("receipt number", receipt_id, 1))
            if r is None:
                raise NotFound(f"no purge receipt #{receipt_id}")
            problems: list[str] = [
                f"the database holds {thing} that credvault did not create: it may have kept what the purge deleted"
                for thing in foreign
            ]
            try:
                public = self._signer_key(s, r.admin_id, r.admin_generation)
                signing.verify(
                    public, r.signature, LABEL_SIG_RECEIPT, *self._receipt_fields(s, r), what=f"receipt #{r.id}"
                )
            except UntrustedRecord as error:
                problems.append(str(error))
            secret_ids = json.loads(r.secret_ids)
            fingerprints = [bytes.fromhex(f) for f in json.loads(r.fingerprints)]
            if secret_ids and s.scalar(select(func.count()).select_from(m.Secret).where(m.Secret.id.in_(secret_ids))):
                problems.append("a purged secret still exists")
            if secret_ids and s.scalar(
                select(func.count()).select_from(m.SecretVersion).where(m.SecretVersion.secret_id.in_(secret_ids))
            ):
                problems.append("a purged secret version (and its wrapped data key) still exists")
            if r.kind == "client":
                if s.get(m.Client, r.client_id) is not None:
                    problems.append("the purged client still exists")
                if s.scalar(
                    select(func.count()).select_from(m.ClientKeySeal).where(m.ClientKeySeal.client_id == r.client_id)
                ):
                    problems.append("a sealed copy of a purged client key still exists")
                if fingerprints and s.scalar(
                    select(func.count())
                    .select_from(m.ClientKey)
                    .where((m.ClientKey.client_id == r.client_id) | m.ClientKey.fingerprint.in_(fingerprints))
                ):
                    problems.append("a purged client-key version is still recorded")
            event = s.get(m.AuditEvent, r.event_seq)
            if event is None or event.action != f"purge-{r.kind}":
                problems.append("the receipt's audit event is missing")
            return ReceiptCheck(r.id, not problems, problems)

    def _signer_key(self, s: Session, engineer_id: int, generation: int) -> bytes:
        row = s.get(m.Engineer, engineer_id)
        if row is None:
            raise UntrustedRecord("the receipt's signer is unknown")
        key = s.get(m.EngineerKey, (engineer_id, generation))
        if key is not None:
            return self.trust.verified_key(s, key, row.name)
        self.trust.verify_certificate(s, row)
        if row.key_generation != generation or row.signing_public is None:
            raise UntrustedRecord("the receipt's signing key is unknown")
        return row.signing_public
