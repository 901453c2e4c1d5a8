"""Appending to the audit chain, inside the transaction of the change it records.

The append locks the single ``audit_head`` row (``SELECT … FOR UPDATE`` on PostgreSQL;
SQLite transactions here start with ``BEGIN IMMEDIATE``), so concurrent writers queue
and sequence numbers stay contiguous. Reading and verifying live in ``audit.py``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.crypto import blobs, chain
from vault.errors import DecryptionFailed
from vault.service.base import VaultBase
from vault.storage import models as m

# Events that nobody can sign: no certified key exists for the actor at that moment.
UNSIGNED_ACTIONS = frozenset({"unlock-failed", "enroll"})


def us(value: dt.datetime) -> int:
    return int(value.timestamp() * 1_000_000)


def from_us(value: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(value / 1_000_000, dt.UTC)


class JournalOps(VaultBase):
    # -- appending ---------------------------------------------------------------------

    def _append(
        self,
        s: Session,
        action: str,
        *,
        client_id: int | None = None,
        secret_id: int | None = None,
        details: dict[str, Any] | None = None,
        public: dict[str, Any] | None = None,
        actor: m.Engineer | None = None,
        sign: bool = True,
        seed: bytes | None = None,
    ) -> m.AuditEvent:
        """Append one event in the caller's transaction (it commits with the change)."""
        info = self._info(s)
        head = s.scalars(select(m.AuditHead).where(m.AuditHead.id == 1).with_for_update()).first()
        if head is None:
            head = m.AuditHead(id=1, seq=0, hash=chain.GENESIS)
            s.add(head)
            s.flush()
        seq = head.seq + 1
        if actor is None and sign:
            actor = s.get(m.Engineer, self._me().engineer_id)
        if sign and actor is not None and actor.signing_public is None:
            raise ValueError("the actor has no signing key")
        details_blob = key_version = None
        if details is not None:
            if client_id is None:
                raise ValueError("encrypted details need a client")
            client = s.get(m.Client, client_id)
            assert client is not None
            key_version, key = self._current_audit_key(s, client)
            raw = json.dumps(details, sort_keys=True).encode("utf-8")
            details_blob = blobs.encrypt_audit_detail(key, key_version, raw, client_id, seq, action)
        details_json = json.dumps(public, sort_keys=True) if public else None
        event = m.AuditEvent(
            seq=seq,
            at_us=us(self.clock()),
            engineer_id=actor.id if actor else None,
            key_generation=actor.key_generation if actor else 0,
            action=action,
            client_id=client_id,
            secret_id=secret_id,
            key_version=key_version,
            details_blob=details_blob,
            details_json=details_json,
            prev_hash=head.hash,
            hash=b"",
            signature=None,
        )
        event.hash = self._event_hash(info.vault_id, event)
        if sign:
            event.signature = chain.sign_event(seed or self._me().signing_seed, info.vault_id, seq, event.hash)
        s.add(event)
        head.seq, head.hash = seq, event.hash
        return event

    @staticmethod
    def _event_hash(vault_id: bytes, e: Any) -> bytes:
        """The chain hash of an event (an ORM object or a plain row with the same columns)."""
        return chain.event_hash(
            vault_id,
            e.seq,
            e.at_us,
            e.engineer_id,
            e.key_generation,
            e.action,
            e.client_id,
            e.secret_id,
            e.key_version,
            e.details_blob,
            e.details_json,
            prev_hash=e.prev_hash,
        )

    # -- the client's audit-key ring ---------------------------------------------------------

    def _audit_ring(self, s: Session, client: m.Client) -> bytes:
        """All audit-key generations of a client (32 bytes each), oldest first."""
        if client.audit_keys_blob is None:
            self._store_audit_ring(s, client, blobs.new_key())
        assert client.audit_keys_blob is not None
        ring = self._client_field(s, client, client.audit_keys_blob, "audit-keys")
        if not ring or len(ring) % 32:
            raise DecryptionFailed()
        return ring

    def _store_audit_ring(self, s: Session, client: m.Client, ring: bytes) -> None:
        version = client.current_key_version
        key = self._client_key(s, client.id, version)
        client.audit_keys_blob = blobs.encrypt_client_field(key, version, ring, client.id, "audit-keys")

    def _current_audit_key(self, s: Session, client: m.Client) -> tuple[int, bytes]:
        ring = self._audit_ring(s, client)
        return len(ring) // 32, ring[-32:]

    def _audit_key(self, s: Session, client: m.Client, generation: int) -> bytes:
        ring = self._audit_ring(s, client)
        if not 1 <= generation <= len(ring) // 32:
            raise DecryptionFailed()
        return ring[(generation - 1) * 32 : generation * 32]
