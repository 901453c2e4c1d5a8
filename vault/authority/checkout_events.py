"""A checkout's audit event in format 3, on the team server (docs/server.md §4 rule 1).

Over HTTPS the engineer signs the request and the server signs the event: the checkout
authority is given a ``ServerEvent`` (the server's ``ServerSeal`` and the request's
``RecordedRequest``) in place of the in-process ``EventSeal``. ``append`` writes the event
through ``ServerJournal`` in the checkout's unit of work: the keyholder's pre-sealed details
(``CheckoutRequest.details_blob`` under ``details_key_version``, bound to the request id:
``LABEL_AUDIT_DETAIL_V3``) and the server's facts in ``details_json`` (the version revealed;
for a checkout the hold's ``exclusive`` and ``until``), under the server's signature.

``vouched_hold`` is how a hold recorded so is believed by a later checkout: the event is a
``checkout`` of that secret by that engineer, its format-3 hash verifies, its server
signature verifies under a certified, active ``server_keys`` row, and its ``details_json``
names the row's end; it says whether the hold is exclusive. A planted hold row, one
pointing at another secret's or engineer's event, or an edited ``details_json`` blocks nobody.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from vault.authority.requests import CHECKOUT, CheckoutRequest
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.crypto import chain
from vault.errors import InvalidInput
from vault.storage import models as m
from vault.wire.eventrequest import RecordedRequest

FACTS = {CHECKOUT: {"version", "exclusive", "until"}}
REVEAL_FACTS = {"version"}


@dataclass(frozen=True, repr=False)
class ServerEvent:
    """What makes a checkout's event on the server: its seal and the engineer's signed request."""

    seal: ServerSeal
    request: RecordedRequest

    def __repr__(self) -> str:
        return f"ServerEvent({self.seal!r})"


class _UnitCore:
    """What ``ServerJournal`` reads of the vault: its identity row, in the unit; the clock."""

    def __init__(self, clock: Callable[[], dt.datetime]) -> None:
        self.clock = clock

    def info(self, s: Session) -> m.VaultInfo:
        info = s.get(m.VaultInfo, 1)
        assert info is not None  # the caller's read found it in this unit
        return info


def append(
    s: Session,
    event: ServerEvent,
    clock: Callable[[], dt.datetime],
    request: CheckoutRequest,
    engineer_id: int,
    key_generation: int,
    client_id: int,
    secret_id: int,
    facts: Mapping[str, Any],
) -> int:
    """The checkout's format-3 event (flushed: the checkout row names it); its seq."""
    if request.details_blob is None or request.details_key_version is None:
        raise InvalidInput("a checkout through the server carries its details sealed by the engineer")
    journal = ServerJournal(_UnitCore(clock), event.seal)
    row = journal.append(
        s,
        request.action,
        event.request,
        engineer_id=engineer_id,
        key_generation=key_generation,
        client_id=client_id,
        secret_id=secret_id,
        key_version=request.details_key_version,
        details_blob=request.details_blob,
        public=dict(facts),
    )
    s.flush()
    return int(row.seq)


def vouched_hold(
    e: Mapping[str, Any],
    vault_id: bytes,
    server_key: Callable[[int], bytes | None],
    until: int,
) -> bool | None:
    """Whether format-3 event ``e`` (a row of ``audit_events`` by column name, already matched
    to the hold's action, engineer, client and secret) vouches for an exclusive hold ending at
    ``until``: True or False, or None if it vouches for none (module docstring)."""
    if e["request_id"] is None or e["request_digest"] is None or e["signature"] is None:
        return None
    digest = chain.event_hash_v3(
        vault_id,
        e["seq"],
        e["at_us"],
        e["engineer_id"],
        e["key_generation"],
        e["action"],
        e["client_id"],
        e["secret_id"],
        e["key_version"],
        e["details_blob"],
        e["details_json"],
        request_id=e["request_id"],
        request_digest=e["request_digest"],
        prev_hash=e["prev_hash"],
    )
    if digest != e["hash"]:
        return None
    public = server_key(e["server_key_version"])
    if public is None or not chain.server_signature_valid(
        public, e["signature"], vault_id, e["server_key_version"], e["seq"], digest
    ):
        return None
    try:
        facts = json.loads(e["details_json"] or "")
    except ValueError:
        return None
    if not isinstance(facts, dict) or set(facts) != FACTS[CHECKOUT] or facts["until"] != until:
        return None
    exclusive = facts["exclusive"]
    return exclusive if isinstance(exclusive, bool) else None
