"""A re-invited engineer's confirmation through the team server: the carry-over's draft and what the
admin makes of it (docs/server.md, "Session 16 — helper F").

In-process, ``Invitations.carry_grants`` (service/invitations.py) re-signs the grants an admin signed
over the engineer's previous key and re-seals their clients' keys inside the authority's unit. Through
the server the admin's machine does it: the pending rows (``engineers.pending_confirmation``) carry,
in ``CarryPlan.draft``, a ``CarryDraft`` — ids, public keys, signatures and ciphertext only:

* ``previous``: the key generation the signed invitation names (``engineer_keys``), with its certificate;
* ``resign``: each grant row the confirmation re-signs over the engineer's new sealing key (the
  ledger heads it carries, then the expired ones kept as history), each with its signer's row;
* ``set_aside``: the unrevoked rows the server could not verify, revoked by the commit (as in-process);
* ``clients``: for each client a carried grant names, every live client-key version (its signed record
  and the copy sealed to the recovery key), the client's audit keys (under its current version) and
  every grant and revoke event of the client, so that the admin's machine checks, as a client-key
  rotation's start does, that the audit log does not take the grant back (``rotation_grants.py``).

The confirming admin's keyholder verifies all of it (``keyholder/carry.py``) and answers ``CarryMade``
in the commit (``ConfirmCommit.carry``): the carried rows the audit log takes back, set aside; a
signature per other re-signed grant (made by the calling admin, over the new sealing key) and a copy
of each live client-key version of a client still carried, sealed to the new key. The server checks
that the rows set aside are carried ones, the signatures exactly the rest, each under the caller's
certified key, and the copies exactly the drafted versions of the clients still carried, before it
writes (``ServedCarry.carry``, ``authority/carry_drafts.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.authority.requests import SealedClientKey
from vault.authority.rotation_requests import GrantEvent
from vault.storage.rows import EngineerRow, GrantRow

MAX_SEAL = 4096  # a sealed 32-byte client key: far below this


@dataclass(frozen=True)
class PreviousKey:
    """The engineer's key generation the invitation names, as ``engineer_keys`` stores it."""

    generation: int
    sealing_public: bytes
    signing_public: bytes
    certified_at: int | None
    certificate: bytes | None


@dataclass(frozen=True)
class CarriedGrantRow:
    """A grant row the confirmation re-signs, and the row of the admin who signed it."""

    grant: GrantRow
    signer: EngineerRow | None


@dataclass(frozen=True)
class CarriedClient:
    """A client a carried grant names: its live key versions (recovery copies), its audit keys
    (``audit_keys_blob``, under its current version) and its grant and revoke events."""

    client_id: int
    keys: tuple[SealedClientKey, ...]
    audit_keys_blob: bytes | None
    grant_events: tuple[GrantEvent, ...]


@dataclass(frozen=True)
class CarryDraft:
    """What the server's plan asks the admin's machine to re-sign and re-seal (module docstring)."""

    previous: PreviousKey | None
    resign: tuple[CarriedGrantRow, ...]
    expired: tuple[int, ...]  # the ids among ``resign`` that are past their until: re-signed, nothing sealed
    set_aside: tuple[int, ...]
    clients: tuple[CarriedClient, ...]


@dataclass(frozen=True, repr=False)
class CarryMade:
    """The admin's part of the carry-over: ``(grant id, signature)`` per re-signed grant,
    ``(client id, version, sealed copy)`` per live client-key version of a carried grant, and the ids
    of the carried grants the audit log takes back (``set_aside``: not re-signed, their clients'
    keys not sealed; the server revokes them, as in-process)."""

    signatures: tuple[tuple[int, bytes], ...]
    seals: tuple[tuple[int, int, bytes], ...]
    set_aside: tuple[int, ...] = ()

    def __repr__(self) -> str:
        return f"CarryMade(grants={len(self.signatures)}, seals={len(self.seals)}, set_aside={len(self.set_aside)})"
