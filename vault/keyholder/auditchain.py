"""The audit chain's checks on a run of events, where the engineer's keys are: pure, no store.

``check_rows`` checks events ``lo``, ``lo + 1``, … as given (plain tuples in ``COLUMNS``
order): each event's sequence number (a gap, a repeat or a reordering is refused at the
first event out of place), its hash recomputed from its fields, its link to the event
before it inside the run, and its signature against the key of the engineer and key
generation that signed it, within that key's lifetime in the chain. Only the link of the
run's first event (its ``prev_hash`` against the hash that ends the run before it) is left
to the caller, which walks the runs in order (``keyholder/auditverify.py``); so a long
chain can be checked run by run in worker processes, each handed its rows (nothing but the
rows, the vault id and the public keys crosses a process boundary).

Per event, beyond its hash and signature (docs/format.md §8):

* its format: format 2 (``chain.event_hash``) or, for events written before it, format 1 in
  its canonical form (no ``""`` / ``b""`` where the writer stored NULL); never a format-1
  event after a format-2 one;
* its time: a format-2 event is not dated before the event it follows;
* its signer's lifetime: the key generation that signed it must be one the chain has
  certified and not yet retired at that point (``Keys`` carries, per key, the sequence
  numbers between which it may sign; ``Signers.key_lifetimes`` works them out in a first
  pass over the few events that certify and retire keys, and hands over the problems that
  pass found, reported here at their own sequence numbers);
* ``enroll`` is signed by the key it enrols (format 2: the event; format 3: its request, the
  enrolment over HTTPS), and that is the key later certified;
* format 3 (docs/format.md §8.2, the events the team server appends): the hash in format 3,
  the server's signature under a certified server key (``ServerKeys``, verified by the
  caller under the organisation key) dated no earlier than its certificate, the engineer's
  request it keeps (``eventrequest.request_problem``) under the key of the event's engineer
  and generation within that key's lifetime, no two events of one (engineer, request id,
  action), and no event of format 1 or 2 after one of format 3 (a downgrade). An event the
  server appends on its own (``eventrequest.SERVER_ACTIONS``: ``auth-refused``) keeps no
  request: its server signature vouches for it, and its shape is fixed
  (``eventrequest.server_event_problem``).

The first event of a run is checked against the run before it by the caller, as for its
link: ``RangeResult`` carries its time and format and those of the last good event.

``check_range`` reads a few events itself, on a DB-API cursor of the caller's unit (rows as
plain tuples, never ORM objects), for the checks made inside a unit of the keyholder's own
(``Signers.anchor_problem``: the anchor of a root rotation's signers).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.engine import Dialect

from vault.authority.journal import LEGACY_UNSIGNED_ACTIONS, LOCAL_ACTIONS, UNSIGNED_ACTIONS
from vault.crypto import chain
from vault.storage import models as m
from vault.wire.eventrequest import EVENT_WINDOW, SERVER_ACTIONS, request_problem, server_event_problem

NEVER = 2**63
# Per (engineer id, key generation): the signing key and the sequence numbers it signs in,
# from ``start`` (inclusive; NEVER if the chain never certified it) to ``end`` (exclusive).
Keys = dict[tuple[int | None, int], tuple[bytes, int, int]]
Problems = Mapping[int, str]  # found by the caller's first pass, by sequence number
# Per server key version: its public key and the time (µs) from which it may sign, each certified
# under the organisation key (``keyholder/serverkeys.py``).
ServerKeys = Mapping[int, tuple[bytes, int]]
RequestKey = tuple[int | None, bytes, str]  # (engineer id, request id, action): once in the chain
REPEAT_US = 2 * EVENT_WINDOW * 1_000_000  # two events of one request are at most this far apart

# The columns of an event in the order the checks read them: the hashed fields, then the hash
# and the signature (a ``ChainedRow`` carries the same fields with the signature before the links).
COLUMNS = (
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
    "prev_hash",
    "hash",
    "signature",
    "request_id",
    "request_digest",
    "request_sig",
    "request_body",
    "server_key_version",
)


class RangeResult(NamedTuple):
    good: int  # events that verified, from lo on, before the first bad one (or all of them)
    first_prev: bytes | None  # prev_hash of event lo if it is there: its link is the caller's to check
    last_hash: bytes | None  # hash of the last event that verified
    bad_seq: int | None = None
    problem: str | None = None
    first_at: int | None = None  # at_us and format of event lo, when it is there and its hash checked out
    first_format: int | None = None
    last_at: int | None = None  # at_us and format of the last event that verified
    last_format: int | None = None
    # Format-3 requests of the run's first and last REPEAT_US (key, seq, at_us; the first also
    # with the event's prev_hash, where a repeat found by the caller stops the run): the caller
    # checks the first against the runs before (a request's events are never further apart).
    head_requests: tuple[tuple[RequestKey, int, int, bytes], ...] = ()
    tail_requests: tuple[tuple[RequestKey, int, int], ...] = ()
    first_local: bool = False  # event lo is a local unlock's (format 2 allowed after format 3)
    # The first format-2 event not a local unlock's before any format-3 one in the run, with its
    # prev_hash: a downgrade if the runs before end in format 3 (the caller's to judge).
    early_v2: tuple[int, bytes] | None = None


_INTS = (0, 1, 2, 3, 5, 6, 7)  # seq, at_us, engineer_id, key_generation, client_id, secret_id, key_version


def _canonical_v1(row: tuple[Any, ...]) -> bool:
    """Whether a row is as a format-1 writer stored it. Format 1 encodes None, "" and b""
    alike (and SQLite keeps a string in an integer column): its writer stored integers or
    NULL in the integer columns and never an empty blob or text."""
    if not all(row[i] is None or type(row[i]) is int for i in _INTS):
        return False
    blob, text = row[8], row[9]
    return (blob is None or (not isinstance(blob, str) and len(blob) > 0)) and (
        text is None or (isinstance(text, str) and text != "")
    )


def _lifetime(seq: int, start: int, end: int) -> str:
    if start == NEVER:
        return "it is signed by a key generation the chain never certified (outside its certified lifetime)"
    if seq < start:
        return f"it is signed before its key was certified (lifetime from event {start})"
    return f"it is signed by a key the chain retired at event {end} (outside its certified lifetime)"


def _enrolment(
    entry: tuple[bytes, int, int] | None,
    details_json: Any,
    seq: int,
    digest: bytes,
    signature: bytes,
    codec: chain.EventCodec,
) -> str | None:
    """An ``enroll`` is signed by the key it enrols (named in its details), before that key's
    certification; once certified, the certified key must be that one."""
    public = _enrolled_key(entry, details_json, seq)
    if isinstance(public, str):
        return public
    if not codec.signature_valid(public, signature, seq, digest):
        return "its signature is invalid"
    return None


def server_problem(
    row: tuple[Any, ...],
    codec: chain.EventCodec,
    keys: Mapping[tuple[int | None, int], tuple[bytes, int, int]],
    server_keys: ServerKeys,
    seq: int,
    digest: bytes,
) -> str | None:
    """A format-3 event's signatures: the server's over it, the engineer's over its request."""
    at_us, engineer_id, generation, action, client_id, signature = row[1], row[2], row[3], row[4], row[5], row[12]
    version = row[17]
    server = server_keys.get(version)
    if server is None:
        return f"it is signed by server key {version}, which is not certified"
    if at_us < server[1]:
        return "it is dated before its server key was certified"
    if signature is None or not codec.server_signature_valid(server[0], signature, version, seq, digest):
        return "its server signature is invalid"
    if action in SERVER_ACTIONS:  # the server's own event: its signature vouches, no request
        sealed = row[6], row[7], row[8], row[9]  # secret_id, key_version, details_blob, details_json
        return server_event_problem(engineer_id, generation, action, client_id, *sealed, row[13:17])
    entry = keys.get((engineer_id, generation))
    if action == "enroll":  # its request is signed by the key it enrols, before that key's certification
        public = _enrolled_key(entry, row[9], seq)
        if isinstance(public, str):
            return public
    elif entry is None:
        return "its request is signed by an unknown or unverified engineer key"
    elif not entry[1] <= seq < entry[2]:
        return "its request: " + _lifetime(seq, entry[1], entry[2])
    else:
        public = entry[0]
    return request_problem(
        engineer_id, generation, action, client_id, at_us, row[13], row[14], row[15], row[16], public
    )


