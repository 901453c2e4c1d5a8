"""The audit chain's hashing and signatures (docs/format.md §8).

Each event's hash covers its fields and the previous event's hash; its signature
covers the vault id, its sequence number and its hash. Signature checks of a long
chain are spread over worker processes, since they dominate a full verification.

Events are hashed in format 2 (``event_hash``): a typed encoding (``typed_ctx``) in which
``None``, ``""``, ``b""`` and ``0`` are four different things. Format 1 (``event_hash_v1``,
the plain ``ctx`` where ``None``, ``""`` and ``b""`` all encode as an empty item) is only
read: events written before format 2 still verify, and the verifier refuses a format-1
event after a format-2 one.

Format 3 (``event_hash_v3``, docs/format.md §8.2) is what the team server appends: the same
typed encoding under its own label, with the request's id and digest before the previous
hash, signed by the server's key (``server_signature_message``) instead of the engineer's.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from vault.crypto import _primitives as p
from vault.crypto.labels import (
    LABEL_AUDIT_EVENT,
    LABEL_AUDIT_EVENT_V2,
    LABEL_AUDIT_EVENT_V3,
    LABEL_SIG_AUDIT,
    LABEL_SIG_AUDIT_SERVER,
    LABEL_SIG_CHECKPOINT,
)

GENESIS = bytes(32)
PARALLEL_THRESHOLD = 20_000
ContextItem = p.ContextItem


_TAG_NONE, _TAG_INT, _TAG_STR, _TAG_BYTES = b"\x00", 1, 2, 3
_TYPED_INT = struct.Struct(">Bq").pack
_TYPED_LEN = struct.Struct(">BI").pack


def typed_item(item: ContextItem) -> bytes:
    """One item of ``typed_ctx``: a type byte, then (but for None) a 4-byte length and the bytes."""
    if item is None:
        return _TAG_NONE
    if isinstance(item, bool):
        raise TypeError("booleans are not context items")
    if isinstance(item, int):
        if not -(2**63) <= item < 2**63:
            raise ValueError("context integers are 64-bit")
        return _TYPED_INT(_TAG_INT, item)
    raw = p.encode_item(item)  # NFC UTF-8 of a str, the bytes of bytes-likes; refuses other types
    return _TYPED_LEN(_TAG_STR if isinstance(item, str) else _TAG_BYTES, len(raw)) + raw


def typed_ctx(*items: ContextItem) -> bytes:
    """Like ``ctx``, but each item also says its type: no two distinct tuples share an encoding
    (``ctx`` encodes ``None``, ``""`` and ``b""`` alike, and an int like its 8 bytes)."""
    return b"".join(typed_item(item) for item in items)


def event_hash(vault_id: bytes, seq: int, *fields: ContextItem, prev_hash: bytes) -> bytes:
    """The hash of a format-2 event (every event written now)."""
    return p.sha256(typed_ctx(LABEL_AUDIT_EVENT_V2, vault_id, seq, *fields, prev_hash))


def event_hash_v1(vault_id: bytes, seq: int, *fields: ContextItem, prev_hash: bytes) -> bytes:
    """The hash of a format-1 event (written before format 2; verified, never written)."""
    return p.sha256(p.ctx(LABEL_AUDIT_EVENT, vault_id, seq, *fields, prev_hash))


def event_hash_v3(
    vault_id: bytes,
    seq: int,
    *fields: ContextItem,
    request_id: bytes | None,
    request_digest: bytes | None,
    prev_hash: bytes,
) -> bytes:
    """The hash of a format-3 event (appended by the team server, docs/format.md §8.2); an event
    the server appends on its own keeps no request (both None)."""
    return p.sha256(typed_ctx(LABEL_AUDIT_EVENT_V3, vault_id, seq, *fields, request_id, request_digest, prev_hash))


def server_signature_message(vault_id: bytes, key_version: int, seq: int, digest: bytes) -> bytes:
    """What the server key signs of a format-3 event: the key's version, the event's number and hash."""
    return p.ctx(LABEL_SIG_AUDIT_SERVER, vault_id, key_version, seq, digest)


def server_signature_valid(
    public: bytes, signature: bytes, vault_id: bytes, key_version: int, seq: int, digest: bytes
) -> bool:
    try:
        p.ed25519_verify(public, signature, server_signature_message(vault_id, key_version, seq, digest))
    except p.PrimitiveFailure:
        return False
    return True


def event_signature_message(vault_id: bytes, seq: int, digest: bytes) -> bytes:
    return p.ctx(LABEL_SIG_AUDIT, vault_id, seq, digest)


def sign_event(seed: bytes, vault_id: bytes, seq: int, digest: bytes) -> bytes:
    return p.ed25519_sign(seed, event_signature_message(vault_id, seq, digest))


def checkpoint_message(vault_id: bytes, seq: int, digest: bytes, at: int) -> bytes:
    return p.ctx(LABEL_SIG_CHECKPOINT, vault_id, seq, digest, at)


def sign_checkpoint(seed: bytes, vault_id: bytes, seq: int, digest: bytes, at: int) -> bytes:
    return p.ed25519_sign(seed, checkpoint_message(vault_id, seq, digest, at))


def checkpoint_valid(public: bytes, signature: bytes, vault_id: bytes, seq: int, digest: bytes, at: int) -> bool:
    try:
        p.ed25519_verify(public, signature, checkpoint_message(vault_id, seq, digest, at))
    except p.PrimitiveFailure:
        return False
    return True


# (seq, public key, signature, digest)
SignatureJob = tuple[int, bytes, bytes, bytes]


def _first_bad(vault_id: bytes, jobs: Sequence[SignatureJob]) -> int | None:
    for seq, public, signature, digest in jobs:
        try:
            p.ed25519_verify(public, signature, event_signature_message(vault_id, seq, digest))
        except p.PrimitiveFailure:
            return seq
    return None


def first_bad_signature(vault_id: bytes, jobs: Sequence[SignatureJob], workers: int | None = None) -> int | None:
    """The lowest sequence number whose signature fails, or None; parallel when long."""
    workers = workers or min(os.cpu_count() or 1, 8)
    if len(jobs) < PARALLEL_THRESHOLD or workers < 2:
        return _first_bad(vault_id, jobs)
    size = -(-len(jobs) // (workers * 4))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_first_bad, [vault_id] * len(chunks), chunks))
    bad = [seq for seq in results if seq is not None]
    return min(bad) if bad else None


AuditEventHash = Callable[
    [int, int, int | None, int, str, int | None, int | None, int | None, bytes | None, str | None, bytes], bytes
]


def _unrolled_hash(
    prefix: bytes,
    i: Callable[[ContextItem], bytes],
    seq: int,
    at_us: int,
    engineer_id: int | None,
    key_generation: int,
    action: str,
    client_id: int | None,
    secret_id: int | None,
    key_version: int | None,
    details_blob: bytes | None,
    details_json: str | None,
    prev_hash: bytes,
) -> bytes:
    """SHA-256 of ``prefix`` and each field encoded by ``i``, unrolled (``EventCodec``)."""
    return p.sha256(
        b"".join(
            (
                prefix,
                i(seq),
                i(at_us),
                i(engineer_id),
                i(key_generation),
                i(action),
                i(client_id),
                i(secret_id),
                i(key_version),
                i(details_blob),
                i(details_json),
                i(prev_hash),
            )
        )
    )


class EventCodec:
    """``event_hash`` and signature checks for one vault with fewer Python calls per event.

    Byte for byte the same as ``event_hash`` / ``event_hash_v1`` / ``event_signature_message``
    (the common item types are encoded inline; anything else goes through the reference
    encoders), for verifiers that recompute a long chain.
    """

    _LEN = struct.Struct(">I").pack
    _INT = struct.Struct(">Iq").pack
    _EMPTY = bytes(4)
    _T_INT = _TYPED_INT
    _T_LEN = _TYPED_LEN

    # ``event_hash`` (format 2) and ``event_hash_v1`` (events written before format 2) of an
    # audit row's fields, in ``journal``'s order (seq, at_us, engineer_id, key_generation,
    # action, client_id, secret_id, key_version, details_blob, details_json, prev_hash):
    # ``_unrolled_hash`` bound to each format's prefix and encoder (a partial costs no
    # Python call of its own, which a method around it would, once per event).
    audit_event_hash: AuditEventHash
    audit_event_hash_v1: AuditEventHash

    def __init__(self, vault_id: bytes) -> None:
        self.hash_prefix = typed_ctx(LABEL_AUDIT_EVENT_V2, vault_id)
        self.hash_prefix_v1 = p.ctx(LABEL_AUDIT_EVENT, vault_id)
        self.sig_prefix = p.ctx(LABEL_SIG_AUDIT, vault_id)
        self.hash_prefix_v3 = typed_ctx(LABEL_AUDIT_EVENT_V3, vault_id)
        self.server_sig_prefix = p.ctx(LABEL_SIG_AUDIT_SERVER, vault_id)
        self.audit_event_hash = functools.partial(_unrolled_hash, self.hash_prefix, self.typed)
        self.audit_event_hash_v1 = functools.partial(_unrolled_hash, self.hash_prefix_v1, self.item)

    def typed(self, value: ContextItem) -> bytes:
        kind = type(value)
        if kind is int and -(2**63) <= value < 2**63:  # type: ignore[operator]
            return self._T_INT(_TAG_INT, value)
        if value is None:
            return _TAG_NONE
        if kind is bytes:
            return self._T_LEN(_TAG_BYTES, len(value)) + value  # type: ignore[arg-type, operator]
        if kind is str and value.isascii():  # type: ignore[union-attr]
            return self._T_LEN(_TAG_STR, len(value)) + value.encode("ascii")  # type: ignore[arg-type, union-attr]
        return typed_item(value)

    def item(self, value: ContextItem) -> bytes:
        kind = type(value)
        if kind is int and -(2**63) <= value < 2**63:  # type: ignore[operator]
            return self._INT(8, value)
        if value is None:
            return self._EMPTY
        if kind is bytes:
            return self._LEN(len(value)) + value  # type: ignore[arg-type, operator]
        if kind is str and value.isascii():  # type: ignore[union-attr]
            return self._LEN(len(value)) + value.encode("ascii")  # type: ignore[arg-type, union-attr]  # NFC of ASCII is itself
        raw = p.encode_item(value)
        return self._LEN(len(raw)) + raw

    def audit_event_hash_v3(
        self, fields: Sequence[ContextItem], request_id: bytes | None, request_digest: bytes | None, prev_hash: bytes
    ) -> bytes:
        """``event_hash_v3`` of a row's fields (seq … details_json, as ``audit_event_hash``)."""
        typed = self.typed
        return p.sha256(
            b"".join(
                (
                    self.hash_prefix_v3,
                    *(typed(f) for f in fields),
                    typed(request_id),
                    typed(request_digest),
                    typed(prev_hash),
                )
            )
        )

    def server_signature_valid(
        self, public: bytes, signature: bytes, key_version: int, seq: int, digest: bytes
    ) -> bool:
        """Whether ``signature`` is the server key's over format-3 event ``seq`` (``server_signature_message``)."""
        try:
            p.ed25519_verify(
                public, signature, self.server_sig_prefix + self.item(key_version) + self.item(seq) + self.item(digest)
            )
        except p.PrimitiveFailure:
            return False
        return True

    def signature_valid(self, public: bytes, signature: bytes, seq: int, digest: bytes) -> bool:
        """Whether ``signature`` is ``sign_event``'s for (seq, digest) under ``public``."""
        try:
            p.ed25519_verify(public, signature, self.sig_prefix + self.item(seq) + self.item(digest))
        except p.PrimitiveFailure:
            return False
        return True
