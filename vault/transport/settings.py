"""The in-process transport of the vault settings' requests (``inprocess.py`` is the checkout's).

``InProcessSettingsTransport(authority)`` hands each request value to the settings'
authority and returns its answer: no copy, no serialisation, and no seal (a change crosses
as a value the keyholder signed before sending it).
"""

from __future__ import annotations

from vault.authority.settings import SettingsAuthority
from vault.authority.settings_requests import SettingsRequest, SettingsRows


class InProcessSettingsTransport:
    """Calls the settings' authority directly."""

    def __init__(self, authority: SettingsAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessSettingsTransport()"

    def read(self, request: SettingsRequest) -> SettingsRows:
        return self.authority.read(request)

    def write(self, request: SettingsRequest) -> SettingsRows:
        return self.authority.write(request)
