"""A confirmation over HTTPS (``engineers.confirm``): the values of its commit (docs/server.md §4 rule 2).

The confirming admin's keyholder reads the pending enrolment first (``engineers.pending_confirmation``,
a ``PENDING`` ``ConfirmRequest``: ``PendingRows``), certifies the keys shown (``Certification``)
and sends ``ConfirmCommit``: what it certified and ``draft_digest``, the SHA-256 of the pending
rows' canonical encoding as it was shown them. The server recomputes the rows in the commit's
unit, under its locks, and refuses another digest (``STALE_CONFIRM``, 409 ``stale-draft``: the
admin reads and compares again); otherwise it stores the certificate as in-process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vault.authority.carry_draft_values import CarryMade
from vault.authority.engineer_requests import CONFIRM, Certification, PendingRows
from vault.authority.requests import Caller

LABEL_CONFIRM_DIGEST = b"credvault/v1/draft/engineer-confirm"
STALE_CONFIRM = "the enrolment this confirmation was made on is stale: the engineer's row changed since it was read"


def pending_digest(pending: PendingRows) -> bytes:
    """SHA-256 of the label and the canonical encoding of ``pending`` (every field)."""
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_CONFIRM_DIGEST + codec.encode(pending)).digest()


@dataclass(frozen=True, repr=False)
class ConfirmCommit:
    """Certify the keys of ``name`` whose fingerprint a person compared (``ConfirmRequest``'s
    fields), with the admin's ``certification`` of the pending rows whose digest is ``draft_digest``."""

    caller: Caller
    name: str
    fingerprint: str
    shown: bool
    org_pin: bytes
    certification: Certification
    draft_digest: bytes
    action: str = CONFIRM
    carry: CarryMade | None = None  # a re-invitation's carry-over (carry_draft_values.py)

    def __repr__(self) -> str:
        return f"ConfirmCommit(name={self.name!r})"
