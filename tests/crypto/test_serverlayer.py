"""The server's layer (docs/format.md §4.8–4.9): round trips, and every move or tamper is opaque.

The insider here is a DBA, or a grantee with a copy of the database: they can move a layered
data key to another row, swap server client keys between clients or versions, strip or
rewrite headers. Each such blob must fail to come off with the single opaque
``DecryptionFailed`` (checked through the ``rejects`` fixture: nothing of a key shows).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from vault.crypto import blobs
from vault.crypto import serverlayer as sl
from vault.errors import DecryptionFailed

VAULT = bytes.fromhex("00112233445566778899aabbccddeeff")
SMK = bytes.fromhex("8f1c2a7d43e95b06a1d4c7e02f3b9a5860e1d2c3b4a5968778695a4b3c2d1e0f")
SMK2 = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0")
SCK = bytes.fromhex("d3a1f0c2b4e5968778695a4b3c2d1e0f8f1c2a7d43e95b06a1d4c7e02f3b9a58")
CLIENT_KEY = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90")
DATA_KEY = bytes.fromhex("5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d")
ROW: dict[str, Any] = {"vault_id": VAULT, "client_id": 7, "secret_id": 11, "version": 2, "key_version": 3}
SCK_ROW: dict[str, Any] = {"vault_id": VAULT, "client_id": 7, "sck_version": 1}


def _inner() -> bytes:
    return blobs.wrap_data_key(CLIENT_KEY, 3, DATA_KEY, 7, 11, 2)


def _layered() -> bytes:
    return sl.layer(SCK, 1, _inner(), **ROW)


def test_the_layer_comes_off_to_the_inner_blob_and_only_the_client_key_opens_that():
    inner = _inner()
    layered = sl.layer(SCK, 1, inner, **ROW)
    assert sl.is_layered(layered) and not sl.is_wrapped_data_key(layered)
    assert sl.sck_version(layered) == 1
    assert DATA_KEY not in layered and inner not in layered
    off = sl.unlayer(SCK, 1, layered, **ROW)
    assert off == inner and sl.is_wrapped_data_key(off)
    assert blobs.unwrap_data_key(CLIENT_KEY, 3, off, 7, 11, 2) == DATA_KEY


def test_the_client_key_alone_opens_nothing_of_a_layered_blob(rejects):
    """A grantee with a database copy and the client key: the layer is still on."""
    rejects(lambda: blobs.unwrap_data_key(CLIENT_KEY, 3, _layered(), 7, 11, 2), DATA_KEY, CLIENT_KEY)


@pytest.mark.parametrize(
    "moved",
    [
        {"client_id": 8},
        {"secret_id": 12},
        {"version": 1},
        {"key_version": 2},
        {"vault_id": bytes(16)},
    ],
    ids=["other client", "other secret", "other version", "other key version", "other vault"],
)
def test_a_layered_key_moved_to_another_row_does_not_come_off(rejects, moved):
    layered = _layered()
    rejects(lambda: sl.unlayer(SCK, 1, layered, **{**ROW, **moved}), SCK, DATA_KEY)


def test_a_layered_key_does_not_come_off_under_another_server_client_key_or_version(rejects):
    layered = _layered()
    rejects(lambda: sl.unlayer(SMK, 1, layered, **ROW), SCK)
    rejects(lambda: sl.unlayer(SCK, 2, layered, **ROW), SCK)


def test_each_byte_flipped_and_each_truncation_is_refused(rejects):
    layered = _layered()
    for i in range(len(layered)):
        tampered = layered[:i] + bytes([layered[i] ^ 0x01]) + layered[i + 1 :]
        rejects(lambda t=tampered: sl.unlayer(SCK, 1, t, **ROW), SCK)
    for n in range(len(layered)):
        rejects(lambda n=n: sl.unlayer(SCK, 1, layered[:n], **ROW), SCK)


def test_an_inner_blob_naming_another_key_version_than_its_row_is_refused_both_ways(rejects):
    """The row says client-key version 3; a DBA swaps in a data key wrapped under version 2."""
    other = blobs.wrap_data_key(CLIENT_KEY, 2, DATA_KEY, 7, 11, 2)
    rejects(lambda: sl.layer(SCK, 1, other, **ROW), DATA_KEY)
    # made by a server that layered it with the inner's own version, then the row's version moved
    layered = sl.layer(SCK, 1, other, **{**ROW, "key_version": 2})
    rejects(lambda: sl.unlayer(SCK, 1, layered, **ROW), SCK)


@pytest.mark.parametrize(
    "not_a_wrapped_key",
    [
        b"",
        bytes(66),
        blobs.encrypt_client_field(CLIENT_KEY, 3, DATA_KEY, 7, "slug"),  # another blob type
        None,  # filled in below: an already layered blob (no double layer)
    ],
    ids=["empty", "zeros", "client field", "layered twice"],
)
def test_the_server_layers_only_a_wrapped_data_key(rejects, not_a_wrapped_key):
    blob = _layered() if not_a_wrapped_key is None else not_a_wrapped_key
    rejects(lambda: sl.layer(SCK, 1, blob, **ROW), SCK)


def test_a_server_client_key_round_trips_and_rewraps_under_the_next_master_key():
    blob = sl.wrap_client_key(SMK, 4, SCK, **SCK_ROW)
    assert sl.smk_version(blob) == 4 and SCK not in blob
    assert sl.unwrap_client_key(SMK, 4, blob, **SCK_ROW) == SCK
    moved = sl.rewrap_client_key((SMK, 4), (SMK2, 5), blob, **SCK_ROW)
    assert sl.smk_version(moved) == 5
    assert sl.unwrap_client_key(SMK2, 5, moved, **SCK_ROW) == SCK


@pytest.mark.parametrize(
    "moved",
    [{"client_id": 8}, {"sck_version": 2}, {"vault_id": bytes(16)}],
    ids=["other client", "other version", "other vault"],
)
def test_a_server_client_key_swapped_to_another_client_or_version_is_refused(rejects, moved):
    """A DBA copies client 7's server key row onto client 8 (or onto another version)."""
    blob = sl.wrap_client_key(SMK, 4, SCK, **SCK_ROW)
    rejects(lambda: sl.unwrap_client_key(SMK, 4, blob, **{**SCK_ROW, **moved}), SCK, SMK)


