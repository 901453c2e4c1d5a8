"""Symmetric blobs (docs/format.md §4.1–4.3): round trips, and every tamper is opaque.

Every blob kind is ``0x01 || type || key_version (4) || nonce (12) || ct || tag (16)``,
bound by its associated data to its row. Each negative test expects the single opaque
``DecryptionFailed`` and checks (through the ``rejects`` fixture) that nothing of the
plaintext or key shows in the error.
"""

from __future__ import annotations

import struct
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.crypto import blobs
from vault.crypto.labels import (
    BLOB_CLIENT_FIELD,
    BLOB_DATA_KEY,
    BLOB_SECRET_FIELD,
    LABEL_CLIENT_FIELD,
    LABEL_DATA_KEY,
    LABEL_SECRET_FIELD,
)
from vault.errors import DecryptionFailed

KEY = bytes.fromhex("8f1c2a7d43e95b06a1d4c7e02f3b9a5860e1d2c3b4a5968778695a4b3c2d1e0f")
OTHER_KEY = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0")
DATA_KEY = bytes.fromhex("d3a1f0c2b4e5968778695a4b3c2d1e0f8f1c2a7d43e95b06a1d4c7e02f3b9a58")
PASSWORD = b"hunter2-correct-horse-battery-staple"
METADATA = b'{"fields": {}, "host": "db1.internal", "name": "prod db", "note": null, "url": null, "username": "sa"}'


@dataclass(frozen=True)
class Row:
    """Everything that names a blob's row: its associated data and key version."""

    client_id: int = 7
    secret_id: int = 42
    version: int = 3
    purpose: str = "password"
    key_version: int = 2


@dataclass(frozen=True)
class Kind:
    """One blob kind: how to encrypt and decrypt it, and which row fields bind it."""

    name: str
    blob_type: int
    label: bytes
    row: Row
    plaintext: bytes
    binds: tuple[str, ...]
    other_purpose: str | None
    encrypt: Callable[[bytes, Row, bytes], bytes]
    decrypt: Callable[[bytes, Row, bytes], bytes]

    def context(self, row: Row) -> tuple[object, ...]:
        return tuple(getattr(row, name) for name in self.binds if name != "key_version")


def _secret_field(purpose: str, plaintext: bytes, other: str) -> Kind:
    return Kind(
        name=f"secret-field/{purpose}",
        blob_type=BLOB_SECRET_FIELD,
        label=LABEL_SECRET_FIELD,
        row=Row(purpose=purpose),
        plaintext=plaintext,
        binds=("client_id", "secret_id", "version", "purpose", "key_version"),
        other_purpose=other,
        encrypt=lambda k, r, v: blobs.encrypt_secret_field(
            k, r.key_version, v, r.client_id, r.secret_id, r.version, r.purpose
        ),
        decrypt=lambda k, r, b: blobs.decrypt_secret_field(
            k, r.key_version, b, r.client_id, r.secret_id, r.version, r.purpose
        ),
    )


def _client_field(purpose: str, plaintext: bytes, other: str) -> Kind:
    return Kind(
        name=f"client-field/{purpose}",
        blob_type=BLOB_CLIENT_FIELD,
        label=LABEL_CLIENT_FIELD,
        row=Row(purpose=purpose),
        plaintext=plaintext,
        binds=("client_id", "purpose", "key_version"),
        other_purpose=other,
        encrypt=lambda k, r, v: blobs.encrypt_client_field(k, r.key_version, v, r.client_id, r.purpose),
        decrypt=lambda k, r, b: blobs.decrypt_client_field(k, r.key_version, b, r.client_id, r.purpose),
    )


WRAPPED_DATA_KEY = Kind(
    name="wrapped-data-key",
    blob_type=BLOB_DATA_KEY,
    label=LABEL_DATA_KEY,
    row=Row(),
    plaintext=DATA_KEY,
    binds=("client_id", "secret_id", "version", "key_version"),
    other_purpose=None,
    encrypt=lambda k, r, v: blobs.wrap_data_key(k, r.key_version, v, r.client_id, r.secret_id, r.version),
    decrypt=lambda k, r, b: blobs.unwrap_data_key(k, r.key_version, b, r.client_id, r.secret_id, r.version),
)

