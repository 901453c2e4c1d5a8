"""Client slugs a confirming admin is shown, opened where the keys are.

A pending confirmation's plan (``CarryPlan``) names each grant by ids and the client's slug
as stored (ciphertext), with the client-key versions those slugs are under, sealed to the
recovery key. The authority never opens a slug for the plan: the confirming admin's
keyholder opens each one here, after checking what it is given:

* the client-key record is signed by an active, certified admin (``ResponseChecks``),
  for the client and version the slug blob names;
* the sealed copy is the one sealed to the recovery key the admin's root bundle holds;
* the key opened matches the record's signed fingerprint, and the slug decrypts under
  that client's id (a blob of another client does not).

A slug that does not open is None (every failure is the same opaque result).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vault.authority.engineer_requests import PendingRows
from vault.authority.requests import SealedClientKey
from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL
from vault.errors import DecryptionFailed, VaultError
from vault.keyholder.keys import RootBundle
from vault.keyholder.responses import ResponseChecks

if TYPE_CHECKING:
    from vault.keyholder.engineers import EngineerKeyholder


class SlugOpener:
    """Opens the slugs of one plan with the root bundle sealed to the calling admin."""

    def __init__(self, owner: EngineerKeyholder, pending: PendingRows, org: bytes) -> None:
        identity, root = pending.identity, pending.root
        self._vault_id = identity.vault_id
        self._checks = ResponseChecks(identity.vault_id, org, owner.clock())
        self._bundle: RootBundle | None = None
        if root.sealed is not None or (owner.keys.root is not None and owner.keys.root.version == root.version):
            self._bundle = owner.root_bundle(identity, root, org)
        self._sealed: dict[tuple[int, int], SealedClientKey] = {}
        for key in pending.plan.keys:
            self._sealed.setdefault((key.record.client_id, key.record.version), key)
        self._keys: dict[tuple[int, int], bytes] = {}

    def __repr__(self) -> str:
        return "SlugOpener(<redacted>)"

    def slug(self, client_id: int, blob: bytes | None) -> str | None:
        """The client's slug, or None if it does not open (or there is none)."""
        if self._bundle is None or blob is None:
            return None
        try:
            version = blobs.blob_key_version(blob)
            key = self._key(self._bundle, client_id, version)
            return blobs.decrypt_client_field(key, version, blob, client_id, "slug").decode("utf-8")
        except (VaultError, UnicodeDecodeError, ValueError):
            return None

    def _key(self, bundle: RootBundle, client_id: int, version: int) -> bytes:
        held = self._keys.get((client_id, version))
        if held is not None:
            return held
        sealed = self._sealed.get((client_id, version))
        if sealed is None or sealed.blob is None:
            raise DecryptionFailed()
        self._checks.client_key(sealed, client_id, version)
        if (sealed.kind, sealed.recipient_id) != ("recovery", bundle.version):
            raise DecryptionFailed()
        context = (LABEL_CLIENT_KEY_SEAL, self._vault_id, client_id, version, "recovery", bundle.version)
        key = sealing.open_sealed(bundle.recovery, version, sealed.blob, context)
        if signing.client_key_fingerprint(key) != sealed.record.fingerprint:
            raise DecryptionFailed()
        self._keys[(client_id, version)] = key
        return key
