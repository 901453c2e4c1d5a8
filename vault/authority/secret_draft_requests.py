"""The values of a secret's write through the team server: a draft, then a commit.

docs/server.md §4 rule 2. In-process the keyholder encrypts a new version inside the
authority's unit of work (``SecretSeal.encrypt``), for the secret's id and version number
assigned there. Over HTTPS nothing the keyholder signs or encrypts may name a number the
commit's unit assigns, so the write is two requests, with no state on the server between
them but an id reservation:

1. **The draft** (``secrets.add_draft`` / ``secrets.update_draft``): what the keyholder needs
   to encrypt the next version — ``SecretDraft``: the rows to verify (``SecretRows``, as the
   in-process seal is shown them: its own row, the grant head and its signer, the client,
   the secret, the current version, the signed record and sealed copy of the client key to
   write under), the next version's number, and ``digest`` (``draft_digest``: SHA-256 over
   a label, the number and the canonical encoding of the rows). An add's draft reserves the
   new secret's id (``id_reservations``, five minutes); an update's draft releases the current
   version's metadata, so it appends a ``secret-view`` event (no log, no key) and withholds
   the current password blob (an update through the server always brings a new password).
2. **The commit** (``secrets.add`` / ``secrets.update``): the keyholder's ``NewVersion`` for
   that secret id and number, and the digest of the draft it verified. The server recomputes
   the draft in the commit's unit, under its locks: another digest is 409 ``stale-draft``
   (``STALE_DRAFT``: the keyholder drafts once more), and nothing is written; so is a commit
   naming a secret id not reserved for its caller, or whose reservation expired.

A commit names its caller and client as every request through the server does (``caller``,
``client_id``: what ``audit verify`` compares with the event) and never an action: the route
says it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from vault.authority.requests import Caller, NewVersion
from vault.authority.secret_requests import SecretRows, SecretTarget

STALE_DRAFT = "the draft this commit was made on is stale: the secret or its client key changed since"
LABEL_DRAFT_DIGEST = b"credvault/v1/draft-digest/secret"
RESERVATION_SECONDS = 300
RESERVED_SECRET_ID = "secret"  # noqa: S105 (a table name: id_reservations.kind of a secret id)
WITHHELD = b""  # a draft's current password blob: not sent (an update through the server sets a new one)


def draft_digest(rows: SecretRows, next_version: int) -> bytes:
    """SHA-256 of the label, ``next_version`` and the canonical encoding of ``rows`` (every field)."""
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_DRAFT_DIGEST + next_version.to_bytes(8, "big") + codec.encode(rows)).digest()


@dataclass(frozen=True)
class AddDraftRequest:
    """Reserve an id for a new secret of ``kind`` under ``target``'s name tag, and draft its first version."""

    target: SecretTarget
    kind: str

    @property
    def caller(self) -> Caller:
        return self.target.caller

    @property
    def client_id(self) -> int | None:
        return self.target.client_id


@dataclass(frozen=True)
class UpdateDraftRequest:
    """Draft the next version of the secret under ``target``'s name tag; ``keep_password``: the
    draft answers the current password's blob too (an update that keeps it, on record as a
    ``secret-view`` of the password: ``VIEW_KEPT``)."""

    target: SecretTarget
    keep_password: bool = False

    @property
    def caller(self) -> Caller:
        return self.target.caller

    @property
    def client_id(self) -> int | None:
        return self.target.client_id


@dataclass(frozen=True, repr=False)
class SecretDraft:
    """What the keyholder verifies and encrypts for: the rows, the next version's number, the
    digest the commit carries; ``seq``: an update draft's ``secret-view`` event (0 for an add);
    ``expires_at``: when an add's reserved id lapses (None for an update)."""

    rows: SecretRows
    next_version: int
    digest: bytes
    seq: int
    expires_at: dt.datetime | None

    def __repr__(self) -> str:
        return f"SecretDraft(secret={self.rows.secret.id}, next={self.next_version})"


@dataclass(frozen=True, repr=False)
class AddCommit:
    """The new secret's first version, encrypted for the reserved ``secret_id``."""

    target: SecretTarget
    kind: str
    secret_id: int
    new_version: NewVersion
    draft_digest: bytes

    @property
    def caller(self) -> Caller:
        return self.target.caller

    @property
    def client_id(self) -> int | None:
        return self.target.client_id

    def __repr__(self) -> str:
        return f"AddCommit(engineer={self.caller.engineer_id}, secret={self.secret_id})"


@dataclass(frozen=True, repr=False)
class UpdateCommit:
    """The next version of secret ``secret_id``; ``kind`` None keeps it; ``password_changed``
    clears the must-change flag."""

    target: SecretTarget
    kind: str | None
    password_changed: bool
    secret_id: int
    new_version: NewVersion
    draft_digest: bytes

    @property
    def caller(self) -> Caller:
        return self.target.caller

    @property
    def client_id(self) -> int | None:
        return self.target.client_id

    def __repr__(self) -> str:
        return f"UpdateCommit(engineer={self.caller.engineer_id}, secret={self.secret_id})"