KINDS = [
    _secret_field("password", PASSWORD, "metadata"),
    _secret_field("metadata", METADATA, "password"),
    WRAPPED_DATA_KEY,
    _client_field("slug", b"acme-corporation", "name"),
    _client_field("name", b"ACME Corporation Ltd", "slug"),
    _client_field("lookup-key", bytes(range(100, 132)), "slug"),
]
by_kind = pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)

HEADER, NONCE, TAG = 6, 12, 16
# (region, position inside it): "last" of the ciphertext is the byte just before the tag.
REGIONS = [
    ("version", 0),
    ("type", 1),
    ("key-version-first", 2),
    ("key-version-last", 5),
    ("nonce-first", 6),
    ("nonce-middle", 11),
    ("nonce-last", 17),
    ("ciphertext-first", 18),
    ("ciphertext-middle", None),
    ("ciphertext-last", -17),
    ("tag-first", -16),
    ("tag-middle", -8),
    ("tag-last", -1),
]


def _offset(blob: bytes, position: int | None) -> int:
    if position is None:
        return (HEADER + NONCE + len(blob) - TAG) // 2
    return position % len(blob)


def _flip(blob: bytes, offset: int, bit: int = 0x01) -> bytes:
    return blob[:offset] + bytes([blob[offset] ^ bit]) + blob[offset + 1 :]


def _sealed(kind: Kind, key: bytes = KEY) -> bytes:
    return kind.encrypt(key, kind.row, kind.plaintext)


# -- positive ---------------------------------------------------------------------


@by_kind
def test_blob_round_trips(kind: Kind) -> None:
    blob = _sealed(kind)
    assert kind.decrypt(KEY, kind.row, blob) == kind.plaintext
    assert len(blob) == HEADER + NONCE + len(kind.plaintext) + TAG
    assert blob[:2] == bytes([0x01, kind.blob_type])
    assert blobs.blob_key_version(blob) == kind.row.key_version
    assert kind.plaintext not in blob


def _spec_item(value: object) -> bytes:
    """One item of ``ctx`` exactly as docs/format.md §1 words it."""
    if isinstance(value, int):
        raw = struct.pack(">q", value)
    elif isinstance(value, str):
        raw = unicodedata.normalize("NFC", value).encode("utf-8")
    else:
        assert isinstance(value, bytes)
        raw = value
    return struct.pack(">I", len(raw)) + raw


@by_kind
def test_blob_matches_the_format_spec(kind: Kind) -> None:
    """Decrypt with AES-GCM directly, building the AAD from docs/format.md by hand."""
    blob = _sealed(kind)

    aad = b"".join(_spec_item(v) for v in (kind.label, blob[:6], *kind.context(kind.row)))
    assert AESGCM(KEY).decrypt(blob[6:18], blob[18:], aad) == kind.plaintext


@by_kind
def test_two_encryptions_of_the_same_value_differ(kind: Kind) -> None:
    first, second = _sealed(kind), _sealed(kind)
    assert first[HEADER : HEADER + NONCE] != second[HEADER : HEADER + NONCE]
    assert first != second


@pytest.mark.parametrize("plaintext", [b"", b"x", bytes(range(256)) * 40], ids=["empty", "one-byte", "10KiB"])
def test_secret_field_of_any_length_round_trips(plaintext: bytes) -> None:
    kind = KINDS[0]
    assert kind.decrypt(KEY, kind.row, kind.encrypt(KEY, kind.row, plaintext)) == plaintext


@pytest.mark.parametrize("key_version", [0, 1, 2**32 - 1])
def test_key_version_is_written_to_the_header(key_version: int) -> None:
    row = Row(key_version=key_version)
    blob = blobs.encrypt_client_field(KEY, key_version, b"slug-value", row.client_id, "slug")
    assert blobs.blob_key_version(blob) == key_version
    assert blobs.decrypt_client_field(KEY, key_version, blob, row.client_id, "slug") == b"slug-value"


def test_purpose_text_is_nfc_normalised_in_the_context() -> None:
    blob = blobs.encrypt_client_field(KEY, 1, b"value-123", 1, "caf\u00e9")
    assert blobs.decrypt_client_field(KEY, 1, blob, 1, "cafe\u0301") == b"value-123"


# -- tampering with the bytes ---------------------------------------------------------


