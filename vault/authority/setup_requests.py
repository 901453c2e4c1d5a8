"""The values that cross between the keyholder and the authority for the two engineer
operations that run without a session: creating the vault, and reading an enrolled
engineer's pending keys.

As for the other nouns: frozen values of ints, bytes, strings and plain rows, so that they
can cross a network later.

* ``vault-init``: the keyholder chose the vault id and made the organisation and recovery
  keys (their private halves never cross); the request carries their public halves, the
  first admin's name and the k-of-n of the recovery shares, if any. The authority writes
  the vault's rows and the admin's row, then shows the keyholder an ``InitDraft`` inside its
  unit of work (the id it gave the admin, the time of the certificate): the keyholder makes
  the admin's keys for that id and signs and seals them (``AdminKeys``), which the authority
  stores as given, with the ``vault-init`` event. The answer (``InitAnswer``) is the admin's
  row as stored, which the keyholder verifies against what it made.
* ``engineer-pending-key``: an enrolled engineer's row by name (their public keys, not yet
  certified); the keyholder computes the fingerprint a person compares.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.storage.rows import EngineerRow

INIT, PENDING_KEY = "vault-init", "engineer-pending-key"
VAULT_ID_BYTES, KEY_BYTES, SIGNATURE_BYTES = 16, 32, 64
FIRST = 1  # the first key generation, root version and organisation key version


@dataclass(frozen=True)
class InitRequest:
    """Create the vault ``vault_id`` with its first admin ``admin_name``; ``shares``: (k, n) of
    the recovery shares, whose policy the organisation key signs (None: no shares)."""

    admin_name: str
    vault_id: bytes
    org_signing_public: bytes
    recovery_public: bytes
    shares: tuple[int, int] | None
    action: str = INIT


@dataclass(frozen=True, repr=False)
class InitDraft:
    """What the authority wrote so far, for the keyholder to make the admin's keys for: the
    vault, the admin's row (no keys yet: generation 0) and the time their certificate states."""

    vault_id: bytes
    org_signing_public: bytes
    recovery_public: bytes
    admin: EngineerRow
    certified_at: int
    shares: tuple[int, int] | None

    def __repr__(self) -> str:
        return f"InitDraft(admin={self.admin.id})"


@dataclass(frozen=True, repr=False)
class AdminKeys:
    """The first admin's keys, made by the keyholder for the draft: the public keys, the key
    record (locked with the passphrase), the organisation key's certificate of the row and of
    the engineer-key record, the root bundle sealed to the admin, and the signed share policy."""

    key_generation: int
    sealing_public: bytes
    signing_public: bytes
    key_record: bytes
    certificate: bytes
    key_certificate: bytes
    root_seal: bytes
    share_signature: bytes | None

    def __repr__(self) -> str:
        return f"AdminKeys(generation={self.key_generation}, <redacted>)"


@dataclass(frozen=True, repr=False)
class InitAnswer:
    """The ``vault-init`` event's number, and the vault and its admin as stored."""

    seq: int
    vault_id: bytes
    org_signing_public: bytes
    admin: EngineerRow

    def __repr__(self) -> str:
        return f"InitAnswer(seq={self.seq}, admin={self.admin.id})"


@dataclass(frozen=True)
class PendingKeyRequest:
    """The row of the engineer ``name`` (no session: a person compares what it shows)."""

    name: str
    action: str = PENDING_KEY


@dataclass(frozen=True, repr=False)
class PendingKeyRows:
    """The engineer's row as stored (their status and public keys)."""

    engineer: EngineerRow

    def __repr__(self) -> str:
        return f"PendingKeyRows(engineer={self.engineer.id})"
