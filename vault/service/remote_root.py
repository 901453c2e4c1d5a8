"""An admin's root rotation through a team server, with no database on this machine.

``RemoteVault.keys.rotate_root`` (``credvault --server URL rotate root``) runs the in-process
``RootRotationKeyholder`` unchanged over ``HttpsRootTransport`` (``transport/https_root.py``: a draft,
the pages of clients, one commit). Everything the keyholder is shown is verified here under what this
admin already trusts: their own row under the organisation key their pin leads to by signed links, the
root bundle opened from the copy sealed to them (it must hold the recovery key the server names and the
current organisation key), each roster certificate, each client-key version's record signed by an
active admin and its recovery copy opened with the old recovery key. The new bundle, the new
organisation key, the certificates, the seals and the recovery shares are made here; the shares are
shown once and never sent.

The old root bundle this session held is forgotten afterwards (it is destroyed on the server). A commit
refused as stale (409: a client, the roster or a root key changed between the draft and the commit) is
drafted again with a new bundle, ``STALE_RETRIES`` times at most. If the commit's answer is lost (the
connection fails after the server committed) the new bundle is still sealed to this admin on the
server, but the recovery shares made here are lost: ``rotate root --shares K-of-N`` makes new ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from vault.errors import ConcurrentChange
from vault.keyholder.keys import RootBundle
from vault.keyholder.root_rotation import RootResult, RootRotationKeyholder
from vault.records import RootRotation
from vault.service.remotekeys import RemoteKeys
from vault.transport.https import HttpsTransport
from vault.transport.https_root import HttpsRootTransport

STALE_RETRIES = 3


class RemoteRootKeys:
    """The ``Keys`` the root rotation's keyholder reads: this session's, and no bundle held (it opens
    the one sealed to this admin from the draft, and is no older than it)."""

    def __init__(self, keys: RemoteKeys) -> None:
        self.keys, self.client_keys = keys, keys.client_keys
        self.root: RootBundle | None = None

    def __repr__(self) -> str:
        return "RemoteRootKeys(<redacted>)"

    def me(self) -> Any:
        return self.keys.me()

    def session_sealing_public(self, me: Any) -> bytes:
        return self.keys.sealing_public()

    def my_keypair(self) -> Any:
        return self.keys.my_keypair()


class RemoteRootRotation:
    """``keys.rotate_root`` through the server (module docstring)."""

    def __init__(self, keys: RemoteKeys, https: HttpsTransport, clock: Callable[[], dt.datetime]) -> None:
        self.keys, self.https, self.clock = keys, https, clock

    def __repr__(self) -> str:
        return "RemoteRootRotation()"

    def rotate_root(self, *, shares: tuple[int, int] | None = None) -> RootRotation:
        """As ``Vault.keys.rotate_root``, through the server."""
        self.keys.me()
        done = self._again(shares)
        self.keys.forget()  # the old bundle is destroyed on the server; nothing learned under it is kept
        answer = done.answer
        return RootRotation(
            root_version=answer.root_version, org_version=answer.org_version, clients=answer.clients,
            admins=answer.admins, shares=done.shares, threshold=done.threshold, refused=answer.refused,
            warnings=done.warnings,
        )  # fmt: skip

    def _again(self, shares: tuple[int, int] | None) -> RootResult:
        for attempt in range(STALE_RETRIES + 1):
            keyholder = RootRotationKeyholder(HttpsRootTransport(self.https), RemoteRootKeys(self.keys), self.clock)  # type: ignore[arg-type]
            try:
                return keyholder.rotate(shares=shares)
            except ConcurrentChange:
                if attempt == STALE_RETRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover
