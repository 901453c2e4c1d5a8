"""The request an admin's work on the server's host keeps in its format-3 event (``local_events.py``).

``LocalRecord`` names what one event records: the caller (the admin, by engineer id and key
generation), the action, and the client and secret it concerns. The admin's keyholder signs
its envelope as a request of the operation ``local.record`` (never served over HTTPS: a route
no server has), so that ``audit verify`` checks, as for any format-3 event, that this admin
asked for this action on this client at that time; the server key signs the event.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.authority.requests import Caller


@dataclass(frozen=True)
class LocalRecord:
    """One event of an admin's in-process work on a vault with a team server."""

    caller: Caller
    action: str
    client_id: int | None
    secret_id: int | None
