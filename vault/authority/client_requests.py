"""The values that cross between the keyholder and the authority, for clients.

As for secrets (``secret_requests.py``): frozen values of ints, bytes, strings and the
storage layer's plain rows, so that the same requests can be serialised and cross a
network later. A request names the action, the caller and the target by ids and lookup
tags only (an engineer's client by the id their grant names, an admin's by its slug tag
under the root lookup key): never a slug or a name. What the authority answers is
ciphertext and signed public records (the caller's own row, each grant head and its
signer, the client-key records and the copies sealed to the caller), which the keyholder
verifies before it opens anything.

``ClientRows`` is both the draft the keyholder is shown before the event is written
(``admit``: a refusal writes nothing) and the committed answer (``seq`` set).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from vault.authority.requests import Caller, OrgKeyRow, SealedClientKey
from vault.storage.rows import EngineerRow, GrantRow

CLIENT_VIEW, CLIENT_LIST = "client-view", "client-list"
MISSING_CLIENT = "no such client"


@dataclass(frozen=True)
class ShowRequest:
    """``client-view`` of one client: by its id (an engineer's, from their grant) or its slug
    tag (an admin's). ``known_key_versions``: the client-key versions the keyholder holds."""

    caller: Caller
    client_id: int | None
    slug_tag: bytes | None
    known_key_versions: tuple[int, ...]
    org_pin: bytes  # the organisation key the engineer trusts
    action: str = CLIENT_VIEW

    def __repr__(self) -> str:
        return f"ShowRequest(engineer={self.caller.engineer_id}, client={self.client_id})"


@dataclass(frozen=True)
class ListRequest:
    """``client-list``: every client (an admin) or those the caller's grant ledgers name.
    ``known_key_versions``: (client id, version) of the client keys the keyholder holds."""

    caller: Caller
    known_key_versions: tuple[tuple[int, int], ...]
    org_pin: bytes
    action: str = CLIENT_LIST

    def __repr__(self) -> str:
        return f"ListRequest(engineer={self.caller.engineer_id})"


@dataclass(frozen=True, repr=False)
class ClientEntry:
    """One client as stored (its slug and name encrypted under its client key), how many
    secrets it holds, and for an engineer the head of their grant ledger for it with its signer."""

    id: int
    slug_blob: bytes
    name_blob: bytes
    current_key_version: int
    created_at: dt.datetime
    secrets: int
    grant: GrantRow | None
    grant_signer: EngineerRow | None

    def __repr__(self) -> str:
        return f"ClientEntry(id={self.id})"


@dataclass(frozen=True, repr=False)
class ClientRows:
    """What the authority read: the caller's own row and the organisation key chain from the
    pinned key (as in a checkout's answer), the clients, and the client keys their slug and
    name are encrypted under that the keyholder does not hold (signed record, sealed copy)."""

    seq: int  # the event's number; 0 in a draft
    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    clients: tuple[ClientEntry, ...]
    sealed_keys: tuple[SealedClientKey, ...]

    def __repr__(self) -> str:
        return f"ClientRows(seq={self.seq}, clients={len(self.clients)})"


# -- clients.add ------------------------------------------------------------------------------

CLIENT_CREATE = "client-create"
DUPLICATE_CLIENT = "a client exists under this slug tag"
NEW_CLIENT_POLICY = (True, False, False)  # reason required, not exclusive, no rotation after checkout
NEW_CLIENT_FIELDS = 3  # encryptions under the new client key: slug, name, lookup key


@dataclass(frozen=True)
class AddRequest:
    """``client-create``: a new client under ``slug_tag`` (the admin's lookup tag of its slug
    under the root lookup key). The slug and the name stay with the keyholder: they reach the
    store only encrypted under the new client key, and the event's details only sealed."""

    caller: Caller
    slug_tag: bytes
    org_pin: bytes
    action: str = CLIENT_CREATE

    def __repr__(self) -> str:
        return f"AddRequest(engineer={self.caller.engineer_id})"


@dataclass(frozen=True, repr=False)
class AddDraft:
    """What the authority shows the keyholder inside its unit of work, once the client's row
    exists: the caller's row and pinned-key chain (as in every answer), the id the new client
    was given, when, and the recovery key version its key is to be sealed to."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    client_id: int
    created_at: dt.datetime
    root_version: int

    def __repr__(self) -> str:
        return f"AddDraft(client={self.client_id})"


@dataclass(frozen=True, repr=False)
class NewClient:
    """What the keyholder made for the draft's client id: ciphertext and signatures only.
    The client key (version 1) exists only in the keyholder; ``fingerprint`` and the record's
    signature (``LABEL_SIG_CLIENT_KEY``) name it, ``recovery_copy`` is it sealed to the
    recovery key; ``policy_signature`` signs the default policy (``NEW_CLIENT_POLICY``,
    ``DEFAULT_CHECKOUT_MINUTES``) as the caller at ``signed_at``."""

    slug_blob: bytes
    name_blob: bytes
    lookup_key_blob: bytes
    fingerprint: bytes
    signed_at: int
    key_signature: bytes
    recovery_copy: bytes
    policy_signature: bytes

    def __repr__(self) -> str:
        return "NewClient(<ciphertext>)"


@dataclass(frozen=True, repr=False)
class AddAnswer:
    """The committed client as stored: its event's number, its row's ciphertext, its key
    record and recovery copy, and its policy row's signature, read back after the writes."""

    seq: int
    client_id: int
    slug_tag: bytes
    created_at: dt.datetime
    stored: NewClient
    key_signed_by: int
    policy_signed_by: int

    def __repr__(self) -> str:
        return f"AddAnswer(seq={self.seq}, client={self.client_id})"
