"""A passphrase change over HTTPS (``engineers.change_passphrase``): the values of its commit.

In-process, ``EngineerAuthority.change_passphrase`` shows the engineer's keyholder their stored
key record inside its unit and stores what the keyholder re-locked (``EngineerSeal.relock``).
Through the team server the keyholder reads its record first (``engineers.passphrase_draft``:
the ``PassphraseRequest``, answered ``KeyRecordDraft``: the caller's verified row and the record
as stored, no event), re-locks it on the engineer's machine (opened with the old passphrase,
the keys inside compared with the session's) and sends ``PassphraseCommit``: the new record and
``draft_digest``, the SHA-256 of the record it re-locked. The server recomputes that digest over
the stored record in the commit's unit, under its lock, and refuses another (``STALE_RECORD``,
409 ``stale-draft``); otherwise it stores the new record as in-process and appends the
``passphrase-change`` event in format 3. The event keeps the request's digest and signature,
not its body (docs/format.md §8.2): a key record, even locked, is never written to the log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vault.authority.engineer_requests import RELOCK
from vault.authority.requests import Caller

LABEL_RECORD_DIGEST = b"credvault/v1/draft/key-record"
STALE_RECORD = "the key record this passphrase change was made on is stale: it changed on the server since it was read"


def record_digest(key_record: bytes) -> bytes:
    """SHA-256 of the label and the stored key record's bytes (what the commit was made on)."""
    return hashlib.sha256(LABEL_RECORD_DIGEST + key_record).digest()


@dataclass(frozen=True, repr=False)
class PassphraseCommit:
    """Store ``key_record`` (the caller's own, re-locked on their machine under a new passphrase)
    in place of the stored record whose ``record_digest`` is ``draft_digest``."""

    caller: Caller
    org_pin: bytes
    key_record: bytes
    draft_digest: bytes
    action: str = RELOCK

    def __repr__(self) -> str:
        return "PassphraseCommit(<key record>)"
