"""The values that cross between the keyholder and the authority, for grants.

Frozen values of ints, bytes, strings and the storage layer's plain rows, as for secrets
(``secret_requests.py``). A grant or a revoke is an admin's: it names the engineer (by
name: engineer names are stored in clear) and the client by its slug tag under the root
lookup key, never a slug; a grant also names its end and whether it has a reason: the
reason's text stays with the keyholder, which seals it into the audit event's details
(``GrantSeal.private_details``, called by the journal's sealing, never by the authority).

``GrantRows`` is the draft the keyholder is shown inside the authority's unit of work
(``admit``: a refusal writes nothing) and, read again after the writes, the committed
answer: the ledger rows as they now stand and how many client-key copies the engineer
now holds for the client, so that the keyholder can check that what it signed was done.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from vault.authority.requests import Caller, OrgKeyRow, SealedClientKey
from vault.crypto import signing
from vault.storage.rows import EngineerRow, GrantRow

GRANT, REVOKE, GRANTS_EXPIRED = "grant", "revoke", "grants-expired"
NO_ENGINEER = "no engineer of this name"
NO_CLIENT = "no client under this slug tag"
NO_GRANT = "the engineer holds no grant for this client"


def revocation_fields(vault_id: bytes, grant: GrantRow) -> tuple[signing.ContextItem, ...]:
    """What a revocation's signature covers (docs/format.md §5): the grants' keyholder and
    the sweep's sign it, the sweep's authority verifies it, ``Trust`` reads it."""
    assert grant.revoked_at is not None
    return (
        vault_id,
        grant.id,
        grant.engineer_id,
        grant.client_id,
        grant.seq or 0,
        int(grant.revoked_at.timestamp()),
        grant.revoked_by,
    )


@dataclass(frozen=True)
class GrantRequest:
    """Grant ``engineer`` the client under ``slug_tag`` (a new head of their ledger, replacing
    any unrevoked one) until ``until`` (seconds since the epoch; None: no end)."""

    caller: Caller
    engineer: str
    slug_tag: bytes
    until: int | None
    has_reason: bool  # the text is the keyholder's, sealed into the event's details
    org_pin: bytes
    action: str = GRANT

    def __repr__(self) -> str:
        return f"GrantRequest(engineer={self.engineer!r}, until={self.until})"


@dataclass(frozen=True)
class RevokeRequest:
    """Revoke every unrevoked grant of ``engineer`` for the client under ``slug_tag``."""

    caller: Caller
    engineer: str
    slug_tag: bytes
    org_pin: bytes
    action: str = REVOKE

    def __repr__(self) -> str:
        return f"RevokeRequest(engineer={self.engineer!r})"


@dataclass(frozen=True, repr=False)
class SealedCopy:
    """A client key sealed by the keyholder to the engineer granted (ciphertext)."""

    version: int
    blob: bytes

    def __repr__(self) -> str:
        return f"SealedCopy(version={self.version})"


@dataclass(frozen=True, repr=False)
class GrantRows:
    """The caller's row and pinned-key chain, the engineer acted on, the client (its id and
    slug blob), the grants revoked (the unrevoked rows of the ledger) at ``revoked_at``, a
    grant's new row (unsigned in the draft) with the client-key versions to seal to the
    engineer (each record with its recovery copy), and, in the answer, the copies the
    engineer holds for the client after the change."""

    seq: int  # the event's number; 0 in a draft
    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    engineer: EngineerRow
    client_id: int
    slug_blob: bytes
    grants: tuple[GrantRow, ...]
    revoked_at: dt.datetime
    new_grant: GrantRow | None
    client_keys: tuple[SealedClientKey, ...]
    copies: tuple[int, ...] = ()  # the answer's: versions sealed to the engineer for the client
    created_at: dt.datetime | None = None  # a grant's: when its row was made

    def __repr__(self) -> str:
        return f"GrantRows(seq={self.seq}, engineer={self.engineer.id}, client={self.client_id})"


# -- grants.maintain: the sweep of expired grants ----------------------------------------------


@dataclass(frozen=True)
class SweepRequest:
    """``grants-expired``: an admin's sweep of the grants past their end."""

    caller: Caller
    org_pin: bytes
    action: str = GRANTS_EXPIRED

    def __repr__(self) -> str:
        return f"SweepRequest(engineer={self.caller.engineer_id})"


@dataclass(frozen=True, repr=False)
class ExpiredLedger:
    """One (engineer, client) ledger holding an unrevoked row past its end: the engineer's row
    (None: gone), every row of the ledger newest first with its signer's row, and the
    client-key versions sealed to the engineer for the client."""

    engineer_id: int
    client_id: int
    engineer: EngineerRow | None
    grants: tuple[GrantRow, ...]
    signers: tuple[EngineerRow | None, ...]
    copies: tuple[int, ...]

    def __repr__(self) -> str:
        return f"ExpiredLedger(engineer={self.engineer_id}, client={self.client_id})"


@dataclass(frozen=True, repr=False)
class SweepRows:
    """The draft the keyholder signs from (``seq`` 0) and, read again after the writes, the
    committed answer: the caller's row and pinned-key chain, the time of the revocations,
    and each ledger with an expired row."""

    seq: int
    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    revoked_at: dt.datetime
    ledgers: tuple[ExpiredLedger, ...]

    def __repr__(self) -> str:
        return f"SweepRows(seq={self.seq}, ledgers={len(self.ledgers)})"


@dataclass(frozen=True, repr=False)
class SweepSigned:
    """What the keyholder signed for a sweep's draft: (grant id, revocation signature) of each
    row it verified as signed and past its end, and the (engineer id, client id) pairs left
    with no live verified grant, whose sealed copies go."""

    revocations: tuple[tuple[int, bytes], ...]
    drop: tuple[tuple[int, int], ...]

    def __repr__(self) -> str:
        return f"SweepSigned(revocations={len(self.revocations)}, drop={len(self.drop)})"


# -- grants.list ---------------------------------------------------------------------------------

GRANT_LIST = "grant-list"  # a read: no event (as before the split)


@dataclass(frozen=True)
class GrantListRequest:
    """The grant rows the caller may see (an admin: all; an engineer: their own), narrowed to
    the engineer named (engineer names are stored in clear) and to one client, named by the
    id the keyholder's checked lookup found (never its slug). ``known_key_versions``: the
    (client, version) keys the keyholder holds already."""

    caller: Caller
    engineer: str | None
    client_id: int | None
    known_key_versions: tuple[tuple[int, int], ...]
    org_pin: bytes
    action: str = GRANT_LIST

    def __repr__(self) -> str:
        return f"GrantListRequest(engineer={self.caller.engineer_id}, client={self.client_id})"


@dataclass(frozen=True, repr=False)
class ListedGrant:
    """One grant row as stored, with when it was made."""

    row: GrantRow
    created_at: dt.datetime

    def __repr__(self) -> str:
        return f"ListedGrant(id={self.row.id})"


@dataclass(frozen=True, repr=False)
class GrantListRows:
    """What the authority read: the caller's row and pinned-key chain, the grant rows (newest
    first within each (engineer, client) ledger), the rows of every engineer they name
    (grantees and signers), each client's slug blob by id, and the client keys those slugs
    are encrypted under that the keyholder does not hold (signed record, sealed copy)."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    grants: tuple[ListedGrant, ...]
    engineers: tuple[EngineerRow, ...]
    slugs: tuple[tuple[int, bytes], ...]
    sealed_keys: tuple[SealedClientKey, ...]

    def __repr__(self) -> str:
        return f"GrantListRows(grants={len(self.grants)})"
