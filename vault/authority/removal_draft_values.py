"""The values of an engineer's removal through the team server: a draft, then a signed commit.

docs/server.md (session 14, helper B) and docs/format.md §5 ("An engineer's removal through the
server"); the authority is ``removal_drafts.py``, the keyholder's transport
``transport/https_engineer_writes.py``. In-process the removal keyholder is shown a ``RemovalDraft``
inside the authority's unit (``RemovalSeal.remove``), and each client-key rotation the removal starts
shows the rotation keyholder a ``StartDraft`` (``StartSeal.new_key``); over HTTPS the draft shows them
all at once: the starts as they will be made once the engineer is removed (their grantees without
them). The commit carries the keyholder's ``Removal`` (the revocations and the disabled certificate),
the revocation time it signed, one ``NewClientKey`` per start, and the digest of the draft.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vault.authority.engineer_requests import REMOVE, Removal, RemovalDraft
from vault.authority.requests import Caller
from vault.authority.rotation_requests import NewClientKey, StartDraft

STALE_REMOVAL = "the draft this removal was signed over is stale: the engineer, a grant or a client key changed since"
LABEL_REMOVAL_DRAFT_DIGEST = b"credvault/v1/draft-digest/removal"


@dataclass(frozen=True, repr=False)
class RemovalDraftRows:
    """What the removal will sign and start: the removal draft and one start per client."""

    removal: RemovalDraft
    starts: tuple[StartDraft, ...]

    def __repr__(self) -> str:
        return f"RemovalDraftRows(engineer={self.removal.engineer.id}, starts={len(self.starts)})"


def draft_digest(rows: RemovalDraftRows) -> bytes:
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_REMOVAL_DRAFT_DIGEST + codec.encode(rows)).digest()


@dataclass(frozen=True, repr=False)
class RemovalDraftAnswer:
    """The server's draft of a removal and its digest; nothing is written."""

    rows: RemovalDraftRows
    digest: bytes

    def __repr__(self) -> str:
        return f"RemovalDraftAnswer(engineer={self.rows.removal.engineer.id})"


@dataclass(frozen=True, repr=False)
class RemovalCommit:
    """The keyholder's signed removal of the drafted engineer and the new key of each client started."""

    caller: Caller
    name: str
    org_pin: bytes
    engineer_id: int
    revoked_at: int
    removal: Removal
    new_keys: tuple[tuple[int, NewClientKey], ...]  # (client id, its new version)
    draft_digest: bytes
    action: str = REMOVE

    def __repr__(self) -> str:
        return f"RemovalCommit(engineer={self.engineer_id}, starts={len(self.new_keys)})"
