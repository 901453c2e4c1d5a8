"""The in-process transport of the secrets' requests (``inprocess.py`` is the checkout's).

``InProcessSecretTransport(authority)`` hands each request value to the secrets' authority
and returns its answer: no copy, no serialisation. ``seal`` is the keyholder's
``SecretSeal`` (vault/authority/secrets.py), the in-process seam: it lends the authority
the keyholder's hands inside its unit of work (verify the draft before the event is
written; encrypt a new version for the ids assigned there). An update made inside a
check-in passes the check-in's unit of work (``unit``): only a transport inside one
process can carry either; the team-server issue replaces both. ``list_secrets`` hands on
the listing's pages as ``SecretListAuthority`` reads them (a stream of values: over HTTPS,
one response body read page by page).
"""

from __future__ import annotations

from collections.abc import Iterator

from vault.authority.secret_list import SecretListAuthority
from vault.authority.secret_requests import (
    AddRequest,
    ListSecretsRequest,
    ReadRequest,
    SecretPage,
    SecretRows,
    UpdateRequest,
)
from vault.authority.secrets import SecretAuthority, SecretSeal
from vault.errors import InvalidInput


class InProcessSecretTransport:
    """Calls the secrets' authority directly."""

    def __init__(self, authority: SecretAuthority, listing: SecretListAuthority | None = None) -> None:
        self.authority, self.listing = authority, listing

    def __repr__(self) -> str:
        return "InProcessSecretTransport()"

    def read(self, request: ReadRequest, seal: SecretSeal) -> SecretRows:
        return self.authority.read(request, seal)

    def add(self, request: AddRequest, seal: SecretSeal) -> SecretRows:
        return self.authority.add(request, seal)

    def update(self, request: UpdateRequest, seal: SecretSeal) -> SecretRows:
        return self.authority.update(request, seal)

    def list_secrets(self, request: ListSecretsRequest) -> Iterator[SecretPage]:
        """The listing's pages, as the authority reads them (its read unit open until the last)."""
        if self.listing is None:
            raise InvalidInput("this transport carries no secret listing")
        return self.listing.pages(request)
