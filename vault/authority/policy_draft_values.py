"""The values of an admin's policy change through the team server: a draft, then a signed commit.

docs/server.md §4 rule 2 and docs/format.md §5 ("Grants through the team server"); the
authority is ``policy_drafts.py``, the keyholder's transport ``transport/https_policy_writes.py``.
In-process the keyholder signs inside the authority's unit (``PolicySeal.sign``); over HTTPS:

* ``PolicySetDraftRequest`` names the client twice, by the id the admin's keyholder verified and
  by its slug tag (the server refuses a pair that is not one client's); the answer is the
  ``PolicyRows`` the in-process seal is shown (``PolicyDraft``) and its digest;
* ``PolicyCommit`` carries the new row as the keyholder signed it (``LABEL_SIG_POLICY``), the
  ``policy-set`` details sealed to the commit's request id under the client's current audit
  key, and the draft's digest (the stored policy unchanged since it was shown).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vault.authority.policy_requests import SET, PolicyRows
from vault.authority.requests import Caller
from vault.storage.rows import PolicyRow

STALE_POLICY = "the draft this policy was signed over is stale: the client's stored policy changed since"
LABEL_POLICY_DRAFT_DIGEST = b"credvault/v1/draft-digest/policy"


def draft_digest(rows: PolicyRows) -> bytes:
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_POLICY_DRAFT_DIGEST + codec.encode(rows)).digest()


@dataclass(frozen=True)
class PolicySetDraftRequest:
    """An admin's ``policy-set`` draft of the client ``client_id``, which ``slug_tag`` names."""

    caller: Caller
    slug_tag: bytes
    client_id: int
    org_pin: bytes
    action: str = SET


@dataclass(frozen=True, repr=False)
class PolicyDraft:
    """The draft a policy change is signed over (the client's stored policy as stored) and its digest."""

    rows: PolicyRows
    digest: bytes

    def __repr__(self) -> str:
        return f"PolicyDraft({self.rows!r})"


@dataclass(frozen=True, repr=False)
class PolicyCommit:
    """The keyholder's signed row for the drafted client and the event's sealed details."""

    caller: Caller
    slug_tag: bytes
    client_id: int
    org_pin: bytes
    row: PolicyRow
    details_key_version: int
    details_blob: bytes
    draft_digest: bytes
    action: str = SET

    def __repr__(self) -> str:
        return f"PolicyCommit(client={self.client_id})"
