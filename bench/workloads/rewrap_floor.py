"""W3's floor: re-wrap N data keys with plain ``sqlite3`` and ``cryptography``.

The least work any client-key rotation must do, written without credvault: read the
wrapped data keys of one client's secret versions, unwrap each with AES-256-GCM
under the old client key, wrap it again under the new key with the associated data
of docs/format.md §4.2, and write it back, in batches of ``BATCH`` secrets, each batch
one committed transaction. The database is a copy of the vault's own file (same
table, same indexes, same page layout), opened with the pragmas
``vault/storage/engine.py`` sets (WAL, ``synchronous=FULL``, ``secure_delete``,
``BEGIN IMMEDIATE``), so the floor pays the same durability and scrubbing.

The associated-data encoding is re-implemented here from the specification (§1
``ctx``, §4.2 header and context) rather than imported: the floor shares no code with
what it is compared against. ``check`` then opens a sample with the library's
``blobs.unwrap_data_key``: the floor's output is real format-v1 ciphertext.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

LABEL_DATA_KEY = b"credvault/v1/data-key"
FORMAT_VERSION, BLOB_DATA_KEY = 1, 2
BATCH = 1_000
PRAGMAS = ("journal_mode = WAL", "foreign_keys = ON", "secure_delete = ON", "synchronous = FULL")


def _ctx(*items: bytes | int) -> bytes:
    """docs/format.md §1: each item as 4-byte length || bytes; ints as 8-byte big-endian."""
    out = bytearray()
    for item in items:
        raw = struct.pack(">q", item) if isinstance(item, int) else item
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


def _header(key_version: int) -> bytes:
    return struct.pack(">BBI", FORMAT_VERSION, BLOB_DATA_KEY, key_version)


@dataclass
class Rewrap:
    rows: int
    batches: int


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    return conn


def rewrap(path: str, client_id: int, old_key: bytes, old_version: int, new_key: bytes, new_version: int) -> Rewrap:
    """Re-wrap every data key of ``client_id`` wrapped under ``old_version``; batches of BATCH secrets."""
    conn = connect(path)
    old, new = AESGCM(old_key), AESGCM(new_key)
    old_header, new_header = _header(old_version), _header(new_version)
    last, rows, batches = 0, 0, 0
    try:
        while True:
            conn.execute("BEGIN IMMEDIATE")
            ids = conn.execute(
                "SELECT id FROM secrets WHERE client_id = ? AND id > ? ORDER BY id LIMIT ?", (client_id, last, BATCH)
            ).fetchall()
            if not ids:
                conn.execute("COMMIT")
                break
            first, last = ids[0][0], ids[-1][0]
            updates = []
            for secret_id, version, blob in conn.execute(
                "SELECT v.secret_id, v.version, v.wrapped_dek FROM secret_versions v"
                " JOIN secrets s ON s.id = v.secret_id"
                " WHERE s.client_id = ? AND v.secret_id BETWEEN ? AND ? AND v.key_version = ?",
                (client_id, first, last, old_version),
            ):
                if blob[:6] != old_header:
                    raise ValueError(f"secret {secret_id} v{version}: unexpected header")
                dek = old.decrypt(
                    blob[6:18], blob[18:], _ctx(LABEL_DATA_KEY, old_header, client_id, secret_id, version)
                )
                nonce = os.urandom(12)
                aad = _ctx(LABEL_DATA_KEY, new_header, client_id, secret_id, version)
                updates.append((new_header + nonce + new.encrypt(nonce, dek, aad), new_version, secret_id, version))
            conn.executemany(
                "UPDATE secret_versions SET wrapped_dek = ?, key_version = ? WHERE secret_id = ? AND version = ?",
                updates,
            )
            conn.execute("COMMIT")
            rows += len(updates)
            batches += 1
    finally:
        conn.close()
    return Rewrap(rows, batches)


def sample(path: str, client_id: int, k: int) -> list[tuple[int, int, int, bytes]]:
    """(secret id, version, key version, wrapped key) of ``k`` random versions of the client."""
    conn = connect(path)
    try:
        return conn.execute(
            "SELECT v.secret_id, v.version, v.key_version, v.wrapped_dek FROM secret_versions v"
            " JOIN secrets s ON s.id = v.secret_id WHERE s.client_id = ? ORDER BY random() LIMIT ?",
            (client_id, k),
        ).fetchall()
    finally:
        conn.close()


def count_at(path: str, client_id: int, key_version: int) -> int:
    conn = connect(path)
    try:
        return int(
            conn.execute(
                "SELECT count(*) FROM secret_versions v JOIN secrets s ON s.id = v.secret_id"
                " WHERE s.client_id = ? AND v.key_version = ?",
                (client_id, key_version),
            ).fetchone()[0]
        )
    finally:
        conn.close()
