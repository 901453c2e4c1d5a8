"""The acting engineer's unlocked keys, as a keyholder of one operation asks for them.

``SessionKeys`` adapts ``Keys`` (the session, the root bundle of an admin) to the small
``EngineerKeys`` protocol of the checkout's and the secrets' keyholders: open a copy sealed
to this engineer or to the recovery key, and nothing else. It never hands out a private key.
"""

from __future__ import annotations

from typing import Any

from vault.crypto import sealing, signing
from vault.crypto.labels import LABEL_TAG_CLIENT_SLUG
from vault.errors import DecryptionFailed
from vault.keyholder.keys import Keys
from vault.service.sessions import UnlockedSession
from vault.storage.engine import Store

__all__ = ["SessionKeys"]


class SessionKeys:
    """The acting engineer's unlocked keys, as a keyholder (checkouts, secrets) asks for them."""

    def __init__(self, keys: Keys, store: Store) -> None:
        self._keys, self._store = keys, store

    def open_recovery(self) -> None:
        with self._store.read() as s:
            self._keys.root_bundle(s)

    def session(self) -> UnlockedSession:
        return self._keys.me()

    def sealing_public(self) -> bytes:
        return self._keys.session_sealing_public(self._keys.me())

    def open_sealed(self, kind: str, recipient_id: int, version: int, blob: bytes, context: tuple[Any, ...]) -> bytes:
        if kind == "recovery":
            bundle = self._keys.root
            if bundle is None or bundle.version != recipient_id:
                raise DecryptionFailed()
            return sealing.open_sealed(bundle.recovery, version, blob, context)
        if kind != "engineer" or recipient_id != self._keys.me().engineer_id:
            raise DecryptionFailed()
        return sealing.open_sealed(self._keys.my_keypair(), version, blob, context)

    def slug_tag(self, slug: str) -> bytes | None:
        bundle = self._keys.root  # an admin's, opened when a client's context was first learned
        return None if bundle is None else signing.lookup_tag(bundle.lookup_key, LABEL_TAG_CLIENT_SLUG, slug)

    def recovery_version(self) -> int | None:
        bundle = self._keys.root  # opened when the client's context was learned
        return None if bundle is None else bundle.version
