"""Passphrase-protected engineer key records (docs/format.md §4.5).

The Argon2id parameters and salt sit in the record's header and are authenticated as
associated data, so lowering them makes the record fail to open. They are also checked
against a floor and a ceiling *before* any derivation, so a hostile record can neither
make us derive a weak key nor exhaust memory.
"""

from __future__ import annotations

import struct
import unicodedata
from dataclasses import dataclass

from vault.crypto import _primitives as p
from vault.crypto.labels import BLOB_KEY_RECORD, FORMAT_VERSION, LABEL_KEY_RECORD
from vault.errors import DecryptionFailed, InvalidInput, KeyRecordRejected, WrongPassphrase

SALT_SIZE = 16
_HEADER_FORMAT = ">BBIII16s"
_HEADER_SIZE = struct.calcsize(_HEADER_FORMAT)  # 30
PRIVATE_BUNDLE_SIZE = 96
MAX_PASSPHRASE_CHARS = 1024


@dataclass(frozen=True)
class Argon2Params:
    memory_kib: int
    time_cost: int
    parallelism: int


DEFAULT_PARAMS = Argon2Params(memory_kib=65536, time_cost=3, parallelism=4)
FLOOR = Argon2Params(memory_kib=19456, time_cost=2, parallelism=1)
CEILING = Argon2Params(memory_kib=1048576, time_cost=10, parallelism=16)


def check_params(params: Argon2Params) -> None:
    """Refuse parameters below OWASP's floor or above our memory/time ceiling."""
    for field in ("memory_kib", "time_cost", "parallelism"):
        value = getattr(params, field)
        if value < getattr(FLOOR, field):
            raise KeyRecordRejected(
                f"key record refused: Argon2 {field} {value} is below the minimum {getattr(FLOOR, field)}"
            )
        if value > getattr(CEILING, field):
            raise KeyRecordRejected(
                f"key record refused: Argon2 {field} {value} is above the maximum {getattr(CEILING, field)}"
            )
    if params.memory_kib < 8 * params.parallelism:
        raise KeyRecordRejected("key record refused: Argon2 memory too small for its parallelism")


def normalise_passphrase(passphrase: str) -> bytes:
    """NFC-normalise so that the same passphrase typed on any system derives one key."""
    if not isinstance(passphrase, str):
        raise TypeError("passphrase must be str")
    text = unicodedata.normalize("NFC", passphrase)
    if not text:
        raise InvalidInput("the passphrase is empty")
    if len(text) > MAX_PASSPHRASE_CHARS:
        raise InvalidInput(f"the passphrase is longer than {MAX_PASSPHRASE_CHARS} characters")
    return text.encode("utf-8")


@dataclass(frozen=True, repr=False)
class PrivateBundle:
    """An engineer's private keys and trust anchor, as held in a key record."""

    sealing_private: bytes
    signing_seed: bytes
    org_signing_public: bytes

    def to_bytes(self) -> bytes:
        return self.sealing_private + self.signing_seed + self.org_signing_public

    @classmethod
    def from_bytes(cls, raw: bytes) -> PrivateBundle:
        if len(raw) != PRIVATE_BUNDLE_SIZE:
            raise DecryptionFailed()
        return cls(raw[:32], raw[32:64], raw[64:96])

    def __repr__(self) -> str:
        return "PrivateBundle(<redacted>)"


def _aad(header: bytes, vault_id: bytes, engineer_id: int, key_generation: int) -> bytes:
    return p.ctx(LABEL_KEY_RECORD, header, vault_id, engineer_id, key_generation)


def derive_passphrase_key(passphrase: str, salt: bytes, params: Argon2Params) -> bytes:
    check_params(params)
    return p.argon2id(normalise_passphrase(passphrase), salt, params.memory_kib, params.time_cost, params.parallelism)


def lock_record(
    bundle: PrivateBundle,
    passphrase: str,
    vault_id: bytes,
    engineer_id: int,
    key_generation: int,
    params: Argon2Params = DEFAULT_PARAMS,
) -> bytes:
    salt = p.random_bytes(SALT_SIZE)
    key = derive_passphrase_key(passphrase, salt, params)
    header = struct.pack(
        _HEADER_FORMAT, FORMAT_VERSION, BLOB_KEY_RECORD, params.memory_kib, params.time_cost, params.parallelism, salt
    )
    nonce = p.new_nonce()
    return (
        header
        + nonce
        + p.aead_encrypt(key, nonce, bundle.to_bytes(), _aad(header, vault_id, engineer_id, key_generation))
    )


def record_params(record: bytes) -> Argon2Params:
    if len(record) < _HEADER_SIZE + p.NONCE_SIZE + p.TAG_SIZE:
        raise DecryptionFailed()
    version, blob_type, memory, time_cost, parallelism, _salt = struct.unpack(_HEADER_FORMAT, record[:_HEADER_SIZE])
    if version != FORMAT_VERSION or blob_type != BLOB_KEY_RECORD:
        raise DecryptionFailed()
    return Argon2Params(memory, time_cost, parallelism)


def open_record(
    record: bytes, passphrase: str, vault_id: bytes, engineer_id: int, key_generation: int
) -> PrivateBundle:
    params = record_params(record)
    check_params(params)  # before any derivation: no weak key, no memory exhaustion
    header = record[:_HEADER_SIZE]
    salt = header[-SALT_SIZE:]
    key = derive_passphrase_key(passphrase, salt, params)
    nonce = record[_HEADER_SIZE : _HEADER_SIZE + p.NONCE_SIZE]
    try:
        raw = p.aead_decrypt(
            key, nonce, record[_HEADER_SIZE + p.NONCE_SIZE :], _aad(header, vault_id, engineer_id, key_generation)
        )
    except p.PrimitiveFailure:
        raise WrongPassphrase() from None
    return PrivateBundle.from_bytes(raw)
