"""The values of an admin's client purge through the team server: a draft, then a signed commit.

docs/server.md §4 rule 2 and docs/format.md §10; the authority is ``purge_drafts.py``, the
keyholder's transport ``transport/https_purge.py``. In-process the keyholder admits the draft and
signs the receipt inside the authority's unit (``PurgeSeal``); over HTTPS:

* ``PurgeClientDraftRequest`` names the client twice, by the id the admin's keyholder verified and
  by its slug tag (the server refuses a pair that is not one client's), and the request reference;
  the answer is the ``PurgeRows`` the in-process seal admits, the receipt the server will store
  (its id reserved, dated by the reservation, unsigned: no fingerprints, no event yet) and a
  digest of both;
* ``PurgeClientCommit`` carries what the keyholder signed for that receipt: the destroyed key
  versions' fingerprints and the signature over the receipt with the commit's request id
  (``LABEL_SIG_RECEIPT_V3``), and the draft's digest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from vault.authority.purge_requests import CLIENT, PurgeRows, ReceiptRow
from vault.authority.requests import Caller

STALE_PURGE = "the draft this purge was signed over is stale: its reserved receipt lapsed, or the client changed since"
LABEL_PURGE_DRAFT_DIGEST = b"credvault/v1/draft-digest/purge"
RESERVED_RECEIPT_ID = "purge-receipt"
RESERVATION_SECONDS = 300
PURGE_CLIENT = "purge-client"  # the commit's event


def draft_digest(rows: PurgeRows, receipt: ReceiptRow) -> bytes:
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_PURGE_DRAFT_DIGEST + codec.encode(rows) + codec.encode(receipt)).digest()


@dataclass(frozen=True)
class PurgeClientDraftRequest:
    """An admin's draft of the purge of ``client_id``, which ``slug_tag`` names."""

    caller: Caller
    slug_tag: bytes
    client_id: int
    request_ref: str
    org_pin: bytes
    kind: str = CLIENT


@dataclass(frozen=True, repr=False)
class PurgeDraft:
    """What will be destroyed, the receipt that will say so (unsigned) and their digest."""

    rows: PurgeRows
    receipt: ReceiptRow
    digest: bytes
    expires_at: dt.datetime

    def __repr__(self) -> str:
        return f"PurgeDraft({self.rows!r}, receipt={self.receipt.id})"


@dataclass(frozen=True, repr=False)
class PurgeClientCommit:
    """The keyholder's fingerprints and signature for the drafted receipt."""

    caller: Caller
    slug_tag: bytes
    client_id: int
    request_ref: str
    org_pin: bytes
    receipt_id: int
    fingerprints: tuple[str, ...]
    signature: bytes
    draft_digest: bytes
    action: str = PURGE_CLIENT

    def __repr__(self) -> str:
        return f"PurgeClientCommit(client={self.client_id}, receipt={self.receipt_id})"