@by_kind
@pytest.mark.parametrize("bit", [0x01, 0x80])
@pytest.mark.parametrize(("region", "position"), REGIONS, ids=[r for r, _ in REGIONS])
def test_blob_with_a_flipped_bit_is_rejected(
    kind: Kind, region: str, position: int | None, bit: int, rejects: Callable[..., DecryptionFailed]
) -> None:
    blob = _sealed(kind)
    tampered = _flip(blob, _offset(blob, position), bit)
    rejects(lambda: kind.decrypt(KEY, kind.row, tampered), kind.plaintext, KEY)


@pytest.mark.parametrize("offset", range(HEADER + NONCE + 1 + TAG))
def test_short_blob_with_any_byte_changed_is_rejected(offset: int, rejects: Callable[..., DecryptionFailed]) -> None:
    kind = KINDS[3]
    blob = kind.encrypt(KEY, kind.row, b"x")
    assert len(blob) == HEADER + NONCE + 1 + TAG
    for bit in (1, 2, 4, 8, 16, 32, 64, 128, 0xFF):
        tampered = _flip(blob, offset, bit)
        rejects(lambda t=tampered: kind.decrypt(KEY, kind.row, t), KEY)


@by_kind
def test_blob_truncated_to_any_length_is_rejected(kind: Kind, rejects: Callable[..., DecryptionFailed]) -> None:
    blob = _sealed(kind)
    for length in range(len(blob)):
        rejects(lambda n=length: kind.decrypt(KEY, kind.row, blob[:n]), kind.plaintext, KEY)


@by_kind
@pytest.mark.parametrize("extra", [b"\x00", bytes(16), b"\xff" * 16], ids=["1-zero", "16-zero", "16-ff"])
def test_blob_with_bytes_appended_is_rejected(
    kind: Kind, extra: bytes, rejects: Callable[..., DecryptionFailed]
) -> None:
    blob = _sealed(kind)
    rejects(lambda: kind.decrypt(KEY, kind.row, blob + extra), kind.plaintext, KEY)


@by_kind
def test_blob_with_bytes_prepended_is_rejected(kind: Kind, rejects: Callable[..., DecryptionFailed]) -> None:
    blob = _sealed(kind)
    rejects(lambda: kind.decrypt(KEY, kind.row, blob[:HEADER] + b"\x00" + blob[HEADER:]), kind.plaintext, KEY)


@by_kind
def test_blob_with_ciphertext_of_another_blob_is_rejected(kind: Kind, rejects: Callable[..., DecryptionFailed]) -> None:
    """Splice the nonce and body of one encryption onto the header of another."""
    first, second = _sealed(kind), _sealed(kind)
    spliced = first[: HEADER + NONCE] + second[HEADER + NONCE :]
    rejects(lambda: kind.decrypt(KEY, kind.row, spliced), kind.plaintext, KEY)


# -- moving a blob to another row -----------------------------------------------------


def _moves(kind: Kind) -> list[tuple[str, Row]]:
    row = kind.row
    moves = {
        "client_id": replace(row, client_id=row.client_id + 1),
        "secret_id": replace(row, secret_id=row.secret_id + 1),
        "version": replace(row, version=row.version + 1),
        "purpose": replace(row, purpose=kind.other_purpose or ""),
        "key_version": replace(row, key_version=row.key_version + 1),
    }
    return [(name, moves[name]) for name in kind.binds]


MOVES = [(kind, field, row) for kind in KINDS for field, row in _moves(kind)]


@pytest.mark.parametrize(("kind", "field", "row"), MOVES, ids=[f"{k.name}-{f}" for k, f, _ in MOVES])
def test_blob_moved_to_another_row_is_rejected(
    kind: Kind, field: str, row: Row, rejects: Callable[..., DecryptionFailed]
) -> None:
    blob = _sealed(kind)
    rejects(lambda: kind.decrypt(KEY, row, blob), kind.plaintext, KEY)


