"""Reading the audit log, where the engineer's keys are: every page checked before it is shown.

``AuditKeyholder.pages`` asks the authority (through the transport) for a stream of pages
(``PageRequest``, each answered in its own short read unit) and hands each page on only
once ``PageCheck`` has found nothing wrong with it; what it finds wrong raises
``IntegrityError`` naming the event, and nothing of that page is shown. What is checked:

* the stream: every page of this vault, ending where the first page said (the head then),
  following the request (``after``), its events in strictly increasing ``seq`` within it:
  an event dropped in the middle of the chain, moved, or shown twice is caught by
  continuity (below), a reordered or repeated one here;
* the filters: every event is one the request asked for (its client, its engineer, its
  time, its action): an event of another client or engineer is refused;
* each event's hash, recomputed from its fields and the hash it links to (format 2, or an
  old event in its canonical format 1): a changed field, a forged detail blob, is caught;
* an unfiltered stream is the chain itself: from event 1 (its link the genesis hash) or
  from where a limit starts (``--limit N``: exactly N before the head), each event links to
  the one before it, without a gap, up to the head; whenever the stream stops (a last page,
  or an empty one) it must have reached the head; an empty page that says more follows is
  refused (it would end any stream silently);
* signatures: events next to each other in the chain (``seq`` one apart) must link; a run
  of such events may stand on one signature only while every signed event in it is of the
  same signer (engineer, key generation): at each change of signer, and at each gap, the
  last event of that signer's stretch is verified under that signer's certified key. So a
  signer vouches, through the links, only for their own events (and the unsigned ones
  among them), never for another engineer's; the checks of a page are made in one batch
  (``chain.first_bad_signature``): an unfiltered page of one signer costs one check, a
  filtered one (gaps) one per run;
* key lifetimes: every signed event is signed within its key's certified lifetime in the
  chain (``Signers.key_lifetimes``, as ``audit verify``): a removed engineer's key, or a
  key used before the chain certified it, is refused;
* enrolments: an ``enroll`` is signed by the key it enrols (in its details); once that slot
  is certified, the certified key and an enrolment before its certification; an enrolment
  nobody certified is verified under its own key, vouches for itself only (the events
  before it stand on their own signers), is shown as it was before the split (signed, so
  not marked unauthenticated), and is never a head a checkpoint is signed over;
* a filtered stream has gaps: an event dropped between two that a filter keeps leaves
  no trace in it: ``audit verify`` (the whole chain) finds it; ``report at-risk``
  verifies the chain first.

An unsigned event is shown marked ``unauthenticated`` (as before the split) if its action is
one that is written unsigned; any other unsigned event is refused.

An event of format 3 (appended by the team server, docs/format.md §8.2) stands on its own:
its hash in format 3, the server's signature under a server key the organisation certified
(``server_keys``, read once, when the first such event is met), and the engineer's signed
request it keeps, under that engineer's key within its lifetime (``auditchain.server_problem``,
as ``audit verify``); it closes the stretch before it. A request used twice and a format-2
event after a format-3 one are ``audit verify``'s to find (the whole chain).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from vault.authority.audit_requests import (
    CHECKPOINT,
    LOG,
    EventPage,
    EventQuery,
    HeadAnswer,
    HeadRequest,
    PageRequest,
)
from vault.authority.journal import LEGACY_UNSIGNED_ACTIONS, UNSIGNED_ACTIONS
from vault.authority.requests import Caller
from vault.crypto import chain
from vault.errors import IntegrityError
from vault.keyholder.auditchain import ServerKeys, server_problem
from vault.storage.repositories.audit import ChainedRow
from vault.storage.repositories.paging import PAGE

# (engineer id, key generation) -> (signing public key, first seq it signs, seq it stops at):
# certified (verified by the keyholder) and its lifetime read from the chain (Signers.key_lifetimes)
SignerKeys = Mapping[tuple[int | None, int], tuple[bytes, int, int]]


class AuditTransport(Protocol):
    def page(self, request: PageRequest) -> EventPage: ...
    def head(self, request: HeadRequest) -> HeadAnswer: ...


class PageCheck:
    """The checks on the pages of one stream (module docstring)."""

    def __init__(
        self,
        query: EventQuery,
        vault_id: bytes,
        signer_keys: Callable[[bool], SignerKeys],
        server_keys: Callable[[], ServerKeys] = dict,
    ) -> None:
        self.query, self.vault_id, self.signer_keys, self.server_keys = query, vault_id, signer_keys, server_keys
        self.servers: ServerKeys | None = None  # read when the first format-3 event is met
        self.codec = chain.EventCodec(vault_id)
        self.keys = signer_keys(False)
        self.until: int | None = None
        self.until_hash = b""
        self.last_seq: int | None = None  # the last event shown, and its hash
        self.last_hash = b""
        self.actions = None if query.actions is None else frozenset(query.actions)
        self.unknown: set[tuple[int, int]] = set()  # keys not found even after a fresh read
        self.stretch: tuple[ChainedRow, bytes] | None = None  # the current signer's last event, their key
        self.jobs: list[chain.SignatureJob] = []  # the page's signature checks, made at its end

    def _bad(self, seq: int | None, problem: str) -> IntegrityError:
        where = f"event {seq}" if seq is not None else "a page"
        return IntegrityError(
            f"the audit log as the store returned it does not verify: {where}: {problem}",
            hint="run `credvault audit verify --full`; the database may have been changed outside credvault",
        )

    def page(self, request: PageRequest, page: EventPage) -> None:
        """Raise IntegrityError unless ``page`` is a true answer to ``request``."""
        if page.vault_id != self.vault_id:
            raise self._bad(None, "it is of another vault")
        if self.until is None:
            self.until, self.until_hash = page.until, page.until_hash
            if request.limit is None and page.after != request.after:
                raise self._bad(None, "it does not start where it was asked to")
            newest = request.limit is not None and not self.query.filtered
            if newest and page.after != max(0, page.until - (request.limit or 0)):
                raise self._bad(None, "it does not start where the limit asked for")
            if not request.after <= page.after <= page.until:
                raise self._bad(None, "it starts outside the log")
        elif page.until != self.until or page.after != request.after:
            raise self._bad(None, "it is not the next page of this stream")
        previous = page.after
        for event in page.events:
            if event.seq <= previous:
                raise self._bad(event.seq, "the events are out of order or repeated")
            if event.seq > page.until:
                raise self._bad(event.seq, "it lies beyond the end of the stream")
            previous = event.seq
            self._wanted(event)
            fmt = self._hashed(event)
            if not self.query.filtered:
                self._linked(event, page.after)
            adjacent = self.last_seq is not None and event.seq == self.last_seq + 1
            if adjacent and event.prev_hash != self.last_hash:
                raise self._bad(event.seq, "it does not link to the event before it")
            if not adjacent:
                self._close_stretch()  # a gap: the run before it stands on its signatures
            self._add(event, fmt)
            self.last_seq, self.last_hash = event.seq, event.hash
        self._close_stretch()
        self._flush()
        if page.more and not page.events:
            raise self._bad(page.after + 1, "an empty page that says more follows (the stream cut short)")
        if not page.more and not self.query.filtered and not self._at_head(page):
            first = page.after + 1 if self.last_seq is None else self.last_seq + 1
            raise self._bad(first, "the log ends before the chain's head (events left out?)")

    def _at_head(self, page: EventPage) -> bool:
        if self.last_seq is None:
            return page.until == page.after
        return (self.last_seq, self.last_hash) == (self.until, self.until_hash)

    def _add(self, e: ChainedRow, fmt: int) -> None:
        """One event into the current stretch: a signed event by the stretch's signer extends
        it; another signer closes it (its last event verified under its own key); an
        unsigned one is checked as its action is written and covered by the next signature."""
        if fmt == 3:
            self._server_signed(e)
            return
        if e.signature is None:
            self._signed(e, fmt)
            return
        slot = (e.engineer_id, e.key_generation)
        entry = self._entry(e)
        if e.action == "enroll":
            public = self._enrolled(e, entry)
            self._close_stretch()
            if entry is None:  # uncertified: its signature covers itself only, never the run before it
                self._verify(e, public)
                return
        elif entry is None:
            raise self._bad(e.seq, "it is signed by an unknown or unverified engineer key")
        elif not entry[1] <= e.seq < entry[2]:
            raise self._bad(e.seq, "it is signed outside its key's certified lifetime")
        if self.stretch is not None and (self.stretch[0].engineer_id, self.stretch[0].key_generation) != slot:
            self._close_stretch()
        self.stretch = (e, entry[0])

    def _server_signed(self, e: ChainedRow) -> None:
        """A format-3 event: the server's signature and the engineer's request, on its own."""
        self._close_stretch()
        self._entry(e)  # the engineer's key, read afresh if certified since the stream began
        if self.servers is None:
            self.servers = self.server_keys()
        row = (*e[:10], e.prev_hash, e.hash, e.signature, *e[13:])
        problem = server_problem(row, self.codec, self.keys, self.servers, e.seq, e.hash)
        if problem is not None:
            raise self._bad(e.seq, problem)

    def _close_stretch(self) -> None:
        """The last event of the current signer's stretch, to verify under that signer's key."""
        if self.stretch is not None:
            self._verify(*self.stretch)
            self.stretch = None

    def _flush(self) -> None:
        """The page's signature checks, in one batch."""
        jobs, self.jobs = self.jobs, []
        bad = chain.first_bad_signature(self.vault_id, jobs) if jobs else None
        if bad is not None:
            raise self._bad(bad, "its signature is invalid")

    def _wanted(self, e: ChainedRow) -> None:
        q = self.query
        if q.client_id is not None and e.client_id != q.client_id:
            raise self._bad(e.seq, "it is not of the client asked for")
        if q.engineer_id is not None and e.engineer_id != q.engineer_id:
            raise self._bad(e.seq, "it is not of the engineer asked for")
        if q.since_us is not None and e.at_us < q.since_us:
            raise self._bad(e.seq, "it is older than asked for")
        if self.actions is not None and e.action not in self.actions:
            raise self._bad(e.seq, "it is not of an action asked for")

    def _hashed(self, e: ChainedRow) -> int:
        """The event's format (3 for the server's, 2, or 1 for an old event), its hash
        recomputed, else refused."""
        if e.server_key_version is not None:
            fields = (e.seq, e.at_us, e.engineer_id, e.key_generation, e.action, e.client_id, e.secret_id)
            row = (*fields, e.key_version, e.details_blob, e.details_json)
            if self.codec.audit_event_hash_v3(row, e.request_id, e.request_digest, e.prev_hash) != e.hash:
                raise self._bad(e.seq, "its contents were changed")
            return 3
        for fmt, recompute in ((2, self.codec.audit_event_hash), (1, self.codec.audit_event_hash_v1)):
            if fmt == 1 and (e.details_blob == b"" or e.details_json == ""):
                break  # format 1 stored NULL, never an empty value: not its canonical form
            digest = recompute(
                e.seq, e.at_us, e.engineer_id, e.key_generation, e.action, e.client_id, e.secret_id,
                e.key_version, e.details_blob, e.details_json, e.prev_hash,
            )  # fmt: skip
            if digest == e.hash:
                return fmt
        raise self._bad(e.seq, "its contents were changed")

    def _linked(self, e: ChainedRow, start: int) -> None:
        if self.last_seq is None:
            if start == 0 and (e.seq, e.prev_hash) != (1, chain.GENESIS):
                raise self._bad(e.seq, "the log does not begin with the chain's first event")
            if start > 0 and e.seq != start + 1:
                raise self._bad(start + 1, "it is missing")
            return
        if e.seq != self.last_seq + 1:
            raise self._bad(self.last_seq + 1, "it is missing")
        if e.prev_hash != self.last_hash:
            raise self._bad(e.seq, "it does not link to the event before it")

    def event(self, e: ChainedRow) -> None:
        """One event on its own: its hash recomputed, its signature verified (or unsigned
        as its action is written) under its signer's certified key within its lifetime,
        else IntegrityError. An enrolment its organisation has not certified is refused:
        it vouches only for itself."""
        fmt = self._hashed(e)
        if e.signature is not None and e.action == "enroll" and self._entry(e) is None:
            raise self._bad(e.seq, "it is an enrolment the organisation has not certified")
        self._add(e, fmt)
        self._close_stretch()
        self._flush()

    def _signed(self, e: ChainedRow, fmt: int) -> None:
        """An unsigned event: only as its action is written."""
        if e.action not in (UNSIGNED_ACTIONS if fmt == 2 else LEGACY_UNSIGNED_ACTIONS):
            raise self._bad(e.seq, "it is not signed")

    def _verify(self, e: ChainedRow, public: bytes) -> None:
        self.jobs.append((e.seq, public, e.signature or b"", e.hash))

    def _enrolled(self, e: ChainedRow, entry: tuple[bytes, int, int] | None) -> bytes:
        """The key an ``enroll`` names (it is signed by the key it enrols): once certified,
        the certified key, and the enrolment before its certification."""
        try:
            public = bytes.fromhex(json.loads(e.details_json or "{}")["signing_public"])
        except (ValueError, TypeError, KeyError):
            raise self._bad(e.seq, "the enrolment does not name the key it was signed with") from None
        if entry is not None and entry[0] != public:
            raise self._bad(e.seq, "the enrolment's key is not the key the organisation certified for it")
        if entry is not None and e.seq >= entry[1]:
            raise self._bad(e.seq, "the enrolment comes after its key was certified")
        return public

    def _entry(self, e: ChainedRow) -> tuple[bytes, int, int] | None:
        """The signer's certified key and its lifetime (first, end) in the chain, or None."""
        if e.engineer_id is None:
            return None
        slot = (e.engineer_id, e.key_generation)
        if slot not in self.keys and slot not in self.unknown:
            self.keys = self.signer_keys(True)  # a key certified since the stream began: read once
            if slot not in self.keys:
                self.unknown.add(slot)
        return self.keys.get(slot)