def _enrolled_key(entry: tuple[bytes, int, int] | None, details_json: Any, seq: int) -> bytes | str:
    """The key an ``enroll`` names in its details (it signed the enrolment), or the problem: once
    certified, the certified key must be that one, certified after the enrolment."""
    try:
        details = json.loads(details_json) if details_json else {}
        public = bytes.fromhex(details["signing_public"])
    except (ValueError, TypeError, KeyError):
        return "the enrolment does not name the key it was signed with"
    if entry is not None:
        if entry[0] != public:
            return "the enrolment's key is not the key the organisation certified for it"
        if seq >= entry[1]:
            return "the enrolment comes after its key was certified"
    return public


class _Requests:
    """The (engineer, request id, action) of the format-3 events of a run: a repeat inside it is
    refused; those of its first and last ``REPEAT_US`` go to the caller (``RangeResult``)."""

    def __init__(self) -> None:
        self.seen: dict[RequestKey, tuple[int, int]] = {}
        self.limit = 4096
        self.first_at: int | None = None
        self.head: list[tuple[RequestKey, int, int, bytes]] = []

    def add(self, key: RequestKey, seq: int, at_us: int, prev_hash: bytes) -> str | None:
        before = self.seen.get(key)
        if before is not None:
            return f"its request already has a {key[2]} event (event {before[0]}): a request appended twice"
        if self.first_at is None:
            self.first_at = at_us
        if at_us - self.first_at <= REPEAT_US:
            self.head.append((key, seq, at_us, prev_hash))
        if len(self.seen) >= self.limit:  # forget what no later event of the same request can be near
            self.seen = {k: v for k, v in self.seen.items() if v[1] >= at_us - REPEAT_US}
            self.limit = max(4096, 2 * len(self.seen))  # amortised: a busy window is not rebuilt per event
        self.seen[key] = (seq, at_us)
        return None

    def tail(self, last_at: int | None) -> tuple[tuple[RequestKey, int, int], ...]:
        if last_at is None:
            return ()
        return tuple((k, seq, at) for k, (seq, at) in self.seen.items() if at >= last_at - REPEAT_US)


