"""The values that cross between the keyholder and the authority, for purges.

Frozen values of ints, bytes, strings and plain rows, as for the checkout
(``requests.py``). A request names the kind (``preview``, ``client``, ``secret``,
``subject``), the caller, the targets (a client by id, and the ids of the secrets to
destroy: none for a whole client) and the request reference (the ticket: the reason).

Before anything is deleted the keyholder is shown what will be (``PurgeRows``: per client,
the secrets, the counts, the signed client-key records, the wrapped data keys); after the
rows are deleted and the receipt row and its event written, it is shown the receipt
(``ReceiptRow``) and what the authority counts as left of it (``Survivors``) and signs the
receipt only if it states exactly what it admitted and nothing survives. The receipt's
signature covers ``receipt_fields`` (docs/format.md, "Purge receipts").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from vault.authority.requests import Caller, ClientKeyRow, OrgKeyRow
from vault.crypto import signing
from vault.storage.rows import EngineerRow

PREVIEW, CLIENT, SECRET, SUBJECT = "preview", "client", "secret", "subject"
PURGE_KINDS = (CLIENT, SECRET, SUBJECT)
REQUEST_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:#/-]{0,63}")
MISSING_CLIENT = "no such client"
NOTHING_MATCHES = "no such secret of this client"
CLIENT_COUNTS = ("secrets", "versions", "grants", "open_checkouts", "key_versions", "audit_events")
SECRET_COUNTS = ("secrets", "versions", "checkouts")

Counts = tuple[tuple[str, int], ...]  # (name, count), in the order of CLIENT_COUNTS / SECRET_COUNTS


@dataclass(frozen=True)
class PurgeTarget:
    """A client (by id) and the secrets of it to destroy (none: the whole client)."""

    client_id: int
    secret_ids: tuple[int, ...]


@dataclass(frozen=True)
class PurgeRequest:
    """A preview or a purge of ``targets`` (one for a client or a secret; one per client for
    a subject), under the request reference ``request_ref`` ("" for a preview)."""

    kind: str
    caller: Caller
    targets: tuple[PurgeTarget, ...]
    request_ref: str
    org_pin: bytes


@dataclass(frozen=True, repr=False)
class PurgedVersion:
    """A version to be destroyed: its wrapped data key (the keyholder fingerprints the key)."""

    secret_id: int
    version: int
    key_version: int
    wrapped_dek: bytes

    def __repr__(self) -> str:
        return f"PurgedVersion(secret={self.secret_id}, version={self.version})"


@dataclass(frozen=True, repr=False)
class PurgePart:
    """What is destroyed of one client: its secrets, the counts, and (a client purge) every
    client-key version's signed record with, at the same place in ``key_signers``, the row
    of the engineer it names as its signer (None: no such engineer), and the signers'
    archived key generations (a destroyed version may be signed by a key retired since),
    or (a secret purge) every version of the secrets."""

    client_id: int
    slug_blob: bytes
    secret_ids: tuple[int, ...]
    counts: Counts
    key_records: tuple[ClientKeyRow, ...]
    versions: tuple[PurgedVersion, ...]
    key_signers: tuple[EngineerRow | None, ...] = ()
    signer_keys: tuple[EngineerKeyRow, ...] = ()

    def __repr__(self) -> str:
        return f"PurgePart(client={self.client_id}, secrets={len(self.secret_ids)})"


@dataclass(frozen=True)
class ReceiptRow:
    """A purge receipt as stored (``admin`` is the signer's name, for display: not signed)."""

    id: int
    kind: str
    request_ref: str
    client_id: int
    secret_ids: tuple[int, ...]
    counts: Counts
    fingerprints: tuple[str, ...]
    admin_id: int
    admin_generation: int
    purged_at: int
    event_seq: int
    signature: bytes
    admin: str = "?"
    request_id: bytes | None = None  # through the team server: what its signature binds (format.md §10)


@dataclass(frozen=True)
class Survivors:
    """What the store still holds of a receipt's targets, counted by the authority."""

    secrets: int
    versions: int
    client: int  # the client row (a client purge)
    sealed_copies: int  # of the client's key (a client purge)
    key_records: int  # of the client, or with a destroyed fingerprint (a client purge)


@dataclass(frozen=True, repr=False)
class PurgeRows:
    """The draft a purge is admitted over (``receipts`` empty), or its committed answer."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    kind: str
    parts: tuple[PurgePart, ...]
    receipts: tuple[ReceiptRow, ...] = ()

    def __repr__(self) -> str:
        return f"PurgeRows(kind={self.kind}, parts={len(self.parts)}, receipts={len(self.receipts)})"


@dataclass(frozen=True)
class EngineerKeyRow:
    """An engineer's archived key generation, certified by the organisation key."""

    engineer_id: int
    generation: int
    sealing_public: bytes
    signing_public: bytes
    certified_at: int
    certificate: bytes


@dataclass(frozen=True)
class ReceiptRequest:
    """``receipts`` (``receipt_id`` None: every receipt) or the check of one receipt."""

    caller: Caller
    receipt_id: int | None
    org_pin: bytes


@dataclass(frozen=True)
class ReceiptRows:
    """Receipts, and for a check: the signer's row and archived key, the objects credvault did
    not create, what survives of the receipt's targets and its event's action."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    receipts: tuple[ReceiptRow, ...]
    signer: EngineerRow | None = None
    signer_key: EngineerKeyRow | None = None
    foreign: tuple[str, ...] = ()
    survivors: Survivors | None = None
    event_action: str | None = None
    event_request_id: bytes | None = None  # the request its event records (format 3)


def counts_json(counts: Counts) -> str:
    return json.dumps(dict(counts), sort_keys=True)


def receipt_fields(vault_id: bytes, r: ReceiptRow) -> tuple[signing.ContextItem, ...]:
    """What a receipt's signature covers (its JSON columns as stored)."""
    return (
        vault_id,
        r.id,
        r.kind,
        r.request_ref,
        r.client_id,
        json.dumps(list(r.secret_ids)),
        counts_json(r.counts),
        json.dumps(list(r.fingerprints)),
        r.admin_id,
        r.admin_generation,
        r.purged_at,
        r.event_seq,
    )


def receipt_fields_v3(vault_id: bytes, r: ReceiptRow) -> tuple[signing.ContextItem, ...]:
    """What a receipt signed through the team server covers: its request id in place of its event's
    number (``LABEL_SIG_RECEIPT_V3``, docs/format.md §10)."""
    if r.request_id is None:
        raise ValueError("a receipt signed through the team server names its request")
    return (*receipt_fields(vault_id, r)[:-1], r.request_id)
