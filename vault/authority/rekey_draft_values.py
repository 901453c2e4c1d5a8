"""The values of an engineer's re-key (a lost laptop) through the team server: a draft, a signed commit.

docs/server.md (session 14, helper B) and docs/format.md §5 ("An engineer's re-key through the
server"); the authority is ``rekey_drafts.py``, the keyholder's transport
``transport/https_engineer_writes.py``. In-process the keyholder is shown a ``RekeyDraft`` inside the
authority's unit (``EngineerSeal.rekey``), then the ``InvitationDraft`` of the new invitation
(``EngineerSeal.sign_invitation``); over HTTPS the draft shows both at once. When the engineer's
current key generation has no record yet, the invitation's previous key is that generation as the
record will be made, its certificate empty: the keyholder's ``Rekeyed.key_certificate`` fills it in on
the admin's machine. The commit carries that certificate, the signed invitation and the digest of the
draft. The invite secret never leaves the admin's machine (as for ``invite_draft_values.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vault.authority.adoption_draft_values import AdoptionDraft, AdoptionMade
from vault.authority.engineer_requests import ROTATE, InvitationDraft, RekeyDraft, SignedInvitation
from vault.authority.requests import Caller

STALE_REKEY = "the draft this re-key was signed over is stale: the engineer or the vault's keys changed since"
LABEL_REKEY_DRAFT_DIGEST = b"credvault/v1/draft-digest/rekey"


@dataclass(frozen=True, repr=False)
class RekeyDraftRows:
    """What the re-key will do: the engineer's row and key record state, and the invitation to sign."""

    rekey: RekeyDraft
    invitation: InvitationDraft
    adoption: AdoptionDraft | None = None  # what the engineer signed, for the caller to adopt

    def __repr__(self) -> str:
        return f"RekeyDraftRows(engineer={self.rekey.engineer.id})"


def draft_digest(rows: RekeyDraftRows) -> bytes:
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_REKEY_DRAFT_DIGEST + codec.encode(rows)).digest()


@dataclass(frozen=True, repr=False)
class RekeyDraftAnswer:
    """The server's draft of a re-key and its digest; nothing is written."""

    rows: RekeyDraftRows
    digest: bytes

    def __repr__(self) -> str:
        return f"RekeyDraftAnswer(engineer={self.rows.rekey.engineer.id})"


@dataclass(frozen=True, repr=False)
class RekeyCommit:
    """The keyholder's answers for the drafted re-key: the current generation's key-record certificate
    (None when it is recorded already) and the new invitation, signed by the caller."""

    caller: Caller
    name: str
    expires_at: int
    org_pin: bytes
    engineer_id: int
    key_certificate: bytes | None
    signed: SignedInvitation
    draft_digest: bytes
    action: str = ROTATE
    adopted: AdoptionMade | None = None  # the caller's adoption of what the engineer signed

    def __repr__(self) -> str:
        return f"RekeyCommit(engineer={self.engineer_id})"
