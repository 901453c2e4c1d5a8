"""Grants: giving an engineer a client, revoking it, and the sweep of expired grants."""

from __future__ import annotations

import builtins
import datetime as dt
from typing import TYPE_CHECKING

from vault.errors import InvalidInput
from vault.service import clientparts, validation
from vault.service.core import epoch
from vault.service.records import GrantInfo

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.grant_list import GrantListKeyholder
    from vault.keyholder.grants import GrantKeyholder
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.grantledger import GrantLedger


class Grants:
    """Grants: ``vault.grants.grant/revoke/list/maintain``."""

    def __init__(
        self, core: Core, keys: Keys, trust: Trust, journal: Journal, ledger: GrantLedger, clients: Clients
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.ledger = ledger
        self.clients = clients
        self._keyholder: GrantKeyholder | None = None
        self._list_keyholder: GrantListKeyholder | None = None

    def _grant_keyholder(self) -> GrantKeyholder:
        """This Vault object's grants keyholder, over the in-process transport to its authority."""
        if self._keyholder is None:
            self._keyholder = clientparts.grant_keyholder(self)
        return self._keyholder

    # -- grants --------------------------------------------------------------------------------

    def grant(
        self, engineer: str, client: str, *, until: dt.datetime | None = None, reason: str | None = None
    ) -> GrantInfo:
        """Seal the client's keys to the engineer's certified public key, and sign the grant."""
        now = self.core.clock()
        validation.field_value("reason", reason)
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=dt.UTC)  # a time without a zone is UTC
        if until is not None and until <= now:
            raise InvalidInput("the grant's --until time is in the past")
        validation.engineer_name(engineer)
        validation.client_slug(client)
        self.ledger.sweep()  # its own transaction: committed even if this operation fails
        return self._grant_keyholder().grant(engineer, client, until=epoch(until) if until else None, reason=reason)

    def revoke(self, engineer: str, client: str) -> int:
        """Revoke the engineer's grants for the client (each revocation signed) and delete
        their sealed key copies."""
        validation.engineer_name(engineer)
        validation.client_slug(client)
        self.ledger.sweep()  # its own transaction: committed even if this operation fails
        return self._grant_keyholder().revoke(engineer, client)

    def list(self, *, engineer: str | None = None, client: str | None = None) -> builtins.list[GrantInfo]:
        """Grant rows with their state: ``active`` only for the newest signed entry of its
        (engineer, client) that is unrevoked and unexpired (and, for an admin, that the
        audit log confirms); else ``revoked``, ``expired``, ``superseded``, ``unconfirmed`` or
        ``unverified``. Read by the authority, every state decided by the keyholder
        (keyholder/grant_list.py)."""
        if self._list_keyholder is None:
            self._list_keyholder = clientparts.grant_list_keyholder(self)
        return self._list_keyholder.list(engineer=engineer, client=client)

    def maintain(self) -> int:
        """Admin housekeeping: delete key copies of expired grants. Returns copies deleted."""
        return self.ledger.sweep()
