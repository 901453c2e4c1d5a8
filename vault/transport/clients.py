"""The in-process transport of the clients' requests (``secrets.py`` is the secrets').

``InProcessClientTransport(authority)`` hands each request value to the clients' authority
and returns its answer: no copy, no serialisation. ``seal`` is the keyholder's
``ClientSeal`` (vault/authority/clients.py), the in-process seam: it lends the authority
the keyholder's hands between its read and the event (verify and open the draft before the
event is written; for ``add``, make the new client's ciphertext and signatures for the id
assigned inside the unit of work). Only a transport inside one process can carry it; the
team-server issue replaces it with signed requests.
"""

from __future__ import annotations

from vault.authority.client_add import ClientAddAuthority, ClientAddSeal
from vault.authority.client_requests import AddAnswer, AddRequest, ClientRows, ListRequest, ShowRequest
from vault.authority.clients import ClientAuthority, ClientSeal


class InProcessClientTransport:
    """Calls the clients' authority directly."""

    def __init__(self, authority: ClientAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessClientTransport()"

    def show(self, request: ShowRequest, seal: ClientSeal) -> ClientRows:
        return self.authority.show(request, seal)

    def list(self, request: ListRequest, seal: ClientSeal) -> ClientRows:
        return self.authority.list(request, seal)


class InProcessClientAddTransport:
    """Calls the authority of ``clients.add`` directly; ``seal`` is the keyholder's ``ClientAddSeal``."""

    def __init__(self, authority: ClientAddAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessClientAddTransport()"

    def add(self, request: AddRequest, seal: ClientAddSeal) -> AddAnswer:
        return self.authority.add(request, seal)
