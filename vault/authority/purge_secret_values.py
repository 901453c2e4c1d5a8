"""The values of an admin's purge of one secret through the team server: a draft, then a signed commit.

docs/server.md (session 14, helper C) and docs/format.md §10; the authority is
``purge_secret_drafts.py``, the keyholder's transport ``transport/https_purge.py``. As a client's
purge (``purge_draft_values.py``), with what a secret's purge needs more:

* ``PurgeSecretDraftRequest`` names the client by the id the admin's keyholder verified and by its
  slug tag, and the secret by its name tag (made on the admin's machine under the client's lookup
  key: the server never sees the name). The draft reserves the receipt's id and, since its answer
  carries every version's wrapped data key with the server's layer removed (the keyholder
  fingerprints each data key), is on record first: its format-3 ``purge-secret-draft`` event
  commits before the layer comes off ("no log, no key"). The answer (``PurgeSecretDraft``) is the
  ``PurgeRows`` the in-process seal admits, the receipt the server will store (unsigned), the
  digest of both as stored (layered), and the secret's current version, whose metadata the
  admin's machine opens to check the name it asked for (a moved name tag is refused there).
* ``PurgeSecretCommit`` carries the secret's id from the draft, the data keys' fingerprints and
  the signature over the receipt with the commit's request id (``LABEL_SIG_RECEIPT_V3``), and the
  draft's digest; its event is ``purge-secret``, as in-process.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from vault.authority.purge_requests import PurgeRows, ReceiptRow
from vault.authority.requests import Caller
from vault.storage.rows import VersionRow

PURGE_SECRET_DRAFT = "purge-secret-draft"  # noqa: S105 (an event action) the draft's event: it releases the data keys it answers
PURGE_SECRET = "purge-secret"  # noqa: S105 (an event action) the commit's event (as in-process: ``purge-<kind>``)


@dataclass(frozen=True)
class PurgeSecretDraftRequest:
    """An admin's draft of the purge of the secret ``name_tag`` names in ``client_id`` (``slug_tag``)."""

    caller: Caller
    slug_tag: bytes
    client_id: int
    name_tag: bytes
    request_ref: str
    org_pin: bytes
    action: str = PURGE_SECRET_DRAFT


@dataclass(frozen=True, repr=False)
class PurgeSecretDraft:
    """What will be destroyed (its data keys' server layer removed), the unsigned receipt, their
    digest as stored, the secret's current version (for the name check) and the draft's event."""

    rows: PurgeRows
    receipt: ReceiptRow
    digest: bytes
    expires_at: dt.datetime
    current: VersionRow
    seq: int

    def __repr__(self) -> str:
        return f"PurgeSecretDraft({self.rows!r}, receipt={self.receipt.id})"


@dataclass(frozen=True, repr=False)
class PurgeSecretCommit:
    """The keyholder's fingerprints and signature for the drafted receipt of one secret's purge."""

    caller: Caller
    slug_tag: bytes
    client_id: int
    secret_id: int
    request_ref: str
    org_pin: bytes
    receipt_id: int
    fingerprints: tuple[str, ...]
    signature: bytes
    draft_digest: bytes
    action: str = PURGE_SECRET

    def __repr__(self) -> str:
        return f"PurgeSecretCommit(client={self.client_id}, secret={self.secret_id}, receipt={self.receipt_id})"
