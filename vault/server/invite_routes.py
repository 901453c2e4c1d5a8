"""An admin's invitation on the team server: ``engineers.invite_draft`` and ``engineers.invite``.

docs/server.md (session 13, helper B); the authority is ``authority/invite_drafts.py`` (its values
``authority/invite_draft_values.py``). Both refuse an engineer who is not an admin and a body whose
caller is not the request's signer (403, ``grant_routes.admin_only``) before the authority reads
any row of the engineer invited; the commit appends its format-3 ``engineer-invite`` event with a
``ServerEvent`` (the server's seal, the signed request kept, the nonce remembered in the commit's
unit). The draft appends nothing (a new engineer's id reservation is written in its own unit).
"""

from __future__ import annotations

from vault.authority.checkout_events import ServerEvent
from vault.authority.engineer_requests import EngineerAnswer, InviteRequest
from vault.authority.invite_draft_values import InviteCommit, InviteDraft
from vault.authority.invite_drafts import InviteDraftAuthority
from vault.authority.serverjournal import ServerSeal
from vault.errors import ConfigurationError, InvalidInput
from vault.server.checks import ServerChecks
from vault.server.grant_routes import admin_only
from vault.server.handlers import Call, Operations
from vault.server.problems import NO_SERVER_KEY
from vault.storage.engine import Store


class InviteRoutes:
    """``engineers.invite_draft`` and ``engineers.invite`` (module docstring)."""

    def __init__(self, authority: InviteDraftAuthority, seal: ServerSeal | None) -> None:
        self.authority, self.seal = authority, seal

    def __repr__(self) -> str:
        return f"InviteRoutes({self.seal!r})"

    def invite_draft(self, call: Call) -> InviteDraft:
        request = call.body
        if not isinstance(request, InviteRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.authority.invite_draft(request)

    def invite(self, call: Call) -> EngineerAnswer:
        request = call.body
        if not isinstance(request, InviteCommit):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return self.authority.invite(request, ServerEvent(self.seal, call.recorded, call.nonce))

    def add_to(self, operations: Operations) -> None:
        operations.add("engineers.invite_draft", self.invite_draft)
        operations.add("engineers.invite", self.invite, writes=True)


def invite_routes(store: Store, checks: ServerChecks, seal: ServerSeal | None) -> InviteRoutes:
    """The invitations' routes over ``store``, checked by ``checks``, their events signed by ``seal``."""
    return InviteRoutes(InviteDraftAuthority(store, checks, checks.clock), seal)