class AuditKeyholder:
    """Streams of verified pages of the audit log, for the engineer ``caller`` names."""

    def __init__(
        self,
        transport: AuditTransport,
        vault_id: Callable[[], bytes],
        signer_keys: Callable[[bool], SignerKeys],
        size: int = PAGE,
        server_keys: Callable[[], ServerKeys] = dict,
    ) -> None:
        self.transport, self.vault_id, self.signer_keys, self.size = transport, vault_id, signer_keys, size
        self.server_keys = server_keys

    def __repr__(self) -> str:
        return "AuditKeyholder()"

    def pages(self, query: EventQuery, limit: int | None = None) -> Iterator[tuple[ChainedRow, ...]]:
        """The events ``query`` asks for, oldest first, a verified page at a time; ``limit``:
        the newest ``limit`` of them. Each page is asked for only when the one before is
        consumed: nothing is held open in between."""
        request = PageRequest(query, after=0, until=None, size=self.size, limit=limit)
        check: PageCheck | None = None
        while True:
            page = self.transport.page(request)
            if check is None:
                check = PageCheck(query, self.vault_id(), self.signer_keys, self.server_keys)
            check.page(request, page)
            if page.events:
                yield page.events
            if not page.more or not page.events:
                return
            request = PageRequest(query, after=page.events[-1].seq, until=page.until, size=self.size)

    def checkpoint_head(self, caller: Caller) -> tuple[bytes, int, bytes]:
        """The head a checkpoint is signed over, (vault id, seq, hash), once its event is
        verified: of this vault, its hash recomputed and equal to the head's, its signature
        under its signer's certified key. A head the authority made up is refused."""
        answer = self.transport.head(HeadRequest(CHECKPOINT, caller))
        query = EventQuery(LOG, caller, engineer_id=caller.engineer_id)
        check = PageCheck(query, self.vault_id(), self.signer_keys, self.server_keys)
        if answer.vault_id != check.vault_id:
            raise check._bad(None, "it is of another vault")
        event = answer.event
        if answer.seq == 0:
            if answer.hash != chain.GENESIS or event is not None:
                raise check._bad(0, "an empty chain has the genesis hash and no event")
        elif event is None or (event.seq, event.hash) != (answer.seq, answer.hash):
            raise check._bad(answer.seq, "it is not the chain's head")
        else:
            check.event(event)
        return answer.vault_id, answer.seq, answer.hash
