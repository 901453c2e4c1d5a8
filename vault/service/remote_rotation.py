"""An admin's client-key rotation through a team server, with no database on this machine.

``RemoteVault.keys.rotate_client/resume/list/versions`` run the in-process ``RotationKeyholder``
unchanged over ``HttpsRotationTransport`` (``transport/https_rotation.py``: each step that needs
the keyholder's hands is a draft and a commit). What the keyholder needs off the database comes
from the server and is verified here, as for a grant (``remote_admin.py``):

* the admin's root bundle (``RemoteKeys.open_recovery``: the copy sealed to them, opened with
  their key and believed only under the pinned organisation key), whose recovery key opens the
  client keys' recovery copies and is the key the new version is sealed to;
* the client, by its slug's tag (``AdminLookup``: every row of its context verified, its slug
  opened and compared with the one asked for);
* everything the start's draft, the basis and each page hold (the keyholder's checks).

The run is ``KeyRotation.run_rotation``'s walk (``service/rotation.py``): open, batches until none
is left, the finish; a second walk when the finish finds a row written behind the cursor. A
stale draft (409: the client or the page changed between the draft and the commit) is drafted
again; a changed basis (``STALE_BASIS``) is verified afresh once, as in-process.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from vault.authority.rotation_requests import STALE_BASIS, RotationRow
from vault.errors import ConcurrentChange, IntegrityError
from vault.keyholder.rotation import RotationKeyholder
from vault.records import RootRotation, RotationInfo
from vault.service import validation
from vault.service.passwords import generate_password
from vault.service.remote_admin import AdminLookup, LearnedContext
from vault.service.remote_admin2 import RemoteSettings
from vault.service.remote_nouns import _Noun, not_served
from vault.service.remote_root import RemoteRootRotation, SessionChain
from vault.service.remotekeys import RemoteKeys
from vault.transport.https import HttpsTransport
from vault.transport.https_rotation import HttpsRotationTransport

DEFAULT_BATCH = 500  # the server's page (``rotation_draft_values.SERVED_BATCH``)
STALE_RETRIES = 3  # drafts again after a stale one, at most
Progress = Callable[[int, int], None]


class _Lookup:
    """``RotationLookup`` through the server: a client's id by its slug (``AdminLookup``), the root
    bundle opened, and slugs by id from what this session learned (a client listing fills it)."""

    def __init__(self, keys: RemoteKeys, admin: AdminLookup, list_clients: Callable[[], object]) -> None:
        self.keys, self.admin, self.list_clients = keys, admin, list_clients
        self.names: dict[int, str] = {}

    def __repr__(self) -> str:
        return "RemoteRotationLookup()"

    def client_id(self, slug: str, unit: Any = None) -> int:
        client_id = self.admin.context(slug).client_id
        self.names[client_id] = slug
        return client_id

    def open_recovery(self, unit: Any = None) -> None:
        self.keys.open_recovery()

    def slugs(self, client_ids: Iterable[int]) -> dict[int, str]:
        wanted = set(client_ids)
        if wanted - self.names.keys():
            self.list_clients()  # every client's slug opened and verified; their ids kept as hints
            self.names.update({client_id: slug for slug, client_id in self.keys.slugs.items()})
        return {client_id: self.names.get(client_id, f"#{client_id}") for client_id in wanted}


class RemoteKeyRotation(_Noun):
    """``keys.rotate_client``, ``resume``, ``list`` and ``versions`` through the server (module docstring);
    ``rotate_root`` by ``RemoteRootRotation`` (``remote_root.py``); the settings (``set_retention``,
    ``set_cryptoperiod``) by ``RemoteSettings``; ``rotate_secret`` as a new password through the
    secrets' update (``secrets``, set by ``RemoteVault``); the rest not served."""

    def __init__(
        self,
        keys: RemoteKeys,
        https: HttpsTransport,
        clock: Callable[[], dt.datetime],
        learned: Callable[[str], LearnedContext],
        list_clients: Callable[[], object],
        settings: RemoteSettings,
        chain: SessionChain,
    ) -> None:
        self.keys, self.settings = keys, settings
        self.secrets: Any = None  # RemoteVault.secrets: a secret's rotation is an update with a new password
        self.root = RemoteRootRotation(keys, https, clock, chain)  # its roster: what the chain vouches for
        self.lookup = _Lookup(keys, AdminLookup(keys, learned), list_clients)
        self.keyholder = RotationKeyholder(HttpsRotationTransport(https), keys, self.lookup, keys.client_keys, clock)

    def __repr__(self) -> str:
        return "RemoteKeyRotation()"

    def rotate_secret(self, ref: str, *, password: str | None = None, length: int | None = None) -> Any:
        """As ``Vault.keys.rotate_secret``: a new value (generated unless given) as a new version, through
        the server's update of a secret (``secrets.update_draft``/``update``, on record as in-process)."""
        if self.secrets is None:
            raise not_served("keys.rotate_secret")
        if password is None:
            password = generate_password(length) if length else generate_password()
        return self.secrets.update(ref, password=password)

    def rotate_client(
        self, client: str, *, batch_size: int = DEFAULT_BATCH, progress: Progress | None = None
    ) -> RotationInfo:
        """As ``Vault.keys.rotate_client``, through the server."""
        validation.client_slug(client)
        self.keys.me()
        started = self._again(lambda: self.keyholder.rotate(client))
        return self.run(started.rotation.id, batch_size, progress)

    def resume(
        self, *, batch_size: int = DEFAULT_BATCH, progress: Progress | None = None
    ) -> builtins.list[RotationInfo]:
        self.keys.me()
        return [self.run(row.id, batch_size, progress) for row in self.keyholder.list(running_only=True)]

    def list(self, *, running_only: bool = False) -> builtins.list[RotationInfo]:
        self.keys.me()
        found = self.keyholder.list(running_only=running_only)
        slugs = self.keyholder.slugs(found)
        return [_info(row, slugs) for row in found]

    def versions(self, client: str) -> builtins.list[tuple[int, str]]:
        validation.client_slug(client)
        self.keys.me()
        return [(row.version, row.state) for row in self.keyholder.versions(client)]

    def rotate_root(self, *, shares: tuple[int, int] | None = None) -> RootRotation:
        """As ``Vault.keys.rotate_root``, through the server (``remote_root.RemoteRootRotation``)."""
        return self.root.rotate_root(shares=shares)

    def set_retention(self, versions: int) -> None:
        """As ``Vault.keys.set_retention``, through the server (``remote_admin2.RemoteSettings``)."""
        self.settings.set_retention(versions)

    def set_cryptoperiod(self, days: int) -> None:
        """As ``Vault.keys.set_cryptoperiod``, through the server (``remote_admin2.RemoteSettings``)."""
        self.settings.set_cryptoperiod(days)

    def run(self, rotation_id: int, batch_size: int, progress: Progress | None) -> RotationInfo:
        """Open, re-wrap page by page, finish (a second walk if the finish finds rows behind the cursor)."""
        keyholder = self.keyholder
        keyholder.open(rotation_id)
        for walk in (1, 2):
            keyholder.cursors.pop(rotation_id, None)
            while True:
                done = self._again(lambda: self._batch(rotation_id, batch_size))
                if done.count and progress is not None:
                    progress(done.done, max(done.total, done.done))
                if not done.count:
                    break
            finished = keyholder.finish(rotation_id, final=walk == 2)
            if finished.ended:
                return _info(finished.rotation, keyholder.slugs([finished.rotation]))
        raise AssertionError("unreachable")  # pragma: no cover

    def _batch(self, rotation_id: int, size: int) -> Any:
        try:
            return self.keyholder.batch(rotation_id, size)
        except IntegrityError as error:
            if str(error) != STALE_BASIS:
                raise
        self.keyholder.open(rotation_id)  # verified afresh, once; refused again, the error goes through
        return self.keyholder.batch(rotation_id, size)

    @staticmethod
    def _again(step: Callable[[], Any]) -> Any:
        """``step``, drafted again after a stale draft (409), ``STALE_RETRIES`` times at most."""
        for _ in range(STALE_RETRIES):
            try:
                return step()
            except ConcurrentChange:
                continue
        return step()


def _info(row: RotationRow, slugs: dict[int, str]) -> RotationInfo:
    return RotationInfo(
        slugs.get(row.client_id, f"#{row.client_id}"), row.from_version, row.to_version, row.state, row.done, row.total,
        row.started_at, row.finished_at,
    )  # fmt: skip
