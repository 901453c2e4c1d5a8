"""Verifying the audit chain, where the engineer's keys are: every row the authority streams.

``ChainVerifier.verify`` is ``audit verify`` and ``report at-risk``'s chain check. It asks
the authority (through the transport) for the chain's head and the events it starts from
(``PointsRequest``), then for the whole chain from there to that head, a page at a time
(``PageRequest`` of an unfiltered query: each page the authority's own short read unit),
and checks what it is given, in order:

* the anchor of an incremental check (``since``: a (seq, hash) this machine verified): it
  must be there with that hash, its own hash and signature verify, it links to the event
  before it; the chain is then checked from the event after it;
* every page: of this vault, the page asked for (``after``, ``until``), its events after
  ``after`` and not beyond ``until``; an empty page that says more follows is refused (it
  would end the stream silently);
* every event, by ``auditchain.check_rows``: its sequence number the next one (an event
  deleted from the middle, a repeated or reordered one is named), its hash recomputed, its
  link, its format and time, its signature under its signer's certified key within that
  key's lifetime in the chain (``Signers.key_lifetimes``, read by the keyholder itself:
  a signature of another signer is refused), an enrolment under the key it enrols; a
  format-3 event (docs/format.md §8.2) under a server key certified by the organisation key
  (``server_keys``, verified by the keyholder) and its engineer's signed request, each
  (engineer, request id, action) once: across runs, the requests of each run's first
  ``REPEAT_US`` are checked against those of the runs before (``_Run``);
* the end: the last event verified is the head the authority named at the start (seq and
  hash): a stream that stops early, or runs past it, does not verify; no event lies past
  the head (asked again at the end: an event no append made);
* what this machine saw before (the head it remembers, signed checkpoints): each must be
  an event of the chain verified here, with the same hash, or the tail was truncated.

A long chain is checked in worker processes, one run of events (``chunk_size``) each: the
rows go to the workers as plain tuples (with the vault id and the public keys; nothing
else crosses), at most a few runs in flight (bounded memory at any length of the chain),
and the results are taken in order, each run's first link and time checked against the
run before it. The first bad event is named whatever the number of workers.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from vault.authority.audit_requests import MAX_PAGE, EventPage, EventQuery, PageRequest
from vault.authority.audit_verify_requests import ChainPoints, PointsRequest
from vault.authority.journal import LOCAL_ACTIONS
from vault.authority.requests import Caller
from vault.crypto import chain
from vault.keyholder.auditchain import REPEAT_US, Keys, Problems, RangeResult, RequestKey, ServerKeys, check_rows
from vault.records import AuditVerification
from vault.storage.repositories.audit import ChainedRow

CHUNK = 20_000  # events per run handed to a worker process, at most
CHUNKS_PER_WORKER = 8  # at least this many runs per worker, so a busy core does not hold the others up
IN_FLIGHT_PER_WORKER = 2  # runs handed out and not yet taken back, per worker: the memory bound

Row = tuple[Any, ...]  # an event in ``auditchain.COLUMNS`` order


class ChainTransport(Protocol):
    def points(self, request: PointsRequest) -> ChainPoints: ...
    def page(self, request: PageRequest) -> EventPage: ...


@dataclass(frozen=True)
class Known:
    """A (seq, hash) this machine saw before and where it comes from (for the message)."""

    seq: int
    hash: bytes
    source: str


class Stop(NamedTuple):
    """The stream refused at ``seq`` (a page that is not what was asked for)."""

    seq: int
    problem: str


def chunk_size(events: int, workers: int) -> int:
    return max(1, min(CHUNK, chain.PARALLEL_THRESHOLD, -(-events // (workers * CHUNKS_PER_WORKER))))


def check_run(
    vault_id: bytes, keys: Keys, lo: int, rows: Sequence[Row], problems: Problems, server_keys: ServerKeys
) -> RangeResult:
    """One run of events in a worker process (``check_rows``)."""
    return check_rows(rows, chain.EventCodec(vault_id), keys, lo, problems, server_keys)


def as_row(e: ChainedRow) -> Row:
    """A ``ChainedRow`` in ``auditchain.COLUMNS`` order: the hashed fields, hash, signature,
    then the format-3 columns."""
    return (*e[:10], e.prev_hash, e.hash, e.signature, *e[13:])


class ChainVerifier:
    """``audit verify`` on the rows the authority streams (module docstring)."""

    def __init__(
        self,
        transport: ChainTransport,
        vault_id: Callable[[], bytes],
        signer_keys: Callable[[], tuple[Keys, Problems]],
        page_size: int = MAX_PAGE,
        server_keys: Callable[[], ServerKeys] = dict,
    ) -> None:
        self.transport, self.vault_id, self.signer_keys, self.page_size = transport, vault_id, signer_keys, page_size
        self.server_keys = server_keys

    def __repr__(self) -> str:
        return "ChainVerifier()"

    def verify(
        self,
        action: str,
        caller: Caller,
        *,
        since: tuple[int, bytes] | None = None,
        known: Sequence[Known] = (),
        workers: int | None = None,
        observe: Callable[[ChainedRow], None] | None = None,
    ) -> AuditVerification:
        """The chain from ``since`` (or event 1) to the head the authority names, verified.
        ``observe`` is shown each event as it arrives, before it is checked: what it keeps counts
        only if the result is ok, or for the events before the ``first_bad_seq`` it names."""
        vault_id = self.vault_id()
        start, running = since if since is not None else (0, chain.GENESIS)
        before = [k.seq for k in known if 0 < k.seq <= start]
        asked = tuple(sorted({s for s in (start - 1, start, *before) if s > 0}))
        points = self.transport.points(PointsRequest(action, caller, asked))
        run = _Run(start, running)
        if points.vault_id != vault_id:
            return run.bad(start + 1, "the authority answered for another vault")
        stored = {e.seq: e for e in points.events if e.seq in asked}
        keys, problems = self.signer_keys()
        servers = self.server_keys()
        prev_at, prev_format = None, None
        if since is not None:
            anchor = stored.get(start)
            if anchor is None or anchor.hash != running:
                return run.bad(start, "the event this machine verified last is missing or changed")
            problem = self._anchor_problem(vault_id, keys, problems, servers, anchor, stored.get(start - 1))
            if problem is not None:
                return run.bad(start, problem + " (the anchor)")
            prev_at, prev_format = anchor.at_us, _anchor_format(vault_id, anchor, stored.get(start - 1))
            if prev_format is None:  # the format at the anchor is not known from it: check it all
                return self.verify(action, caller, known=known, workers=workers, observe=observe)
        end = max(points.head_seq, start)
        wanted = {k.seq for k in known if k.seq > start}
        seen: dict[int, bytes] = {}
        size = self._size(end - start, workers)
        runs = self._runs(action, caller, vault_id, start, end, size, wanted, seen, observe)
        results = _Results(vault_id, keys, problems, servers, workers or os.cpu_count() or 1, end - start)
        outcome = run.walk(results.checked(runs), prev_at, prev_format)
        if outcome is not None:
            return outcome
        if (points.head_seq, points.head_hash) != (run.last, run.running):
            return run.bad(run.last + 1, "the chain's recorded head does not match its last event (events deleted?)")
        now = self.transport.points(PointsRequest(action, caller))
        if now.vault_id != vault_id:
            return run.bad(run.last + 1, "the authority answered for another vault")
        if now.newest > now.head_seq:
            return run.bad(run.last + 1, "events lie beyond the chain's recorded head")
        hashes = {s: e.hash for s, e in stored.items()} | seen
        for k in known:
            problem = _known_problem(k, hashes, run.last)
            if problem is not None:
                return run.bad(min(k.seq, run.last + 1), f"{problem} ({k.source})")
        return AuditVerification(True, run.checked, start + 1, run.last, run.running.hex())

    @staticmethod
    def _size(events: int, workers: int | None) -> int:
        return chunk_size(events, workers or os.cpu_count() or 1)

    @staticmethod
    def _anchor_problem(
        vault_id: bytes,
        keys: Keys,
        problems: Problems,
        servers: ServerKeys,
        anchor: ChainedRow,
        before: ChainedRow | None,
    ) -> str | None:
        """The anchor checked again: its hash from its fields, its signature in its key's
        lifetime, what the key-event pass found at it, its link to the event before it."""
        marked = {anchor.seq: problems[anchor.seq]} if anchor.seq in problems else {}
        r = check_rows([as_row(anchor)], chain.EventCodec(vault_id), keys, anchor.seq, marked, servers)
        if r.problem is not None:
            return r.problem
        if anchor.prev_hash != (before.hash if before is not None else chain.GENESIS):
            return "it does not link to the event before it"
        return None

    def _runs(
        self,
        action: str,
        caller: Caller,
        vault_id: bytes,
        start: int,
        end: int,
        size: int,
        wanted: set[int],
        seen: dict[int, bytes],
        observe: Callable[[ChainedRow], None] | None = None,
    ) -> Iterator[tuple[int, list[Row] | Stop]]:
        """The events after ``start`` up to ``end`` as runs of ``size`` (seq of its first
        event as it should be, rows), a page asked for when the runs before are taken; a
        page that is not what was asked for ends them with a ``Stop``."""
        query = EventQuery(action, caller)
        lo, after = start + 1, start
        run: list[Row] = []
        while after < end:
            request = PageRequest(query, after=after, until=end, size=self.page_size)
            page = self.transport.page(request)
            stop = _page_problem(request, page, vault_id, lo + len(run))
            if stop is not None:
                if run:
                    yield lo, run
                yield lo + len(run), stop
                return
            for e in page.events:
                if e.seq in wanted:
                    seen[e.seq] = e.hash
                if observe is not None:
                    observe(e)
                run.append(as_row(e))
                if len(run) == size:
                    yield lo, run
                    lo, run = lo + size, []
            if not page.more:
                break
            after = page.events[-1].seq
        if run:
            yield lo, run


def _page_problem(request: PageRequest, page: EventPage, vault_id: bytes, expected: int) -> Stop | None:
    """Why ``page`` is not an answer to ``request`` (the order of its events inside is the
    checks' to judge, event by event), or None."""
    if page.vault_id != vault_id:
        return Stop(expected, "a page of the log is of another vault")
    if page.after != request.after or page.until != request.until:
        return Stop(expected, "a page of the log is not the page asked for")
    if not page.events:
        if page.more:
            return Stop(expected, "an empty page that says more follows (the stream cut short)")
        return None
    first, last = page.events[0].seq, page.events[-1].seq
    if first <= page.after or last <= page.after:
        return Stop(expected, "the events are out of order or repeated (a page goes back in the log)")
    if last > page.until:
        return Stop(expected, "an event lies beyond the end of the stream")
    return None


def _format(vault_id: bytes, e: ChainedRow) -> int | None:
    """The format whose hash ``e`` has (3, 2 or 1), or None if none (a row rewritten)."""
    codec, row = chain.EventCodec(vault_id), as_row(e)
    if e.server_key_version is not None:
        return 3 if codec.audit_event_hash_v3(row[:10], e.request_id, e.request_digest, e.prev_hash) == e.hash else None
    if codec.audit_event_hash(*row[:11]) == e.hash:
        return 2
    return 1 if codec.audit_event_hash_v1(*row[:11]) == e.hash else None


def _anchor_format(vault_id: bytes, anchor: ChainedRow, before: ChainedRow | None) -> int | None:
    """The format the chain is in at the anchor (checked already): its own, but 3 for a local
    unlock's format-2 event that follows a format-3 one (its event before, whose hash is the
    anchor's link); None when that cannot be told from these two (a local event after another:
    the caller verifies in full)."""
    fmt = _format(vault_id, anchor)
    if fmt != 2 or anchor.action not in LOCAL_ACTIONS or before is None:
        return fmt
    previous = _format(vault_id, before)
    if previous is None or (previous == 2 and before.action in LOCAL_ACTIONS):
        return None
    return 3 if previous == 3 else 2


def _known_problem(k: Known, hashes: dict[int, bytes], last: int) -> str | None:
    if k.seq > last:
        return f"the log ends at event {last} but event {k.seq} was seen before: the tail was truncated"
    if k.seq > 0 and hashes.get(k.seq) != k.hash:
        return f"event {k.seq} differs from the one seen before"
    return None


class _Results:
    """Runs checked in order: in worker processes for a long chain, else here."""

    def __init__(
        self, vault_id: bytes, keys: Keys, problems: Problems, servers: ServerKeys, workers: int, events: int
    ) -> None:
        self.vault_id, self.keys, self.problems, self.workers = vault_id, keys, problems, workers
        self.servers = servers
        self.parallel = workers >= 2 and events >= chain.PARALLEL_THRESHOLD

    def _marked(self, lo: int, rows: Sequence[Row]) -> dict[int, str]:
        hi = lo + len(rows) - 1
        return {k: v for k, v in self.problems.items() if lo <= k <= hi}

    def checked(self, runs: Iterable[tuple[int, list[Row] | Stop]]) -> Iterator[tuple[int, RangeResult | Stop]]:
        if not self.parallel:
            codec = chain.EventCodec(self.vault_id)
            for lo, rows in runs:
                yield (
                    lo,
                    rows
                    if isinstance(rows, Stop)
                    else check_rows(rows, codec, self.keys, lo, self._marked(lo, rows), self.servers),
                )
            return
        pool = ProcessPoolExecutor(max_workers=self.workers)
        pending: deque[tuple[int, Future[RangeResult] | Stop]] = deque()
        try:
            for lo, rows in runs:
                if isinstance(rows, Stop):
                    pending.append((lo, rows))
                else:
                    marked = self._marked(lo, rows)
                    job = pool.submit(check_run, self.vault_id, self.keys, lo, rows, marked, self.servers)
                    pending.append((lo, job))
                while len(pending) > self.workers * IN_FLIGHT_PER_WORKER:
                    yield _taken(pending.popleft())
            while pending:
                yield _taken(pending.popleft())
        finally:
            pool.shutdown(cancel_futures=True)


def _taken(item: tuple[int, Future[RangeResult] | Stop]) -> tuple[int, RangeResult | Stop]:
    lo, result = item
    return lo, result if isinstance(result, Stop) else result.result()


class _Run:
    """Where a verification stands: events checked, the last one and its hash."""

    def __init__(self, start: int, running: bytes) -> None:
        self.start, self.running, self.last, self.checked = start, running, start, 0
        # format-3 requests of the last REPEAT_US verified, by key: (seq, at_us)
        self.requests: dict[RequestKey, tuple[int, int]] = {}

    def _repeat(self, lo: int, r: RangeResult) -> tuple[int, str] | None:
        """The first event of run ``r`` (from ``lo``) whose request an event of a run before
        already used, the run's events before it counted as verified; else the requests of
        ``r``'s last REPEAT_US remembered, older ones forgotten, and None."""
        for key, seq, _, prev_hash in r.head_requests:
            before = self.requests.get(key)
            if before is not None and (r.bad_seq is None or seq < r.bad_seq):
                self.checked, self.last, self.running = self.checked + seq - lo, seq - 1, prev_hash
                return seq, f"its request already has a {key[2]} event (event {before[0]}): a request appended twice"
        if r.last_at is not None:
            self.requests = {k: v for k, v in self.requests.items() if v[1] >= r.last_at - REPEAT_US}
        self.requests.update((key, (seq, at)) for key, seq, at in r.tail_requests)
        return None

    def bad(self, seq: int, problem: str) -> AuditVerification:
        return AuditVerification(
            False, self.checked, self.start + 1, self.last, self.running.hex(), seq, f"event {seq}: {problem}"
        )

    def walk(
        self, results: Iterator[tuple[int, RangeResult | Stop]], prev_at: int | None, prev_format: int | None
    ) -> AuditVerification | None:
        """The runs' results in order, each run's first event against the run before; the
        first problem as a failed verification, else None."""
        try:
            for lo, r in results:
                if isinstance(r, Stop):
                    return self.bad(r.seq, r.problem)
                if r.first_prev is not None and r.first_prev != self.running:
                    return self.bad(lo, "it does not link to the event before it")
                boundary = _boundary(r, prev_at, prev_format)
                if boundary is not None:
                    return self.bad(lo, boundary)
                downgrade = r.early_v2 if prev_format == 3 else None
                if downgrade is not None and (r.bad_seq is None or downgrade[0] < r.bad_seq):
                    self.checked, self.last, self.running = (
                        self.checked + downgrade[0] - lo,
                        downgrade[0] - 1,
                        downgrade[1],
                    )
                    return self.bad(downgrade[0], DOWNGRADE)
                repeat = self._repeat(lo, r)
                if repeat is not None:
                    return self.bad(*repeat)
                if r.last_hash is not None:
                    self.checked, self.last, self.running = self.checked + r.good, lo + r.good - 1, r.last_hash
                    # once format 3, always (a run of local unlocks after it does not change that)
                    prev_at, prev_format = r.last_at, 3 if prev_format == 3 else r.last_format
                if r.bad_seq is not None:
                    return self.bad(r.bad_seq, str(r.problem))
            return None
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()


def _boundary(r: RangeResult, prev_at: int | None, prev_format: int | None) -> str | None:
    """The first event of a run against the last of the run before (its time, its format)."""
    if (r.first_format or 0) >= 2 and prev_at is not None and r.first_at is not None and r.first_at < prev_at:
        return f"it is dated before the event before it (backdated: {r.first_at} < {prev_at})"
    if r.first_format == 1 and (prev_format or 0) >= 2:
        return f"it is in the old event format (1) after an event in format {prev_format}"
    if r.first_format == 2 and prev_format == 3 and not r.first_local:
        return DOWNGRADE
    return None


DOWNGRADE = "it is in an older event format (2) after an event in format 3 (a downgrade)"
