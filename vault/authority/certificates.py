"""What the organisation key signs, and the chain that leads from a pinned key to the current one.

One definition of each signed layout (docs/format.md), used to sign and to verify: by the
keyholder (``vault/keyholder/trust.py``, ``responses.py``, which re-export these) and by the
team server (``vault/server/trust.py``), which checks a caller's certificate before it trusts
the signing key a row names. Public keys and signatures only: nothing here opens a secret.
"""

from __future__ import annotations

from typing import Protocol

from vault.authority.requests import OrgKeyRow
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_ENGINEER, LABEL_SIG_ENGINEER_KEY, LABEL_SIG_ORG_KEY
from vault.errors import UntrustedRecord
from vault.storage.rows import EngineerRecord


class EngineerKeyRecord(Protocol):
    """A certified generation of an engineer's public keys (``engineer_keys``: ORM or plain)."""

    @property
    def engineer_id(self) -> int: ...
    @property
    def generation(self) -> int: ...
    @property
    def sealing_public(self) -> bytes | None: ...
    @property
    def signing_public(self) -> bytes | None: ...
    @property
    def certified_at(self) -> int | None: ...


def org_key_fields(
    vault_id: bytes, version: int, public: bytes, previous: bytes, signed_at: int
) -> tuple[signing.ContextItem, ...]:
    return (vault_id, version, public, previous, signed_at)


def certificate_fields(vault_id: bytes, row: EngineerRecord) -> tuple[signing.ContextItem, ...]:
    return (
        vault_id,
        row.id,
        row.name,
        row.role,
        row.status,
        row.key_generation,
        row.sealing_public,
        row.signing_public,
        row.certified_at,
    )


def trusted_org_key(vault_id: bytes, pinned: bytes, current: bytes, keys: tuple[OrgKeyRow, ...]) -> bytes:
    """``current`` if it is the pinned organisation key, or if ``keys`` lead to it from the
    pinned one, each signed by the one before; else UntrustedRecord."""
    if current == pinned:
        return current
    if not keys or keys[0].public != pinned:
        raise UntrustedRecord("the vault's organisation key is not the one this engineer enrolled with")
    head = keys[0]
    for key in keys[1:]:
        if key.version != head.version + 1:
            raise UntrustedRecord(f"the organisation key chain is broken before version {key.version}")
        fields = org_key_fields(vault_id, key.version, key.public, head.public, key.signed_at)
        signing.verify(
            head.public, key.signature, LABEL_SIG_ORG_KEY, *fields, what=f"organisation key version {key.version}"
        )
        head = key
    if head.public != current:
        raise UntrustedRecord("the vault's organisation key is not on the chain this engineer trusts")
    return current


def verify_certificate(vault_id: bytes, org_public: bytes, row: EngineerRecord) -> None:
    """The engineer's certificate verifies under ``org_public`` (keys confirmed), else UntrustedRecord."""
    if row.sealing_public is None or row.signing_public is None or row.certified_at is None:
        raise UntrustedRecord(f"engineer {row.name!r} has no confirmed keys")
    signing.verify(
        org_public,
        row.certificate,
        LABEL_SIG_ENGINEER,
        *certificate_fields(vault_id, row),
        what=f"the public keys of engineer {row.name!r}",
    )


def engineer_key_fields(vault_id: bytes, key: EngineerKeyRecord, name: str) -> tuple[signing.ContextItem, ...]:
    """What an engineer-key record's certificate covers (one generation of an engineer's keys)."""
    return (vault_id, key.engineer_id, name, key.generation, key.sealing_public, key.signing_public, key.certified_at)


def verify_engineer_key(
    vault_id: bytes, org_public: bytes, key: EngineerKeyRecord, certificate: bytes | None, name: str
) -> bytes:
    """The signing key of an engineer-key record whose certificate verifies under ``org_public``,
    else UntrustedRecord."""
    signing.verify(
        org_public,
        certificate,
        LABEL_SIG_ENGINEER_KEY,
        *engineer_key_fields(vault_id, key, name),
        what=f"key generation {key.generation} of engineer {name!r}",
    )
    if key.signing_public is None:
        raise UntrustedRecord(f"key generation {key.generation} of engineer {name!r} has no signing key")
    return key.signing_public
