"""An admin's re-key (a lost laptop) and removal of an engineer through a team server, with no database
on this machine.

``RemoteVault.engineers.rotate`` runs the in-process ``EngineerKeyholder`` unchanged over
``HttpsEngineerWriteTransport`` (``transport/https_engineer_writes.py``: a draft, then a signed
commit): the engineer's row and certificate verified here, their current key record certified here
under the organisation key of the root bundle sealed to this admin if it has none, the invite secret
made here and the code shown only here; the server is given the secret sealed to the recovery key
and the public key it derives (docs/server.md, session 14, helper B). Through the server only an
engineer (not an admin) who signed no record is served: an admin's re-key adopts the records they
signed, which opens client keys; the server refuses it with the host's command in the hint.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from vault.crypto import keyrecord
from vault.keyholder.engineers import EngineerKeyholder
from vault.service import validation
from vault.service.remote_admin2 import _InviteKeys
from vault.service.remotekeys import RemoteKeys
from vault.transport.https import HttpsTransport
from vault.transport.https_engineer_writes import HttpsEngineerWriteTransport


class RemoteEngineerWrites:
    """An admin's ``engineers.rotate`` (and ``remove``) through the server (module docstring)."""

    def __init__(self, keys: RemoteKeys, https: HttpsTransport, clock: Callable[[], dt.datetime]) -> None:
        self.keys, self.https, self.clock = keys, https, clock
        params = keyrecord.DEFAULT_PARAMS
        transport = HttpsEngineerWriteTransport(https)
        self.keyholder = EngineerKeyholder(transport, _InviteKeys(keys), clock, lambda: params)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return "RemoteEngineerWrites()"

    def rotate(self, name: str, *, valid_for: dt.timedelta) -> str:
        """As ``Vault.engineers.rotate``, through the server: the new enrolment code, made here."""
        validation.engineer_name(name)
        self.keys.me()
        return self.keyholder.rotate(name, valid_for)
