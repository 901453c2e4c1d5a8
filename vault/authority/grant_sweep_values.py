"""The values of an admin's sweep of expired grants through the team server (``grants.sweep_draft``,
``grants.sweep``): the draft with its digest, the commit (``authority/grant_sweep_drafts.py``)."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from vault.authority.grant_requests import SweepRows, SweepSigned
from vault.authority.requests import Caller

LABEL_SWEEP_DIGEST = b"credvault/v1/draft-digest/sweep"
STALE_SWEEP = "the sweep's draft is stale: a grant or a copy changed since, or the draft is too old; nothing written"
WINDOW = 300  # seconds a draft's revocation time may lie before the commit's
DIGEST_BYTES = 32


def sweep_digest(draft: SweepRows) -> bytes:
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_SWEEP_DIGEST + codec.encode(draft)).digest()


@dataclass(frozen=True, repr=False)
class SweepDrafted:
    """What the sweep would show the keyholder (``draft``; no ledger: nothing to do) and its digest."""

    draft: SweepRows
    digest: bytes

    def __repr__(self) -> str:
        return f"SweepDrafted(ledgers={len(self.draft.ledgers)})"


@dataclass(frozen=True, repr=False)
class SweepCommit:
    """The sweep again, dated ``revoked_at`` (the draft's), with what the keyholder signed for it."""

    caller: Caller
    org_pin: bytes
    action: str
    revoked_at: dt.datetime
    digest: bytes
    signed: SweepSigned

    def __repr__(self) -> str:
        return f"SweepCommit(engineer={self.caller.engineer_id})"
