"""The clients' audit keys: each client's ring of audit-key generations, sealed under its
client key (``audit-keys`` field, docs/format.md), and the encryption of an event's details
under the current one. Keyholder work: the ring opens only with the client key."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.crypto import blobs
from vault.errors import DecryptionFailed
from vault.service.rows import HasId
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust


class AuditKeys:
    """A client's audit-key ring, opened and made with the acting engineer's client keys."""

    def __init__(self, keys: Keys, trust: Trust) -> None:
        self.keys = keys
        self.trust = trust

    @staticmethod
    def encrypt_details(audit_key: tuple[int, bytes], raw: bytes, client_id: int, seq: int, action: str) -> bytes:
        """An event's details under the audit key (generation, key), bound to its event."""
        generation, key = audit_key
        return blobs.encrypt_audit_detail(key, generation, raw, client_id, seq, action)

    def seal_request_details(
        self, s: Session, client: m.Client, details: dict[str, object], request_id: bytes, action: str
    ) -> tuple[int, bytes]:
        """A format-3 event's private details, sealed by the keyholder before its request is sent
        (bound to the request's id, docs/format.md §4.3a): (audit-key generation, blob)."""
        generation, key = self.current_audit_key(s, client)
        raw = json.dumps(details, sort_keys=True).encode("utf-8")
        return generation, blobs.encrypt_audit_detail_v3(key, generation, raw, client.id, request_id, action)

    def audit_ring(self, s: Session, client: m.Client) -> bytes:
        """All audit-key generations of a client (32 bytes each), oldest first."""
        if client.audit_keys_blob is None:
            self.store_audit_ring(s, client, blobs.new_key())
        assert client.audit_keys_blob is not None
        return self.ring(s, client, client.audit_keys_blob)

    def ring(self, s: Session, client: HasId, audit_keys_blob: bytes) -> bytes:
        ring = self.keys.client_field(s, client, audit_keys_blob, "audit-keys")
        if not ring or len(ring) % 32:
            raise DecryptionFailed()
        return ring

    def store_audit_ring(self, s: Session, client: m.Client, ring: bytes) -> None:
        version = self.trust.current_key_version(s, client)
        key = self.keys.client_key(s, client.id, version)
        client.audit_keys_blob = blobs.encrypt_client_field(key, version, ring, client.id, "audit-keys")

    def current_audit_key(self, s: Session, client: m.Client) -> tuple[int, bytes]:
        ring = self.audit_ring(s, client)
        return len(ring) // 32, ring[-32:]

    def audit_key(self, s: Session, client: m.Client, generation: int) -> bytes:
        ring = self.audit_ring(s, client)
        if not 1 <= generation <= len(ring) // 32:
            raise DecryptionFailed()
        return ring[(generation - 1) * 32 : generation * 32]
