"""Key rotation without downtime: client keys, the root key, secret values.

A client-key rotation has three steps, each its own transaction, so a crash or Ctrl-C
at any point leaves a vault that reads correctly and a rotation that ``resume`` ends:

1. **start**: a new client-key version is made, signed and sealed to the recovery key
   and to every current grantee; the client's own fields and audit-key ring move to it
   and it becomes current at once (new writes use it). The old version is *retiring*.
2. **re-wrap**: data keys still wrapped by a retiring version are re-wrapped in batches.
   Reads keep working throughout: each row names the version that wraps it. What the
   batches share (the rotation, the client's key versions) is verified once per run and
   named by its digest in each batch, which is refused if those rows changed since.
3. **finish**: once nothing refers to a retiring version, its sealed copies are deleted
   and it is marked *destroyed* (its fingerprint stays, for purge receipts).

Each step runs as a request of the rotation's keyholder (``vault/keyholder/rotation.py``:
every key made, signed, sealed and re-wrapped there, after it verified what it is handed)
to its authority (``vault/authority/rotation.py``: the state machine over ids and
ciphertext), through the in-process transport; ``rotationparts.py`` builds the three.
The root key (and with it the organisation key) rotates in rootrotation.py. The two
settings (``set_retention``, ``set_cryptoperiod``) are signed by the settings' keyholder
(``vault/keyholder/settings.py``) and stored by their authority (``vault/authority/
settings.py``) through ``vault/transport/settings.py``.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.authority.rotation_requests import (
    DESTROYED,
    DONE,
    RETIRING,
    RUNNING,
    STALE_BASIS,
    SUPERSEDED,
    RotationRow,
)
from vault.authority.settings import SettingsAuthority
from vault.authority.settings_requests import CRYPTOPERIOD, RETENTION
from vault.errors import IntegrityError
from vault.keyholder.rotation import RotationKeyholder
from vault.keyholder.settings import SettingsKeyholder
from vault.service import rotationparts
from vault.service.core import check_share_policy
from vault.service.passwords import generate_password
from vault.service.policyparts import CallerTrust, Recorder, SigningKeys
from vault.service.records import RootRotation, RotationInfo, SecretInfo
from vault.service.retrying import again_on_conflict
from vault.storage import models as m
from vault.transport.settings import InProcessSettingsTransport

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.grantledger import GrantLedger
    from vault.service.policies import PolicyCheck
    from vault.service.rootrotation import RootRotator
    from vault.service.secrets import Secrets

__all__ = ["DEFAULT_BATCH", "DESTROYED", "DONE", "RETIRING", "RUNNING", "SUPERSEDED", "KeyRotation", "Progress"]

Progress = Callable[[int, int], None]
DEFAULT_BATCH = 2000


class KeyRotation:
    """Keys: ``vault.keys.rotate_client/resume/list/rotate_secret/rotate_root/versions``,
    ``set_retention`` and ``set_cryptoperiod``."""

    def __init__(
        self,
        core: Core,
        keys: Keys,
        trust: Trust,
        journal: Journal,
        ledger: GrantLedger,
        policy_check: PolicyCheck,
        clients: Clients,
        secrets: Secrets,
        root_rotator: RootRotator,
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.ledger = ledger
        self.policy_check = policy_check
        self.clients = clients
        self.secrets = secrets
        self.root_rotator = root_rotator
        self._keyholder: RotationKeyholder | None = None
        self._settings: SettingsKeyholder | None = None

    def rotate_client(
        self, client: str, *, batch_size: int = DEFAULT_BATCH, progress: Progress | None = None
    ) -> RotationInfo:
        """Rotate a client's key: a new version now, data keys re-wrapped in batches."""
        started = self._rotation_keyholder().rotate(client)
        return self.run_rotation(started.rotation.id, batch_size, progress)

    def resume(
        self, *, batch_size: int = DEFAULT_BATCH, progress: Progress | None = None
    ) -> builtins.list[RotationInfo]:
        """Finish every rotation a crash or an interrupt left under way."""
        running = self._rotation_keyholder().list(running_only=True)
        return [self.run_rotation(row.id, batch_size, progress) for row in running]

    def list(self, *, running_only: bool = False) -> builtins.list[RotationInfo]:
        keyholder = self._rotation_keyholder()
        found = keyholder.list(running_only=running_only)
        slugs = keyholder.slugs(found)
        return [self._rotation_info(row, slugs) for row in found]

    def start_client_rotation(self, s: Session, client: m.Client) -> int:
        """Start a rotation of ``client`` inside the caller's unit of work ``s``; a rotation
        already running is superseded by it (its data keys are re-wrapped again, to the new
        version)."""
        return self._rotation_keyholder().start(client.id, supersede=True, unit=s).rotation.id

    def run_rotation(self, rotation_id: int, batch_size: int, progress: Progress | None) -> RotationInfo:
        # Batches walk the versions in key order from a cursor (linear, not quadratic, in N).
        # The finishing transaction counts what still refers to an old version; if the walk
        # missed anything (a version written behind the cursor under an old key: normally
        # nothing), a second walk from the start re-wraps it before the rotation finishes.
        # Each transaction that loses to a concurrent one is run again on its own: running
        # rotate_client again would find this rotation under way (retrying.py).
        # What no batch changes (the rotation, its client's key versions, the admin's own row) is
        # read and verified once per run, here; each batch names its digest (keyholder/rotation.py)
        # and is refused, nothing written, if those rows changed since. A root rotation changes
        # them (it re-seals every version), as may a DBA: the run then verifies them afresh, as a
        # resume would, and sends the batch once more (refused again, the error goes through).
        def open_rotation() -> object:
            return self._rotation_keyholder().open(rotation_id)

        def batch() -> int:
            try:
                return self._rewrap_batch(rotation_id, batch_size, progress)
            except IntegrityError as error:
                if str(error) != STALE_BASIS:
                    raise
            again_on_conflict(self.core, "the opening of a rotation", open_rotation)
            return self._rewrap_batch(rotation_id, batch_size, progress)

        again_on_conflict(self.core, "the opening of a rotation", open_rotation)
        for walk in (1, 2):
            self._rotation_keyholder().cursors.pop(rotation_id, None)
            while again_on_conflict(self.core, "a re-wrap batch", batch):
                pass  # the cursor only moves after a batch commits
            end = functools.partial(self._end_rotation, rotation_id, walk)
            info = again_on_conflict(self.core, "the end of a rotation", end)
            if info is not None:
                return info
        raise AssertionError("unreachable")  # pragma: no cover

    def _end_rotation(self, rotation_id: int, walk: int) -> RotationInfo | None:
        """Finish the rotation if nothing refers to an old version any more (or this is the
        second walk); None to walk again."""
        keyholder = self._rotation_keyholder()
        finished = keyholder.finish(rotation_id, final=walk == 2)
        if not finished.ended:
            return None
        return self._rotation_info(finished.rotation, keyholder.slugs([finished.rotation]))

    def _rewrap_batch(self, rotation_id: int, batch_size: int, progress: Progress | None) -> int:
        """Re-wrap up to ``batch_size`` data keys in one transaction; returns how many."""
        done = self._rotation_keyholder().batch(rotation_id, batch_size)
        if done.count and progress is not None:
            progress(done.done, max(done.total, done.done))
        return done.count

    @staticmethod
    def _rotation_info(row: RotationRow, slugs: dict[int, str]) -> RotationInfo:
        return RotationInfo(
            slugs.get(row.client_id, f"#{row.client_id}"),
            row.from_version,
            row.to_version,
            row.state,
            row.done,
            row.total,
            row.started_at,
            row.finished_at,
        )

    def _rotation_keyholder(self) -> RotationKeyholder:
        """This Vault object's rotation keyholder, over the in-process transport to its authority."""
        if self._keyholder is None:
            self._keyholder = rotationparts.rotation_keyholder(self)
        return self._keyholder

    # -- secret values ----------------------------------------------------------------------------

    def rotate_secret(self, ref: str, *, password: str | None = None, length: int | None = None) -> SecretInfo:
        """Store a new value (generated unless given) as a new version; older ones beyond
        the retention setting are destroyed with their data keys."""
        if password is None:
            password = generate_password(length) if length else generate_password()
        return self.secrets.update(ref, password=password)

    def set_retention(self, versions: int) -> None:
        """Versions kept per secret (admin): signed by the keyholder with the cryptoperiod as it
        applies now, stored by the settings' authority (``keyholder/settings.py``)."""
        self._settings_keyholder().set(RETENTION, versions)

    def versions(self, client: str) -> builtins.list[tuple[int, str]]:
        """The client's key versions and their states, oldest first."""
        return [(row.version, row.state) for row in self._rotation_keyholder().versions(client)]

    def rotate_root(self, *, shares: tuple[int, int] | None = None) -> RootRotation:
        """A new root bundle: a new recovery key (every live client-key version re-sealed to
        it, slugs re-tagged) and a new organisation signing key (signed by the old one;
        every verified certificate re-issued under it), sealed to every admin on the signed
        roster; the old root destroyed. New recovery shares are returned when the vault uses
        them (``shares`` = (k, n) sets or changes that)."""
        if shares is not None:
            check_share_policy(*shares)
        return self.root_rotator.rotate_root(shares=shares)

    def set_cryptoperiod(self, days: int) -> None:
        """Days before keys are reported old (admin): signed by the keyholder with the retention
        as it applies now, stored by the settings' authority (``keyholder/settings.py``)."""
        self._settings_keyholder().set(CRYPTOPERIOD, days)

    def _settings_keyholder(self) -> SettingsKeyholder:
        """This Vault object's settings' keyholder, over the in-process transport to its authority."""
        if self._settings is None:
            authority = SettingsAuthority(
                self.core.store, CallerTrust(self.trust), Recorder(self.journal), self.core.clock
            )
            self._settings = SettingsKeyholder(
                InProcessSettingsTransport(authority), SigningKeys(self.keys), self.core.clock
            )
        return self._settings
