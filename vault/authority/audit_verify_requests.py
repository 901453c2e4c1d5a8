"""The values that cross between the keyholder and the authority to verify the audit chain.

``audit verify`` and the chain check of ``report at-risk`` read the whole chain, a page at a
time, through the audit noun's own values (``audit_requests.py``): a ``PageRequest`` of an
unfiltered ``EventQuery`` whose action is ``audit-verify`` or ``report-at-risk``, answered
by an ``EventPage`` of ``ChainedRow`` values (each event with its links). Every page names
the end of the stretch it belongs to (``until``): the head the verification began with, or
the end of one range of it.

What is new is ``PointsRequest``: the chain's recorded head, its newest event (an event
past the head is one no append made) and the few events a verification starts from (the
anchor of an incremental check and the event before it), in one short read. The answer
is rows and numbers only; the keyholder recomputes and checks everything it relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.authority.requests import Caller
from vault.storage.repositories.audit import ChainedRow

VERIFY, AT_RISK = "audit-verify", "report-at-risk"
CHAIN_ACTIONS = (VERIFY, AT_RISK)  # ``report-at-risk``: an admin's; ``audit-verify``: any engineer's
MAX_POINTS = 1_000  # events a points request may name at most (an anchor, checkpoints)


@dataclass(frozen=True)
class PointsRequest:
    """The head, the newest event's seq and the events at ``seqs`` (for an incremental
    check: its anchor and the event before it)."""

    action: str
    caller: Caller
    seqs: tuple[int, ...] = ()


@dataclass(frozen=True, repr=False)
class ChainPoints:
    """The chain's recorded head (0 and the genesis hash when there is none), the newest
    event's seq (0: none; read before the head, in the same read) and the events asked for
    that exist, by increasing seq."""

    vault_id: bytes
    head_seq: int
    head_hash: bytes
    newest: int
    events: tuple[ChainedRow, ...]

    def __repr__(self) -> str:
        return f"ChainPoints(head={self.head_seq}, newest={self.newest}, events={len(self.events)})"
