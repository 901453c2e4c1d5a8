"""The vault settings on the team server: ``settings.get`` (any engineer's read, no event, as
in-process) and an admin's ``settings.set`` (``authority/settings_drafts.py``: checked in full
before anything is written, its format-3 ``settings`` event appended in the same unit).

Each handler checks that the body's caller is the request's signer, and the change that the caller
is an admin (``grant_routes.admin_only``, 403), before the authority reads anything.
"""

from __future__ import annotations

from vault.authority.checkout_events import ServerEvent
from vault.authority.serverjournal import ServerSeal
from vault.authority.settings_drafts import ServedSettingsAuthority
from vault.authority.settings_requests import SettingsRequest, SettingsRows
from vault.errors import ConfigurationError, InvalidInput
from vault.server.checks import ServerChecks
from vault.server.grant_routes import admin_only
from vault.server.handlers import Call, Operations, signer_only
from vault.server.problems import NO_SERVER_KEY
from vault.storage.engine import Store


class SettingsRoutes:
    """``settings.get`` and ``settings.set`` (module docstring)."""

    def __init__(self, authority: ServedSettingsAuthority, seal: ServerSeal | None) -> None:
        self.authority, self.seal = authority, seal

    def __repr__(self) -> str:
        return f"SettingsRoutes({self.seal!r})"

    def get(self, call: Call) -> SettingsRows:
        request = call.body
        if not isinstance(request, SettingsRequest):
            raise InvalidInput("the body is not this route's request")
        signer_only(call, request.caller)
        return self.authority.read(request)

    def set(self, call: Call) -> SettingsRows:
        request = call.body
        if not isinstance(request, SettingsRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return self.authority.write(request, ServerEvent(self.seal, call.recorded, call.nonce))

    def add_to(self, operations: Operations) -> None:
        operations.add("settings.get", self.get)
        operations.add("settings.set", self.set, writes=True)


def settings_routes(store: Store, checks: ServerChecks, seal: ServerSeal | None) -> SettingsRoutes:
    """The settings' read and change over ``store``, the change's event signed by ``seal``."""
    return SettingsRoutes(ServedSettingsAuthority(store, checks, checks.clock), seal)