def check_rows(
    rows: Iterable[tuple[Any, ...]],
    codec: chain.EventCodec,
    keys: Keys,
    lo: int,
    problems: Problems | None = None,
    server_keys: ServerKeys | None = None,
) -> RangeResult:
    expected, first_prev, running = lo, None, None
    event_hash, event_hash_v1, event_hash_v3, signature_valid = (
        codec.audit_event_hash,
        codec.audit_event_hash_v1,
        codec.audit_event_hash_v3,
        codec.signature_valid,
    )
    servers: ServerKeys = server_keys or {}
    requests = _Requests()
    marks = iter(sorted(problems or ()))
    mark = next(marks, None)
    first_at = first_format = last_at = None
    first_local = False
    early_v2: tuple[int, bytes] | None = None
    current = 0  # the format of the event before (in this range)
    problem = None
    for row in rows:
        seq, at_us, engineer_id, generation, action, _, _, _, _, text, prev_hash, digest, signature = row[:13]
        server_version = row[17] if len(row) > 17 else None
        if seq != expected:
            problem = f"event {expected} is missing (next is {seq})" if seq > expected else "events are out of order"
        elif running is None:
            first_prev = prev_hash
        elif prev_hash != running:
            problem = "it does not link to the event before it"
        fmt = 0
        if problem is None:
            # seq … details_json, prev_hash: the hashed fields in order
            if server_version is not None:
                if event_hash_v3(row[:10], row[13], row[14], prev_hash) == digest:
                    fmt = 3
                else:
                    problem = "its contents were changed"
            elif event_hash(*row[:11]) == digest:
                fmt = 2
            elif _canonical_v1(row) and event_hash_v1(*row[:11]) == digest:
                fmt = 1
                if running is not None and current >= 2:
                    problem = f"it is in the old event format (1) after an event in format {current}"
            else:
                problem = "its contents were changed"
            if fmt == 2 and action not in LOCAL_ACTIONS:
                if running is not None and current == 3:
                    problem = "it is in an older event format (2) after an event in format 3 (a downgrade)"
                elif early_v2 is None and current != 3:
                    early_v2 = (seq, prev_hash)
            if fmt >= 2 and problem is None and running is not None and at_us < last_at:
                problem = f"it is dated before the event before it (backdated: {at_us} < {last_at})"
            if fmt and running is None:
                first_at, first_format = at_us, fmt
                first_local = action in LOCAL_ACTIONS
        if problem is None and seq == mark:
            problem = problems[seq]  # type: ignore[index]
        if problem is None:
            if fmt == 3:
                problem = server_problem(row, codec, keys, servers, seq, digest)
                if problem is None and action not in SERVER_ACTIONS:
                    problem = requests.add((engineer_id, row[13], action), seq, at_us, prev_hash)
            elif signature is None:
                if action not in (UNSIGNED_ACTIONS if fmt == 2 else LEGACY_UNSIGNED_ACTIONS):
                    problem = "it is not signed"
            elif action == "enroll":
                problem = _enrolment(keys.get((engineer_id, generation)), text, seq, digest, signature, codec)
            else:
                entry = keys.get((engineer_id, generation))
                if entry is None:
                    problem = "it is signed by an unknown or unverified engineer key"
                elif not entry[1] <= seq < entry[2]:
                    problem = _lifetime(seq, entry[1], entry[2])
                elif not signature_valid(entry[0], signature, seq, digest):
                    problem = "its signature is invalid"
        if problem is not None:
            return RangeResult(
                expected - lo,
                first_prev,
                running,
                expected,
                problem,
                first_at,
                first_format,
                last_at,
                _fmt(running, current),
                tuple(requests.head),
                requests.tail(last_at),
                first_local,
                early_v2,
            )
        if seq == mark:
            mark = next(marks, None)
        # once format 3, always: a local unlock's format-2 event leaves the chain in format 3
        running, last_at, current = digest, at_us, 3 if current == 3 and fmt == 2 else fmt
        expected += 1
    return RangeResult(
        expected - lo,
        first_prev,
        running,
        None,
        None,
        first_at,
        first_format,
        last_at,
        _fmt(running, current),
        tuple(requests.head),
        requests.tail(last_at),
        first_local,
        early_v2,
    )


