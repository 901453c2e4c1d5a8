"""Checkout holds: the exclusive and shared holds on a secret, checked against their events."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.crypto import blobs, chain
from vault.errors import (
    UntrustedRecord,
    VaultError,
)
from vault.service import rows
from vault.service.rows import HasId
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.trust import Trust
    from vault.service.core import Core


class Holds:
    """Checkout holds: found under the write lock, and checked against their events."""

    def __init__(self, core: Core, trust: Trust, journal: Journal) -> None:
        self.core = core
        self.trust = trust
        self.journal = journal

    def lock_and_find_holds(self, s: Session, secret: HasId) -> list[rows.HoldRow]:
        """The open checkouts of a secret, after locking its row (``FOR UPDATE`` on PostgreSQL;
        on SQLite, BEGIN IMMEDIATE has already serialised writers)."""
        conn = rows.connection(s)
        if conn.dialect.name != "sqlite":
            rows.LOCK_SECRET.all(conn, {"secret": secret.id})
        return [rows.HoldRow._make(r) for r in rows.HOLDS.all(conn, {"secret": secret.id, "now": self.core.clock()})]

    def genuine_holds(
        self,
        s: Session,
        client: HasId,
        audit_keys_blob: bytes | None,
        secret_id: int,
        held: list[rows.HoldRow],
        me_id: int,
    ) -> list[rows.HoldRow]:
        """Other engineers' open checkouts that their audit events vouch for, each marked
        exclusive as its event says. A hold row is honoured only if the event it names is a
        ``checkout`` of this secret by that engineer, whose hash and signature (by that
        engineer's certified key) verify and whose details, sealed under the client's audit
        key, match the row's exclusivity and end. Planted or edited holds block nobody."""
        out = []
        for hold in held:
            if hold.engineer_id == me_id:
                continue
            exclusive = self._hold_event(s, client, audit_keys_blob, secret_id, hold)
            if exclusive is not None:
                out.append(hold._replace(exclusive=exclusive))
        return out

    def _hold_event(
        self, s: Session, client: HasId, audit_keys_blob: bytes | None, secret_id: int, hold: rows.HoldRow
    ) -> bool | None:
        """Whether the checkout event behind ``hold`` made it exclusive; None if it does not verify."""
        e = s.get(m.AuditEvent, hold.event_seq)
        if (
            e is None
            or audit_keys_blob is None
            or e.action != "checkout"
            or (e.engineer_id, e.client_id, e.secret_id) != (hold.engineer_id, client.id, secret_id)
            or e.signature is None
            or e.details_blob is None
            or e.key_version is None
        ):
            return None
        codec = chain.EventCodec(self.core.vid(s))
        row = (e.seq, e.at_us, e.engineer_id, e.key_generation, e.action, e.client_id, e.secret_id, e.key_version)
        fields = (*row, e.details_blob, e.details_json, e.prev_hash)
        # A checkout written before event format 2 (credvault upgraded while it is held) still counts.
        if e.hash not in (codec.audit_event_hash(*fields), codec.audit_event_hash_v1(*fields)):
            return None
        public = self.event_key(s, hold.engineer_id, e.key_generation)
        if public is None or not codec.signature_valid(public, e.signature, e.seq, e.hash):
            return None
        try:
            ring = self.journal.audit_keys.ring(s, client, audit_keys_blob)
            if not 1 <= e.key_version <= len(ring) // 32:
                return None
            key = ring[(e.key_version - 1) * 32 : e.key_version * 32]
            raw = blobs.decrypt_audit_detail(key, e.key_version, e.details_blob, client.id, e.seq, e.action)
            details = json.loads(raw)
        except (VaultError, ValueError):
            return None
        if not isinstance(details, dict) or details.get("until") != int(hold.expires_at.timestamp()):
            return None
        return details.get("exclusive") is True

    def event_key(self, s: Session, engineer_id: int, generation: int) -> bytes | None:
        """The certified signing key of an engineer's key generation, or None."""
        row = s.get(m.Engineer, engineer_id)
        try:
            if row is not None and row.key_generation == generation and row.signing_public is not None:
                self.trust.verify_certificate(s, row)
                return row.signing_public
            key = s.get(m.EngineerKey, (engineer_id, generation))
            return None if key is None or row is None else self.trust.verified_key(s, key, row.name)
        except UntrustedRecord:
            return None
