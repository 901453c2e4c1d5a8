"""The grants' listing over HTTPS: ``GrantListKeyholder``'s transport on the team server.

``HttpsGrantListTransport.list`` is what the keyholder calls in-process on
``InProcessGrantListTransport`` (``grants.py``): the same ``GrantListRequest`` crosses as the
signed ``grants.list`` request (``HttpsTransport.call``) and the same ``GrantListRows`` comes
back, decoded strictly. The server answers from ``GrantListAuthority`` under its own checks
(an engineer gets their own grant rows only, whatever the request names); the keyholder
verifies every row it is given as it does in-process (which row of a ledger counts, its
signer, the slugs it opens). A grant or revoke (a seal inside the authority's unit) is not
carried: drafts and signed commits come with step 6's writes.
"""

from __future__ import annotations

from vault.authority.grant_requests import GrantListRequest, GrantListRows
from vault.transport.https_calls import Calls, answer_of


class HttpsGrantListTransport:
    """``grants.list`` through a team server."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsGrantListTransport()"

    def list(self, request: GrantListRequest) -> GrantListRows:
        return answer_of(self.https, "grants.list", request, GrantListRows)