@by_kind
def test_blob_with_key_version_rewritten_in_its_header_is_rejected(
    kind: Kind, rejects: Callable[..., DecryptionFailed]
) -> None:
    """The header is authenticated: claiming another key version does not verify."""
    blob = _sealed(kind)
    other = replace(kind.row, key_version=kind.row.key_version + 1)
    rewritten = blob[:2] + struct.pack(">I", other.key_version) + blob[6:]
    rejects(lambda: kind.decrypt(KEY, other, rewritten), kind.plaintext, KEY)


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [((7, 42, 3), (8, 42, 3)), ((7, 42, 3), (7, 43, 3)), ((7, 42, 3), (7, 42, 4)), ((1, 23, 4), (12, 3, 4))],
    ids=["another-client", "another-secret", "another-version", "digits-regrouped"],
)
def test_blob_moved_to_another_secret_is_rejected(
    mine: tuple[int, int, int], theirs: tuple[int, int, int], rejects: Callable[..., DecryptionFailed]
) -> None:
    blob = blobs.encrypt_secret_field(DATA_KEY, 1, PASSWORD, *mine, "password")
    rejects(lambda: blobs.decrypt_secret_field(DATA_KEY, 1, blob, *theirs, "password"), PASSWORD, DATA_KEY)


@by_kind
def test_blob_under_the_wrong_key_is_rejected(kind: Kind, rejects: Callable[..., DecryptionFailed]) -> None:
    blob = _sealed(kind)
    rejects(lambda: kind.decrypt(OTHER_KEY, kind.row, blob), kind.plaintext, KEY, OTHER_KEY)


CROSSINGS = [(a, b) for a in KINDS for b in KINDS if a.blob_type != b.blob_type]


@pytest.mark.parametrize(("source", "target"), CROSSINGS, ids=[f"{a.name}->{b.name}" for a, b in CROSSINGS])
def test_blob_of_one_type_is_rejected_by_the_decrypt_of_another(
    source: Kind, target: Kind, rejects: Callable[..., DecryptionFailed]
) -> None:
    blob = source.encrypt(KEY, target.row, source.plaintext)
    rejects(lambda: target.decrypt(KEY, target.row, blob), source.plaintext, KEY)
    # Even with the type byte rewritten, the label in the associated data differs.
    retyped = blob[:1] + bytes([target.blob_type]) + blob[2:]
    rejects(lambda: target.decrypt(KEY, target.row, retyped), source.plaintext, KEY)


def test_wrapped_value_that_is_not_a_32_byte_key_is_rejected(rejects: Callable[..., DecryptionFailed]) -> None:
    row = Row()
    context = (row.client_id, row.secret_id, row.version)
    short = blobs.encrypt_blob(KEY, BLOB_DATA_KEY, row.key_version, DATA_KEY[:16], context)
    rejects(lambda: blobs.unwrap_data_key(KEY, row.key_version, short, *context), DATA_KEY[:16], KEY)


def test_every_decryption_failure_has_the_same_message(rejects: Callable[..., DecryptionFailed]) -> None:
    kind = KINDS[0]
    blob = _sealed(kind)
    failures = [
        lambda: kind.decrypt(KEY, kind.row, b""),
        lambda: kind.decrypt(KEY, kind.row, blob[:-1]),
        lambda: kind.decrypt(KEY, kind.row, _flip(blob, 0)),
        lambda: kind.decrypt(KEY, kind.row, _flip(blob, 1)),
        lambda: kind.decrypt(KEY, replace(kind.row, key_version=9), blob),
        lambda: kind.decrypt(KEY, kind.row, _flip(blob, len(blob) - 1)),
        lambda: kind.decrypt(OTHER_KEY, kind.row, blob),
        lambda: kind.decrypt(KEY, replace(kind.row, client_id=0), blob),
        lambda: blobs.blob_key_version(b"\x01\x01"),
    ]
    messages = {str(rejects(call, PASSWORD, KEY)) for call in failures}
    assert messages == {"cannot decrypt: the data is corrupted, was moved, or the key is wrong"}


# -- programming errors are not decryption failures ------------------------------------

BAD_KEYS = [b"", bytes(16), bytes(31), bytes(33), bytes(64), bytearray(32), "k" * 32]


@by_kind
@pytest.mark.parametrize("bad_key", BAD_KEYS, ids=["0", "16", "31", "33", "64", "bytearray", "str"])
def test_key_that_is_not_32_bytes_is_a_value_error(kind: Kind, bad_key: bytes) -> None:
    blob = _sealed(kind)
    with pytest.raises(ValueError, match="32 bytes") as info:
        kind.encrypt(bad_key, kind.row, kind.plaintext)
    assert not isinstance(info.value, DecryptionFailed)
    with pytest.raises(ValueError, match="32 bytes") as info:
        kind.decrypt(bad_key, kind.row, blob)
    assert not isinstance(info.value, DecryptionFailed)


