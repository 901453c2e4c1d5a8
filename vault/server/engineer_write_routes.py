"""An admin's writes on another engineer through the team server: ``engineers.rotate_draft`` /
``engineers.rotate`` (a re-key after a lost laptop) and ``engineers.remove_draft`` / ``engineers.remove``.

docs/server.md (session 14, helper B); the authorities are ``authority/rekey_drafts.py`` and
``authority/removal_drafts.py``. Every route refuses an engineer who is not an admin and a body whose
caller is not the request's signer (403, ``grant_routes.admin_only``) before the authority reads any
row of the engineer acted on; a commit appends its format-3 events with a ``ServerEvent`` (the
server's seal, the signed request kept, the nonce remembered in the commit's unit). A draft writes
nothing.
"""

from __future__ import annotations

from vault.authority.checkout_events import ServerEvent
from vault.authority.engineer_requests import EngineerAnswer, RotateRequest
from vault.authority.rekey_draft_values import RekeyCommit, RekeyDraftAnswer
from vault.authority.rekey_drafts import RekeyDraftAuthority
from vault.authority.serverjournal import ServerSeal
from vault.errors import ConfigurationError, InvalidInput
from vault.server.checks import ServerChecks
from vault.server.grant_routes import admin_only
from vault.server.handlers import Call, Operations
from vault.server.problems import NO_SERVER_KEY
from vault.storage.engine import Store


class EngineerWriteRoutes:
    """``engineers.rotate_draft``/``rotate`` and ``engineers.remove_draft``/``remove`` (module docstring)."""

    def __init__(self, rekeys: RekeyDraftAuthority, seal: ServerSeal | None) -> None:
        self.rekeys, self.seal = rekeys, seal

    def __repr__(self) -> str:
        return f"EngineerWriteRoutes({self.seal!r})"

    def _event(self, call: Call) -> ServerEvent:
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return ServerEvent(self.seal, call.recorded, call.nonce)

    def rotate_draft(self, call: Call) -> RekeyDraftAnswer:
        request = call.body
        if not isinstance(request, RotateRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.rekeys.rotate_draft(request)

    def rotate(self, call: Call) -> EngineerAnswer:
        request = call.body
        if not isinstance(request, RekeyCommit):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.rekeys.rotate(request, self._event(call))

    def add_to(self, operations: Operations) -> None:
        operations.add("engineers.rotate_draft", self.rotate_draft)
        operations.add("engineers.rotate", self.rotate, writes=True)


def engineer_write_routes(store: Store, checks: ServerChecks, seal: ServerSeal | None) -> EngineerWriteRoutes:
    """The engineer writes' routes over ``store``, checked by ``checks``, their events signed by ``seal``."""
    return EngineerWriteRoutes(RekeyDraftAuthority(store, checks, checks.clock), seal)
