"""The server's ``auth-refused`` event (docs/server.md §3, "Failed authentication").

When an engineer's failed authentications reach the per-engineer limit for the first time in
a window (``authlimits.EngineerLimit``: once per window, whatever the concurrency, across
every server process), the server appends one ``auth-refused`` event, in the unit that counted
that failure: the count and the event commit together, or neither (then the failure is
counted alone and the log says the event is missing).

The event is the server's own: no engineer signed a request for it (the requests were
refused), so it is format 3 with no request kept, signed by the server key, naming the
engineer it is about, no key generation (0), and as public facts ``{"count", "window_start"}``
(the failures counted, the window's start in unix seconds). ``audit verify`` believes it on
the server's signature under a certified server key (``eventrequest.server_event_problem``):
a DBA without the server key cannot write one, nor change one, nor turn another event into
one. A compromised server can write false ones (it signs false server facts, docs/server.md
§1); such an event authorises and reveals nothing.

Per-address trips (process memory, mostly without an engineer) stay a log line.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy.orm import Session

from vault.authority.checkout_events import UnitCore
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.wire.eventrequest import AUTH_REFUSED


class AuthRefusals:
    """Appends ``auth-refused`` in the unit that counted the tripping failure (``OnTrip``)."""

    def __init__(self, seal: ServerSeal, clock: Callable[[], dt.datetime]) -> None:
        self.journal = ServerJournal(UnitCore(clock), seal)

    def __repr__(self) -> str:
        return f"AuthRefusals({self.journal.seal!r})"

    def __call__(self, s: Session, engineer_id: int, count: int, window_start: int) -> None:
        facts = {"count": count, "window_start": window_start}
        self.journal.append_server_event(s, AUTH_REFUSED, engineer_id=engineer_id, public=facts)
