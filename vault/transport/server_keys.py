"""The in-process transport of a server key's certification (``inprocess.py`` is the checkout's).

``InProcessServerKeyTransport(authority)`` hands the request value to the server keys'
authority (``authority/server_keys.py``) and returns its answer, the seq of the
``server-key-certify`` event: no copy, no serialisation, and no seal (the request crosses as a
row the admin's keyholder certified before sending it).
"""

from __future__ import annotations

from vault.authority.server_keys import ServerKeyAuthority, ServerKeyRequest


class InProcessServerKeyTransport:
    """Calls the server keys' authority directly."""

    def __init__(self, authority: ServerKeyAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessServerKeyTransport()"

    def certify(self, request: ServerKeyRequest) -> int:
        return self.authority.certify(request)