@pytest.mark.parametrize("bad_data_key", [b"", bytes(16), bytes(33)], ids=["0", "16", "33"])
def test_wrapping_a_data_key_that_is_not_32_bytes_is_a_value_error(bad_data_key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        blobs.wrap_data_key(KEY, 1, bad_data_key, 1, 2, 3)


@pytest.mark.parametrize("key_version", [-1, 2**32, 2**40])
def test_key_version_out_of_range_is_a_value_error(key_version: int) -> None:
    with pytest.raises(ValueError, match="key version"):
        blobs.encrypt_client_field(KEY, key_version, b"value", 1, "slug")


def test_new_keys_are_fresh_32_byte_keys() -> None:
    keys = {blobs.new_key() for _ in range(64)}
    assert len(keys) == 64
    assert {len(k) for k in keys} == {32}


# -- properties --------------------------------------------------------------------------

ids_st = st.integers(min_value=-(2**63), max_value=2**63 - 1)
rows_st = st.builds(
    Row,
    client_id=ids_st,
    secret_id=ids_st,
    version=ids_st,
    purpose=st.text(max_size=24),
    key_version=st.integers(min_value=0, max_value=2**32 - 1),
)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), kind=st.sampled_from(KINDS), row=rows_st)
def test_decrypt_inverts_encrypt_and_any_single_bit_flip_fails(
    data: st.DataObject, kind: Kind, row: Row, rejects: Callable[..., DecryptionFailed]
) -> None:
    if kind.blob_type == BLOB_DATA_KEY:
        plaintext = data.draw(st.binary(min_size=32, max_size=32), label="data key")
    else:
        plaintext = data.draw(st.binary(max_size=300), label="plaintext")
    blob = kind.encrypt(KEY, row, plaintext)
    assert kind.decrypt(KEY, row, blob) == plaintext
    bit = data.draw(st.integers(min_value=0, max_value=len(blob) * 8 - 1), label="bit")
    tampered = _flip(blob, bit // 8, 1 << (bit % 8))
    rejects(lambda: kind.decrypt(KEY, row, tampered), KEY)


# -- the batch re-wrap of a client-key rotation --------------------------------------------


def test_rewrap_data_keys_gives_what_unwrap_then_wrap_gives() -> None:
    old = {1: b"\x01" * 32, 2: b"\x02" * 32}
    new = b"\x03" * 32
    data_keys = [bytes([i]) * 32 for i in range(4)]
    rows = [
        (10 + i, 1 + i % 2, 1 + i % 2, blobs.wrap_data_key(old[1 + i % 2], 1 + i % 2, dk, 7, 10 + i, 1 + i % 2))
        for i, dk in enumerate(data_keys)
    ]
    rewrapped = blobs.rewrap_data_keys(old, new, 3, 7, rows)
    for (secret_id, version, _kv, _w), blob, dk in zip(rows, rewrapped, data_keys, strict=True):
        assert blob[:6] == struct.pack(">BBI", 1, blob[1], 3)
        assert blobs.unwrap_data_key(new, 3, blob, 7, secret_id, version) == dk
        with pytest.raises(DecryptionFailed):  # bound to its row, as wrap_data_key binds it
            blobs.unwrap_data_key(new, 3, blob, 7, secret_id + 100, version)


@pytest.mark.parametrize(
    "change",
    ["flip", "truncate", "moved row", "other client", "wrong key version", "header rewritten"],
)
def test_rewrap_data_keys_refuses_what_unwrap_refuses(change: str) -> None:
    old, new = {1: b"\x01" * 32, 2: b"\x09" * 32}, b"\x03" * 32
    wrapped = blobs.wrap_data_key(old[1], 1, b"\x05" * 32, 7, 10, 1)
    row, client = (10, 1, 1, wrapped), 7
    if change == "flip":
        row = (10, 1, 1, wrapped[:-1] + bytes([wrapped[-1] ^ 1]))
    elif change == "truncate":
        row = (10, 1, 1, wrapped[:20])
    elif change == "moved row":
        row = (11, 1, 1, wrapped)
    elif change == "other client":
        client = 8
    elif change == "wrong key version":
        row = (10, 1, 2, wrapped)
    elif change == "header rewritten":
        row = (10, 1, 2, wrapped[:2] + struct.pack(">I", 2) + wrapped[6:])
    with pytest.raises(DecryptionFailed):
        blobs.unwrap_data_key(old[row[2]], row[2], row[3], client, row[0], row[1])
    with pytest.raises(DecryptionFailed):
        blobs.rewrap_data_keys(old, new, 3, client, [row])


# -- the batch opening of a listing ----------------------------------------------------------


def _listed_secret(
    client_key: bytes, ck_version: int, client_id: int, secret_id: int, version: int
) -> tuple[bytes, bytes, bytes]:
    data_key = bytes([secret_id % 256]) * 32
    wrapped = blobs.wrap_data_key(client_key, ck_version, data_key, client_id, secret_id, version)
    metadata = blobs.encrypt_secret_field(
        data_key, ck_version, b'{"name":"n"}', client_id, secret_id, version, "metadata"
    )
    return data_key, wrapped, metadata


def test_secret_opener_gives_what_unwrap_then_decrypt_gives() -> None:
    key = b"\x01" * 32
    opener = blobs.SecretOpener(key, 2, 7)
    for secret_id, version in ((10, 1), (11, 3), (2**40, 2**33)):
        data_key, wrapped, metadata = _listed_secret(key, 2, 7, secret_id, version)
        assert opener.data_key(wrapped, secret_id, version) == data_key
        assert opener.data_key(wrapped, secret_id, version) == blobs.unwrap_data_key(
            key, 2, wrapped, 7, secret_id, version
        )
        expected = blobs.decrypt_secret_field(data_key, 2, metadata, 7, secret_id, version, "metadata")
        assert opener.field(data_key, metadata, secret_id, version, "metadata") == expected == b'{"name":"n"}'
    assert "\\x01" not in repr(opener) and "redacted" in repr(opener)


@pytest.mark.parametrize(
    "change",
    [
        "flip",
        "truncate",
        "moved row",
        "other version",
        "other client",
        "wrong key version",
        "header rewritten",
        "other purpose",
        "wrong blob type",
        "bool id",
    ],
)
def test_secret_opener_refuses_what_the_single_recipes_refuse(change: str) -> None:
    """Each tampering both ways: the per-secret recipes refuse it, and so does the batch."""
    key = b"\x01" * 32
    data_key, wrapped, metadata = _listed_secret(key, 1, 7, 10, 1)
    client, secret_id, version, purpose, ck = 7, 10, 1, "metadata", 1
    error: type[Exception] = DecryptionFailed
    if change == "flip":
        wrapped = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
        metadata = metadata[:-1] + bytes([metadata[-1] ^ 1])
    elif change == "truncate":
        wrapped, metadata = wrapped[:20], metadata[:20]
    elif change == "moved row":
        secret_id = 11
    elif change == "other version":
        version = 2
    elif change == "other client":
        client = 8
    elif change == "wrong key version":
        ck = 2
    elif change == "header rewritten":
        wrapped = wrapped[:2] + struct.pack(">I", 2) + wrapped[6:]
        metadata = metadata[:2] + struct.pack(">I", 2) + metadata[6:]
    elif change == "other purpose":
        purpose = "password"
    elif change == "wrong blob type":
        wrapped, metadata = metadata, wrapped
    elif change == "bool id":
        secret_id, error = True, TypeError  # type: ignore[assignment]
    opener = blobs.SecretOpener(key, ck, client)
    if change != "other purpose":  # a purpose is the field's only
        with pytest.raises(error):
            blobs.unwrap_data_key(key, ck, wrapped, client, secret_id, version)
        with pytest.raises(error):
            opener.data_key(wrapped, secret_id, version)
    if change == "wrong key version":
        return  # the field's key version is its header's: only the data key names the client key's
    with pytest.raises(error):
        blobs.decrypt_secret_field(
            data_key, blobs.blob_key_version(metadata), metadata, client, secret_id, version, purpose
        )
    with pytest.raises(error):
        opener.field(data_key, metadata, secret_id, version, purpose)


def test_secret_opener_refuses_a_key_version_no_blob_can_name() -> None:
    with pytest.raises(DecryptionFailed):
        blobs.SecretOpener(b"\x01" * 32, 2**32, 7)
    with pytest.raises(ValueError, match="32 bytes"):
        blobs.SecretOpener(b"\x01" * 31, 1, 7)
