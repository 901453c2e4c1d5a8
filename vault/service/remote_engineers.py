"""An admin's re-key (a lost laptop) and removal of an engineer through a team server, with no database
on this machine.

``RemoteVault.engineers.rotate`` runs the in-process ``EngineerKeyholder`` unchanged over
``HttpsEngineerWriteTransport`` (``transport/https_engineer_writes.py``: a draft, then a signed
commit): the engineer's row and certificate verified here, their current key record certified here
under the organisation key of the root bundle sealed to this admin if it has none, the invite secret
made here and the code shown only here; the server is given the secret sealed to the recovery key
and the public key it derives (docs/server.md, session 14, helper B); an admin's re-key (or a
signer's) adopts the records they signed, re-signed here (session 16, helper F).

``RemoteVault.engineers.remove`` runs the in-process ``EngineerRemoval`` over the same transport: the
revocation of each live grant and the disabled certificate signed here (``keyholder/removal.py``), and
a client-key rotation started for every client (every client is exposed, as in-process when the log
does not verify; the whole chain is verified here first, for the admins it made), each new key made
here by the in-process
``RotationKeyholder`` (the old key opened with the recovery key of the root bundle sealed to this
admin, the grantees verified, the client's fields moved to the new key). ``RemoteVault`` then runs
the rotations to their end through the server (``remote_rotation.RemoteKeyRotation.resume``) and
the at-risk list.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from vault.authority.rotation_requests import NewClientKey, StartDraft
from vault.crypto import keyrecord
from vault.keyholder.engineers import EngineerKeyholder
from vault.keyholder.removal import EngineerRemoval
from vault.keyholder.removal_roster import chain_admins
from vault.keyholder.rotation import RotationKeyholder
from vault.records import RootRotation
from vault.service import validation
from vault.service.remote_admin2 import _InviteKeys
from vault.service.remote_admin_removal import AdminRemovalHands
from vault.service.remote_nouns import not_served
from vault.service.remote_root import SessionChain
from vault.service.remotekeys import RemoteKeys
from vault.transport.https import HttpsTransport
from vault.transport.https_engineer_writes import HttpsEngineerWriteTransport


class RemoteEngineerWrites:
    """An admin's ``engineers.rotate`` (and ``remove``) through the server (module docstring)."""

    def __init__(
        self,
        keys: RemoteKeys,
        https: HttpsTransport,
        clock: Callable[[], dt.datetime],
        audit: Any = None,
        chain: SessionChain | None = None,
    ) -> None:
        """``audit``: ``RemoteAudit`` (its whole chain verified before a removal, its checked signers);
        ``chain``: the session's verified chain (``remote_root.SessionChain``; else verified whole)."""
        self.keys, self.https, self.clock, self.audit = keys, https, clock, audit
        self.chain = chain
        params = keyrecord.DEFAULT_PARAMS
        self.transport = HttpsEngineerWriteTransport(https, self._new_key)
        self.keyholder = EngineerKeyholder(self.transport, _InviteKeys(keys), clock, lambda: params)  # type: ignore[arg-type]
        self.root: RootRotation | None = None  # an admin's removal: the root rotation made here
        self.skipped: tuple[str, ...] = ()  # and what its adoption set aside

    def __repr__(self) -> str:
        return "RemoteEngineerWrites()"

    def rotate(self, name: str, *, valid_for: dt.timedelta) -> str:
        """As ``Vault.engineers.rotate``, through the server: the new enrolment code, made here."""
        validation.engineer_name(name)
        self.keys.me()
        return self.keyholder.rotate(name, valid_for)

    def remove(self, name: str) -> tuple[int, ...]:
        """As ``Vault.engineers.remove``, through the server: the client-key rotations started (module
        docstring); an admin's also adopts what they signed and rotates the root key
        (``remote_admin_removal.py``: ``root`` and ``skipped`` say what it did)."""
        validation.engineer_name(name)
        self.keys.me()
        self.keys.open_recovery()
        hands, admins = None, None
        if self.audit is not None:  # the whole chain verified here first, as in-process before a removal
            chain = (self.chain or SessionChain(self.audit)).verify()
            hands = AdminRemovalHands(self.keyholder, self.keys, chain, self.clock, name)
            if chain.verified.ok:
                admins = chain_admins(chain.events, self.audit.signers.checked().certified)
        self.transport.admin_hands = hands  # without: an admin's removal is sent with no root rotation (403)
        removed = EngineerRemoval(self.keyholder).remove(name, log_verified=False, chain_admins=admins)
        if removed.was_admin and hands is not None:
            hands.check_held()
            self.root, self.skipped = hands.result, hands.skipped
        return removed.rotation_ids

    def _new_key(self, client_id: int, draft: StartDraft) -> NewClientKey:
        rotations = RotationKeyholder(None, self.keys, _NoLookup(), self.keys.client_keys, self.clock)  # type: ignore[arg-type]
        return rotations.new_key(client_id, draft)  # verified row by row, then made (keyholder/rotation.py)


class _NoLookup:
    """A removal's starts name their clients by id: no slug is looked up."""

    def __getattr__(self, name: str) -> Any:
        raise not_served(f"rotate.{name}")
