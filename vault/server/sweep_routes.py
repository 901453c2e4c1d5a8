"""An admin's sweep of expired grants on the team server: ``grants.sweep_draft`` and ``grants.sweep``.

The authority is ``authority/grant_sweep_drafts.py`` (the in-process sweep, run as a draft and as a
commit). Both routes refuse an engineer who is not an admin, and a body whose caller is not the
request's signer (403, ``grant_routes.admin_only``), before any grant row is read. The draft writes
nothing (its nonce is remembered by the authenticator); the commit appends the format-3
``grants-expired`` event in the sweep's unit when it revokes or deletes anything.
"""

from __future__ import annotations

from vault.authority.checkout_events import ServerEvent
from vault.authority.grant_requests import SweepRequest, SweepRows
from vault.authority.grant_sweep_drafts import GrantSweepDrafts
from vault.authority.grant_sweep_values import SweepCommit, SweepDrafted
from vault.authority.serverjournal import ServerSeal
from vault.errors import ConfigurationError, InvalidInput
from vault.server.checks import ServerChecks
from vault.server.grant_routes import admin_only
from vault.server.handlers import Call, Operations
from vault.server.problems import NO_SERVER_KEY
from vault.storage.engine import Store


class SweepRoutes:
    """``grants.sweep_draft`` and ``grants.sweep`` (module docstring)."""

    def __init__(self, drafts: GrantSweepDrafts, seal: ServerSeal | None) -> None:
        self.drafts, self.seal = drafts, seal

    def __repr__(self) -> str:
        return f"SweepRoutes({self.seal!r})"

    def sweep_draft(self, call: Call) -> SweepDrafted:
        request = call.body
        if not isinstance(request, SweepRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.drafts.draft(request)

    def sweep(self, call: Call) -> SweepRows:
        commit = call.body
        if not isinstance(commit, SweepCommit):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, commit.caller)
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return self.drafts.commit(commit, ServerEvent(self.seal, call.recorded, call.nonce))

    def add_to(self, operations: Operations) -> None:
        operations.add("grants.sweep_draft", self.sweep_draft)
        operations.add("grants.sweep", self.sweep)  # its nonce remembered by the authenticator, as a draft's


def sweep_routes(store: Store, checks: ServerChecks, seal: ServerSeal | None) -> SweepRoutes:
    """The sweep's routes over ``store``, their events signed by ``seal``."""
    return SweepRoutes(GrantSweepDrafts(store, checks, checks.clock), seal)