def _fmt(running: bytes | None, current: int) -> int | None:
    return None if running is None else current


# -- a few events read in the caller's own unit (the anchor of a root rotation's signers) ----------------

FETCH = 2_000
_T = m.AuditEvent.__table__
TABLE_COLUMNS = [_T.c[name] for name in COLUMNS]


def _sql(dialect: Dialect, statement: Any) -> str:
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def check_range(
    dbapi_connection: Any,
    dialect: Dialect,
    vault_id: bytes,
    keys: Keys,
    lo: int,
    hi: int,
    problems: Problems | None = None,
    server_keys: ServerKeys | None = None,
) -> RangeResult:
    """Check events ``lo``..``hi`` (all but the first one's link) on a DB-API connection."""
    cursor = dbapi_connection.cursor()
    try:
        seq = _T.c.seq
        cursor.execute(_sql(dialect, select(*TABLE_COLUMNS).where(seq >= lo, seq <= hi).order_by(seq)))
        marked = {k: v for k, v in (problems or {}).items() if lo <= k <= hi}
        result = check_rows(_fetched(cursor), chain.EventCodec(vault_id), keys, lo, marked, server_keys)
        missing = lo + result.good
        if result.problem is None and missing <= hi:  # the rows stop before hi: what comes next?
            cursor.execute(_sql(dialect, select(func.min(seq)).where(seq > missing)))
            row = cursor.fetchone()
            if row is not None and row[0] is not None:
                result = result._replace(bad_seq=missing, problem=f"event {missing} is missing (next is {row[0]})")
        return result
    finally:
        cursor.close()


def _fetched(cursor: Any) -> Iterator[tuple[Any, ...]]:
    while rows := cursor.fetchmany(FETCH):
        yield from rows
