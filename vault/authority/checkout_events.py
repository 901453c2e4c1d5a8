"""A checkout's audit event in format 3, on the team server (docs/server.md §4 rule 1).

Over HTTPS the engineer signs the request and the server signs the event: the checkout
authority is given a ``ServerEvent`` (the server's ``ServerSeal`` and the request's
``RecordedRequest``) in place of the in-process ``EventSeal``. ``append`` writes the event
through ``ServerJournal`` in the checkout's unit of work: the keyholder's pre-sealed details
(``CheckoutRequest.details_blob`` under ``details_key_version``, bound to the request id:
``LABEL_AUDIT_DETAIL_V3``) and the server's facts in ``details_json`` (the version revealed;
for a checkout the hold's ``exclusive`` and ``until``), under the server's signature.

``genuine`` is which open checkouts of other engineers a checkout honours (their events
vouch for them; in-process also format 2, opened by the keyholder's seal); ``vouched_hold``
is how a hold recorded in format 3 is believed by a later checkout: the event is a
``checkout`` of that secret by that engineer, its format-3 hash verifies, its server
signature verifies under a certified, unrevoked ``server_keys`` row, and its ``details_json``
names the row's end; it says whether the hold is exclusive. A planted hold row, one
pointing at another secret's or engineer's event, or an edited ``details_json`` blocks nobody.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vault.authority.checkout_reads import ANSWERED, EVENT
from vault.authority.requests import CHECKOUT, REQUEST_ID_REUSED
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.crypto import chain
from vault.errors import AlreadyExists, InvalidInput
from vault.storage import models as m
from vault.storage import rows
from vault.storage.prepared import Step
from vault.storage.rows import HoldRow
from vault.wire.eventrequest import RecordedRequest

FACTS = {CHECKOUT: {"version", "exclusive", "until"}}


class EventKeys(Protocol):
    """The public keys an event is checked under (``PublicChecks``' part)."""

    def event_key(self, s: Session, engineer_id: int, generation: int) -> bytes | None: ...

    def server_key(self, s: Session, version: int) -> bytes | None: ...


class HoldClaims(Protocol):
    """The in-process keyholder's reading of a format-2 hold's sealed details (``EventSeal``)."""

    def hold_claim(
        self, client_id: int, seq: int, action: str, key_version: int, blob: bytes, until: int
    ) -> bool | None: ...


@dataclass(frozen=True, repr=False)
class ServerEvent:
    """What makes a checkout's event on the server: its seal and the engineer's signed request."""

    seal: ServerSeal
    request: RecordedRequest
    nonce: Callable[[Session], None] | None = None  # the request's nonce, remembered in the unit first

    def __repr__(self) -> str:
        return f"ServerEvent({self.seal!r})"


class UnitCore:
    """What ``ServerJournal`` reads of the vault: its identity row, in the unit; the clock."""

    def __init__(self, clock: Callable[[], dt.datetime]) -> None:
        self.clock = clock

    def info(self, s: Session) -> m.VaultInfo:
        info = s.get(m.VaultInfo, 1)
        assert info is not None  # the caller's read found it in this unit
        return info


class SealedRequest(Protocol):
    """A request whose event the server appends: its action and the keyholder's sealed details
    (a ``CheckoutRequest`` or a ``ReleaseRequest`` through the server)."""

    @property
    def action(self) -> str: ...

    @property
    def details_key_version(self) -> int | None: ...

    @property
    def details_blob(self) -> bytes | None: ...


def append(
    s: Session,
    event: ServerEvent,
    clock: Callable[[], dt.datetime],
    request: SealedRequest,
    engineer_id: int,
    key_generation: int,
    client_id: int,
    secret_id: int,
    facts: Mapping[str, Any],
    writes: list[Step] | None = None,
    leading: Sequence[Step] = (),
) -> int:
    """The request's format-3 event (flushed: a checkout row names it); its seq. ``writes``: its
    insert and the head's move are added to it for the caller to run; ``leading``: writes sent
    with the head's lock, before it (``ServerJournal.append``)."""
    if request.details_blob is None or request.details_key_version is None:
        raise InvalidInput("a request through the server carries its details sealed by the engineer")
    journal = ServerJournal(UnitCore(clock), event.seal)
    target = (client_id, secret_id, request.details_key_version, request.details_blob)
    args = (s, request.action, event.request, engineer_id, key_generation, target, dict(facts))
    written = journal.append_values(*args, writes=writes, leading=leading)
    s.flush()
    return int(written["seq"])


class Answered(NamedTuple):
    """The event a request's first copy committed: its seq and the server's facts."""

    seq: int
    facts: dict[str, Any]


def answered(
    conn: Connection, engineer_id: int, seal: object, action: str, needs: tuple[str, ...] = ("version",)
) -> Answered | None:
    """docs/server.md §3 "Retries are not replays": if ``seal`` is a ``ServerEvent`` whose request
    (``request_id``) this engineer's ``action`` event already records, that event (the retry is
    answered from it, nothing appended; its facts must name ``needs``); a request id sent before
    with another body is refused (``AlreadyExists``, ``REQUEST_ID_REUSED``: 409). None otherwise.
    The unique index on ``(engineer_id, request_id, action)`` (revision 0016) stops a second copy
    that got past this."""
    if not isinstance(seal, ServerEvent):
        return None
    found = ANSWERED.all(conn, {"me": engineer_id, "request_id": seal.request.request_id, "action": action})
    if not found:
        return None
    seq, digest, details = found[0]
    if bytes(digest) != seal.request.digest:
        raise AlreadyExists(REQUEST_ID_REUSED)
    facts = json.loads(details or "{}")
    if not isinstance(facts, dict) or any(name not in facts for name in needs):
        raise InvalidInput(f"the event of this request names no {' or '.join(needs)}")
    return Answered(int(seq), facts)


def _hashed(e: Mapping[str, Any]) -> tuple[Any, ...]:
    """An event row's columns its hash covers, in order, up to (not including) the request's and
    the previous hash: the same in every format (docs/format.md §8)."""
    return tuple(e[name] for name in HASHED_COLUMNS)


HASHED_COLUMNS = (
    "seq",
    "at_us",
    "engineer_id",
    "key_generation",
    "action",
    "client_id",
    "secret_id",
    "key_version",
    "details_blob",
    "details_json",
)


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
        *_hashed(e),
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


def genuine(
    conn: Connection,
    s: Session,
    checks: EventKeys,
    vault_id: bytes,
    client_id: int,
    secret_id: int,
    held: list[HoldRow],
    claims: HoldClaims | None,
) -> list[HoldRow]:
    """Other engineers' open checkouts that their audit events vouch for, each marked
    exclusive as its event says: a ``checkout`` of this secret by that engineer whose hash
    and signature (by their certified key; format 3: by a certified server key) verify and
    whose details match the row's end. Planted or edited holds block nobody.

    ``claims``: the in-process keyholder's seal, which opens a format-2 event's details. On
    the server (None) a format-2 hold (made in-process before the vault moved to the server)
    is vouched for by its hash and the engineer's signature; its sealed details cannot be
    opened there, so the row's own ``exclusive`` is taken (a DBA who flips it can delay a
    checkout, never reveal one)."""
    out = []
    for hold in held:
        found = EVENT.all(conn, {"seq": hold.event_seq})
        e = dict(zip(rows.EVENT_COLUMNS, found[0], strict=True)) if found else None
        if (
            e is None
            or e["action"] != CHECKOUT
            or (e["engineer_id"], e["client_id"], e["secret_id"]) != (hold.engineer_id, client_id, secret_id)
            or e["signature"] is None
            or e["details_blob"] is None
            or e["key_version"] is None
        ):
            continue
        until = int(hold.expires_at.timestamp())
        if e["server_key_version"] is not None:  # format 3: the server's facts, under its signature
            claim = vouched_hold(e, vault_id, lambda v: checks.server_key(s, v), until)
            if claim is not None:
                out.append(hold._replace(exclusive=claim))
            continue
        codec = chain.EventCodec(vault_id)
        fields = (*_hashed(e), e["prev_hash"])
        # A checkout written before event format 2 (credvault upgraded while it is held) still counts.
        if e["hash"] not in (codec.audit_event_hash(*fields), codec.audit_event_hash_v1(*fields)):
            continue
        public = checks.event_key(s, hold.engineer_id, e["key_generation"])
        if public is None or not codec.signature_valid(public, e["signature"], e["seq"], e["hash"]):
            continue
        if claims is None:
            out.append(hold)
            continue
        exclusive = claims.hold_claim(client_id, e["seq"], e["action"], e["key_version"], e["details_blob"], until)
        if exclusive is None:
            continue
        out.append(hold._replace(exclusive=exclusive))
    return out