def test_a_server_client_key_does_not_open_under_another_master_key_or_version(rejects):
    blob = sl.wrap_client_key(SMK, 4, SCK, **SCK_ROW)
    rejects(lambda: sl.unwrap_client_key(SMK2, 4, blob, **SCK_ROW), SCK, SMK2)
    rejects(lambda: sl.unwrap_client_key(SMK, 5, blob, **SCK_ROW), SCK, SMK)
    rejects(lambda: sl.rewrap_client_key((SMK2, 4), (SMK, 5), blob, **SCK_ROW), SCK)


def test_the_two_layouts_cannot_stand_in_for_each_other(rejects):
    """The same key under the same key: a §4.8 blob is no §4.9 blob (type byte and label differ)."""
    wrapped_sck = sl.wrap_client_key(SCK, 1, DATA_KEY, vault_id=VAULT, client_id=7, sck_version=1)
    rejects(lambda: sl.unlayer(SCK, 1, wrapped_sck, **ROW), DATA_KEY)
    rejects(lambda: sl.unwrap_client_key(SCK, 1, _layered(), **SCK_ROW), SCK)


def test_version_readers_refuse_the_other_layout_and_short_blobs():
    layered, wrapped = _layered(), sl.wrap_client_key(SMK, 4, SCK, **SCK_ROW)
    for call, blob in ((sl.sck_version, wrapped), (sl.smk_version, layered), (sl.sck_version, b"\x01\x09")):
        with pytest.raises(DecryptionFailed):
            call(blob)


def test_a_server_client_key_must_be_32_bytes():
    with pytest.raises(ValueError):
        sl.wrap_client_key(SMK, 4, SCK[:31], **SCK_ROW)


def test_the_layout_is_the_documented_one():
    """§4.9: 0x01 || 0x09 || sck_version (4, big-endian) || nonce (12) || AES-256-GCM(inner 66 B) || tag."""
    layered = _layered()
    assert layered[:2] == b"\x01\x09" and struct.unpack(">I", layered[2:6]) == (1,)
    assert len(layered) == 6 + 12 + 66 + 16
    wrapped = sl.wrap_client_key(SMK, 4, SCK, **SCK_ROW)
    assert wrapped[:2] == b"\x01\x08" and struct.unpack(">I", wrapped[2:6]) == (4,)
    assert len(wrapped) == 6 + 12 + 32 + 16


def _importers_of_the_layer() -> list[str]:
    import ast
    from pathlib import Path

    import vault

    root = Path(vault.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            if any(name == "vault.crypto.serverlayer" for name in names):
                found.append(str(path.relative_to(root)))
    return found


def test_only_the_server_imports_the_layer_recipes():
    """The keyholder never removes the layer, and the authority never holds the server key."""
    assert all(path.startswith("server/") for path in _importers_of_the_layer()), _importers_of_the_layer()
