"""The values of an admin's invitation through the team server: a draft, then a signed commit.

docs/server.md (session 13, helper B) and docs/format.md §5 ("Signed invitation"); the authority
is ``invite_drafts.py``, the keyholder's transport ``transport/https_invite.py``. In-process the
keyholder signs inside the authority's unit (``EngineerSeal.sign_invitation``), over the engineer's
row as it makes or resets it; over HTTPS the draft shows the same ``InvitationDraft`` (a new
engineer's id reserved), and the commit carries the ``SignedInvitation`` the keyholder made for it
and the draft's digest. The invite secret never leaves the admin's machine: the server is given it
only sealed to the recovery key (``seal``) and as the public key it derives (``auth_public``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from vault.authority.engineer_requests import INVITE, InvitationDraft, SignedInvitation
from vault.authority.requests import Caller

STALE_INVITE = "the draft this invitation was signed over is stale: the engineer or the vault's keys changed since"
LABEL_INVITE_DRAFT_DIGEST = b"credvault/v1/draft-digest/invite"
RESERVED_ENGINEER_ID = "engineer"
RESERVATION_SECONDS = 300


def draft_digest(draft: InvitationDraft) -> bytes:
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_INVITE_DRAFT_DIGEST + codec.encode(draft)).digest()


@dataclass(frozen=True, repr=False)
class InviteDraft:
    """What the invitation will sign (a new engineer's id reserved until ``expires_at``) and its digest."""

    draft: InvitationDraft
    digest: bytes
    expires_at: dt.datetime | None

    def __repr__(self) -> str:
        return f"InviteDraft(engineer={self.draft.engineer_id})"


@dataclass(frozen=True, repr=False)
class InviteCommit:
    """The keyholder's signed invitation for the drafted engineer."""

    caller: Caller
    name: str
    role: str
    expires_at: int
    org_pin: bytes
    engineer_id: int
    signed: SignedInvitation
    draft_digest: bytes
    action: str = INVITE

    def __repr__(self) -> str:
        return f"InviteCommit(engineer={self.engineer_id})"
