"""Grants: giving an engineer a client, revoking it, and the sweep of expired grants."""

from __future__ import annotations

import builtins
import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.errors import AccessDenied, InvalidInput, NotFound
from vault.service import clientparts, validation
from vault.service.core import ROLE_ADMIN, epoch, is_revoked
from vault.service.grantledger import GrantHistory
from vault.service.records import GrantInfo
from vault.service.rows import GRANT_ORDER
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
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
        audit log confirms); else ``revoked``, ``expired``, ``superseded`` or ``unverified``."""
        with self.core.store.transaction() as s:
            me = self.trust.my_row(s)
            query = select(m.Grant).order_by(*GRANT_ORDER)
            if engineer is not None:
                query = query.where(m.Grant.engineer_id == self._engineer_row(s, engineer).id)
            if me.role != ROLE_ADMIN:
                query = query.where(m.Grant.engineer_id == me.id)
            if client is not None:
                query = query.where(m.Grant.client_id == self.clients.client(s, client).id)
            ledgers: dict[tuple[int, int], list[m.Grant]] = {}
            for grant in s.scalars(query):
                ledgers.setdefault((grant.engineer_id, grant.client_id), []).append(grant)
            history = self.ledger.grant_history(s, {c for _, c in ledgers}) if me.role == ROLE_ADMIN else None
            out = []
            for (engineer_id, client_id), grants in ledgers.items():
                states = self._ledger_states(s, engineer_id, client_id, grants, history)
                for grant in grants:
                    try:
                        out.append((grant.id, self._grant_info(s, grant, states[grant.id])))
                    except (NotFound, AccessDenied):
                        continue  # the viewer can no longer open that client's slug
            return [info for _, info in sorted(out, key=lambda pair: pair[0])]

    def _ledger_states(
        self, s: Session, engineer_id: int, client_id: int, grants: builtins.list[m.Grant], history: GrantHistory | None
    ) -> dict[int, str]:
        target = s.get(m.Engineer, engineer_id)
        assert target is not None
        head, bad = self.ledger.ledger_head(s, grants, target)
        states = {g.id: "unverified" for g, _ in bad}
        for grant in grants:
            if grant.id in states:
                continue
            if is_revoked(grant):
                states[grant.id] = "revoked"
            elif grant is not head:
                states[grant.id] = "superseded"
            elif not self.ledger.is_live(grant):
                states[grant.id] = "expired"
            elif history is not None and history.confirms(target.name, client_id, grant) is not None:
                states[grant.id] = "unconfirmed"  # the audit log does not back it: it counts for nothing
            else:
                states[grant.id] = "active"
        return states

    def maintain(self) -> int:
        """Admin housekeeping: delete key copies of expired grants. Returns copies deleted."""
        return self.ledger.sweep()

    def _engineer_row(self, s: Session, name: str) -> m.Engineer:
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == validation.engineer_name(name))).first()
        if row is None:
            raise NotFound(f"no engineer named {name!r}", hint="`credvault engineer list` shows them")
        return row

    def _grant_info(self, s: Session, grant: m.Grant, state: str) -> GrantInfo:
        engineer = s.get(m.Engineer, grant.engineer_id)
        admin = s.get(m.Engineer, grant.granted_by)
        client = s.get(m.Client, grant.client_id)
        if engineer is None or client is None:
            raise NotFound("the grant names an engineer or client that is gone")
        until = dt.datetime.fromtimestamp(grant.until, dt.UTC) if grant.until else None
        signer = admin.name if admin is not None else f"#{grant.granted_by}"
        return GrantInfo(engineer.name, self.clients.slug(s, client), signer, grant.created_at, until, state)
