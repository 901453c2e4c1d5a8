"""The vault settings over HTTPS: ``SettingsKeyholder``'s transport on the team server.

``HttpsSettingsTransport`` has the methods of ``InProcessSettingsTransport`` (``settings.py``):
``read`` is the signed ``settings.get`` (the row as stored and its signer's row, verified by the
keyholder as in-process), ``write`` the signed ``settings.set`` carrying the row the keyholder
signed over the one it read; the server checks the caller, that row, the signature under the
caller's certified key and the bounds before it stores it with its format-3 ``settings`` event
(``authority/settings_drafts.py``), and the keyholder checks that the answer is what it signed.
"""

from __future__ import annotations

from vault.authority.settings_requests import SettingsRequest, SettingsRows
from vault.transport.https_calls import Calls, answer_of


class HttpsSettingsTransport:
    """The settings' read and an admin's change through a team server."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsSettingsTransport()"

    def read(self, request: SettingsRequest) -> SettingsRows:
        return answer_of(self.https, "settings.get", request, SettingsRows)

    def write(self, request: SettingsRequest) -> SettingsRows:
        return answer_of(self.https, "settings.set", request, SettingsRows)
