"""The values that cross between the keyholder and the authority, for ``status`` and ``stale``.

As for clients (``client_requests.py``): frozen values of ints, bytes, strings, datetimes
and the storage layer's plain rows, so that the same requests can be serialised and cross
a network later. A ``ReportRequest`` names the action (``status`` or ``stale``), the caller
(engineer id, key generation), the organisation key the keyholder pinned and the client-key
versions it holds already; its scope is the whole vault (both reports are an admin's).

What the authority answers is what it read, unopened: the caller's own row and the
organisation key chain from the pin (as every answer), each client's encrypted slug with
its current key's age and encryption count, its stored policy with the signer's row, the
signed settings with theirs, the client keys the keyholder lacks (signed record, recovery
copy), the versions whose metadata names a secret (ciphertext), and counts. The keyholder
verifies before it opens or believes any of it (``keyholder/reports.py``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from vault.authority.requests import Caller, OrgKeyRow, SealedClientKey
from vault.storage.rows import EngineerRow, PolicyRow

STATUS, STALE = "status", "stale"


@dataclass(frozen=True)
class ReportRequest:
    """``status`` or ``stale`` of the whole vault. ``known_key_versions``: (client id, version)
    of the client keys the keyholder holds (none of them is sent again)."""

    action: str
    caller: Caller
    known_key_versions: tuple[tuple[int, int], ...]
    org_pin: bytes  # the organisation key the engineer trusts

    def __repr__(self) -> str:
        return f"ReportRequest({self.action}, engineer={self.caller.engineer_id})"


@dataclass(frozen=True, repr=False)
class ClientState:
    """One client as stored: its slug (encrypted under its client key), its current key's
    age and encryption count (None: no record of that version), and its stored policy with
    the row of the engineer who signed it (both unverified)."""

    id: int
    slug_blob: bytes
    current_key_version: int
    key_created_at: dt.datetime | None
    key_encryptions: int | None
    policy: PolicyRow | None
    policy_signer: EngineerRow | None

    def __repr__(self) -> str:
        return f"ClientState(id={self.id})"


@dataclass(frozen=True, repr=False)
class SecretState:
    """A secret and the version its name is read from (ciphertext), with when it was last used."""

    id: int
    client_id: int
    version: int
    key_version: int
    wrapped_dek: bytes
    metadata_blob: bytes
    last_used: dt.datetime

    def __repr__(self) -> str:
        return f"SecretState(id={self.id}, client={self.client_id})"


@dataclass(frozen=True)
class StoredSettings:
    """The vault settings as stored, their signature and the signer's row (unverified)."""

    retention: int
    cryptoperiod: int
    signed_by: int | None
    signed_at: int | None
    signature: bytes | None
    signer: EngineerRow | None


@dataclass(frozen=True)
class KeyAge:
    """An active engineer's active key generation: whose, and when it was certified."""

    engineer: str
    certified_at: int


@dataclass(frozen=True)
class Counts:
    clients: int
    secrets: int
    engineers: int


@dataclass(frozen=True, repr=False)
class ReportRows:
    """What the authority read for a report, unopened.

    ``status``: every client (``clients``, by id), the secrets flagged to be changed after a
    checkout (``secrets``), the settings, the recovery key's age, the active key generations
    of active engineers, the progress (done, total) of each running rotation, the counts, the
    schema's revision and the objects credvault did not create. ``stale``: the clients whose
    stored policy names a stale-after, and their secrets unused since the shortest cutoff
    that policy could mean (``secrets``); the other fields empty."""

    action: str
    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    clients: tuple[ClientState, ...]
    secrets: tuple[SecretState, ...]
    sealed_keys: tuple[SealedClientKey, ...]
    settings: StoredSettings | None = None
    root_created_at: dt.datetime | None = None
    key_ages: tuple[KeyAge, ...] = ()
    rotations: tuple[tuple[int, int], ...] = ()
    counts: Counts | None = None
    revision: str | None = None
    head_revision: str | None = None
    schema_problems: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"ReportRows({self.action}, clients={len(self.clients)}, secrets={len(self.secrets)})"
