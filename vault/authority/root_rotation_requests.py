"""The values that cross between the keyholder and the authority, for a root rotation.

As for the client-key rotation (``rotation_requests.py``): frozen values of ints, bytes,
strings and plain rows, so that the same values can be serialised and cross a network
later. One root rotation is one unit of work at the authority (as before the split: a
half-rotated root would leave client keys sealed to two recovery keys), in three steps:

* **plan** (``RootRotateRequest`` → ``RootDraft`` → ``RootPlan``): the authority, once the
  caller is authorised as an admin, shows the vault's identity, the current recovery key
  and the caller's sealed copy of the root bundle (``RootCopy``), the organisation key at
  the head of the chain with its signed recovery-share policy (``ShareRecord``), the vault
  backup key's sealed copy, and the roster: every engineer certificate and key-generation
  certificate the signed audit chain vouches for (the others named in ``refused``). The
  keyholder opens the bundle, verifies each row, makes the new bundle and answers with
  what only it can make: the new recovery and organisation public keys, the chain link
  signed by the old organisation key, the certificates re-issued under the new one, the
  new bundle sealed to each verified admin, the backup key re-sealed, the share policy.
* **pages** (``ClientPage`` → ``Resealed``): the clients in pages of ``PAGE`` by id, each
  with every live client-key version's signed record, signer and recovery-sealed copy; the
  keyholder re-seals each copy that verifies to the new recovery key and re-tags the slug
  with the new lookup key; the authority stores exactly the rows it handed out.
* **answer** (``RootRotated``): after the ``root-key-rotate`` event and the commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.authority.engineer_requests import EngineerKeyRow, Identity, RootCopy
from vault.authority.requests import Caller, SealedClientKey
from vault.authority.server_keys import ServerKeyRow
from vault.storage.rows import EngineerRow

ROTATE_ROOT = "root-key-rotate"
PAGE = 500  # clients per page of the re-seal walk


@dataclass(frozen=True)
class RootRotateRequest:
    """Rotate the root bundle. ``shares``: set (or change) the k-of-n recovery shares; None
    keeps the signed policy of the current bundle, if any."""

    caller: Caller
    org_pin: bytes
    shares: tuple[int, int] | None
    action: str = ROTATE_ROOT


@dataclass(frozen=True)
class ShareRecord:
    """The organisation key at the head of the chain, with its signed k-of-n (all None: no shares)."""

    version: int
    public: bytes
    threshold: int | None
    count: int | None
    signature: bytes | None


@dataclass(frozen=True, repr=False)
class RootDraft:
    """What the keyholder is shown before it makes the new bundle (no row is written yet)."""

    identity: Identity
    root: RootCopy
    head: ShareRecord
    backup_key_seal: bytes | None
    engineers: tuple[EngineerRow, ...]
    keys: tuple[EngineerKeyRow, ...]
    names: tuple[tuple[int, str], ...]  # engineer id -> name, for every key generation's owner
    refused: tuple[str, ...]  # roster rows the audit chain does not vouch for (never re-issued)
    # the team server's keys as stored (their certificates under the current organisation key: the
    # keyholder re-issues those that verify, with the same certification time)
    server_keys: tuple[ServerKeyRow, ...] = ()


@dataclass(frozen=True, repr=False)
class RootPlan:
    """What the keyholder made for the draft: public values, signatures and sealed blobs."""

    root_version: int
    recovery_public: bytes
    org_version: int
    org_public: bytes
    org_signed_at: int
    org_signature: bytes
    certificates: tuple[tuple[int, bytes], ...]  # engineer id -> certificate under the new key
    key_certificates: tuple[tuple[int, int, bytes], ...]  # (engineer id, generation) -> certificate
    root_seals: tuple[tuple[int, bytes], ...]  # admin id -> the new bundle sealed to them
    backup_key_seal: bytes | None
    share_policy: tuple[int, int, bytes] | None  # (k, n, signature by the new organisation key)
    refused: tuple[str, ...]  # roster rows the keyholder did not re-issue
    server_certificates: tuple[tuple[int, bytes], ...] = ()  # server key version -> certificate under the new key


@dataclass(frozen=True, repr=False)
class ClientPage:
    """A page of clients (id order) and every live key version of theirs, with its recovery copy."""

    root_version: int  # the recovery key the copies are sealed to
    new_root_version: int
    clients: tuple[tuple[int, bytes], ...]  # (client id, slug blob)
    keys: tuple[SealedClientKey, ...]


@dataclass(frozen=True, repr=False)
class Resealed:
    """The keyholder's answer to a page: a copy for the new recovery key of each version that
    verified, the versions refused (their copies are deleted), each client's new slug tag."""

    seals: tuple[tuple[int, int, bytes], ...]  # (client id, version, blob)
    refused: tuple[tuple[int, int], ...]  # (client id, version)
    slug_tags: tuple[tuple[int, bytes], ...]  # (client id, tag)


@dataclass(frozen=True)
class RootRotated:
    """The committed rotation: its event, the new versions, what it re-sealed and to whom."""

    seq: int
    root_version: int
    org_version: int
    clients: int
    admins: tuple[str, ...]
    refused: tuple[str, ...]
