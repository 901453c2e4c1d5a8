"""An admin's policy change on the team server: ``policies.set_draft`` and ``policies.set``.

docs/server.md §4 rule 2; the authority is ``authority/policy_drafts.py`` (its values
``authority/policy_draft_values.py``). Each handler refuses an engineer who is not an admin and a
body whose caller is not the request's signer (403, ``grant_routes.admin_only``) before the
authority reads any row of the client; the commit appends its format-3 ``policy-set`` event with
a ``ServerEvent`` (the server's seal, the signed request kept, the nonce remembered in the
commit's unit). The draft is a read: nothing written, no event.
"""

from __future__ import annotations

from vault.authority.checkout_events import ServerEvent
from vault.authority.policy_draft_values import PolicyCommit, PolicyDraft, PolicySetDraftRequest
from vault.authority.policy_drafts import PolicyDraftAuthority
from vault.authority.policy_requests import PolicyRows
from vault.authority.serverjournal import ServerSeal
from vault.errors import ConfigurationError, InvalidInput
from vault.server.checks import ServerChecks
from vault.server.grant_routes import admin_only
from vault.server.handlers import Call, Operations
from vault.server.problems import NO_SERVER_KEY
from vault.storage.engine import Store


class PolicyRoutes:
    """``policies.set_draft`` and ``policies.set`` (module docstring)."""

    def __init__(self, authority: PolicyDraftAuthority, seal: ServerSeal | None) -> None:
        self.authority, self.seal = authority, seal

    def __repr__(self) -> str:
        return f"PolicyRoutes({self.seal!r})"

    def set_draft(self, call: Call) -> PolicyDraft:
        request = call.body
        if not isinstance(request, PolicySetDraftRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.authority.set_draft(request)

    def set(self, call: Call) -> PolicyRows:
        request = call.body
        if not isinstance(request, PolicyCommit):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return self.authority.set(request, ServerEvent(self.seal, call.recorded, call.nonce))

    def add_to(self, operations: Operations) -> None:
        operations.add("policies.set_draft", self.set_draft)
        operations.add("policies.set", self.set, writes=True)


def policy_routes(store: Store, checks: ServerChecks, seal: ServerSeal | None) -> PolicyRoutes:
    """The policies' write routes over ``store``, checked by ``checks``, their events signed by ``seal``."""
    return PolicyRoutes(PolicyDraftAuthority(store, checks, checks.clock), seal)
