"""The values that cross between the keyholder and the authority, for reading the audit log.

As for the checkout and the secrets (``requests.py``, ``secret_requests.py``): frozen values
of ints, bytes, strings and the storage layer's plain rows, so that the same requests can
be serialised and cross a network later. A request names the action (``audit-log``,
``audit-export``, ``report-access``), the caller and the target: the filters by ids only
(a client's id, an engineer's id, a time, a set of actions), never a slug or a name.

The log is read a page at a time, each page its own request and its own short read unit
of work on the authority's side (keyset paging on ``seq``): a slow reader (``audit log |
less``) holds no transaction between pages. The first page fixes where the stream ends
(``EventPage.until``: the chain's head as it was then), so that the pages of one stream
describe one stretch of the chain whatever is appended meanwhile.

What the authority answers is event rows with their links (``ChainedRow``: the hash and
the previous hash), which the keyholder recomputes and checks before it shows anything
(keyholder/audit.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.authority.requests import Caller
from vault.storage.repositories.audit import ChainedRow

LOG, EXPORT, ACCESS = "audit-log", "audit-export", "report-access"
READ_ACTIONS = (LOG, EXPORT, ACCESS)
REVEAL_ACTIONS = ("reveal", "checkout", "secret-view")  # what ``report access`` reads
MAX_PAGE = 2_000  # events a page may ask for at most
MAX_ACTIONS = 64  # actions a filter may name at most


@dataclass(frozen=True)
class EventQuery:
    """Who reads which events: the filters a stream keeps from its first page to its last.

    ``engineer_id``: only that engineer's events (an engineer who is not an admin sees only
    their own: the authority reads them whatever this says); ``actions``: only those."""

    action: str
    caller: Caller
    client_id: int | None = None
    engineer_id: int | None = None
    since_us: int | None = None
    actions: tuple[str, ...] | None = None

    @property
    def filtered(self) -> bool:
        """Whether the events asked for may leave gaps in the chain (else: every event)."""
        return any(f is not None for f in (self.client_id, self.engineer_id, self.since_us, self.actions))


@dataclass(frozen=True)
class PageRequest:
    """One page of a stream: the events after ``after`` up to ``until`` (None: the first
    page, which fixes it at the head), at most ``size``. ``limit`` (first page only): start
    where the newest ``limit`` events that pass the filters start."""

    query: EventQuery
    after: int
    until: int | None
    size: int
    limit: int | None = None


@dataclass(frozen=True, repr=False)
class EventPage:
    """One page of events, oldest first, with where it started and where the stream ends.

    ``after``: the seq the page follows (the request's, or, for a first page with a limit,
    the one the authority found); ``until`` and ``until_hash``: the chain's head when the
    stream began; ``restricted_to``: the engineer whose events alone the caller may see
    (None: an admin, every engineer's); ``more``: a full page, so ask again after its last
    event."""

    vault_id: bytes
    after: int
    until: int
    until_hash: bytes
    restricted_to: int | None
    events: tuple[ChainedRow, ...]
    more: bool

    def __repr__(self) -> str:
        return f"EventPage(after={self.after}, until={self.until}, events={len(self.events)})"


HEAD, CHECKPOINT = "audit-head", "audit-checkpoint"


@dataclass(frozen=True)
class HeadRequest:
    """The chain's head: for ``audit head`` (no caller: it needs no session) or for a
    checkpoint, which the caller signs (a caller, checked first)."""

    action: str
    caller: Caller | None = None


@dataclass(frozen=True, repr=False)
class HeadAnswer:
    """The head (seq, hash; 0 and the genesis hash for an empty chain) and, for a checkpoint,
    the head event itself: the keyholder recomputes its hash and checks its signature before
    it signs a statement about it."""

    vault_id: bytes
    seq: int
    hash: bytes
    event: ChainedRow | None = None

    def __repr__(self) -> str:
        return f"HeadAnswer(seq={self.seq})"
