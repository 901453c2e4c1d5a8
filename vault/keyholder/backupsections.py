"""A backup's sections as the keyholder seals and opens them, and the key export it opens.

A section's plaintext (docs/format.md §11) is a JSON object: each table's name to its rows,
each row an object of column to value (bytes and times tagged: ``backupfile.encode``); the
global section also holds ``_sections`` (the manifest: every other section's name) and
``_counters`` (the last id each serial table handed out). Sections are sealed under a
backup key with the vault's id, the backup's id and the section's name as associated data
(``blobs.encrypt_backup_section``): a section moved to another name or file does not open.

What the associated data cannot say, ``check_section`` does: a client's section holds that
client's rows only (every row names the client, or one of the client's secrets), an audit
section the audit log only, the global section no client's rows. A backup is sealed only
after its sections pass, and a restore writes nothing unless every section passes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from vault.authority.backup_requests import (
    AUDIT,
    AUDIT_TABLE,
    CLIENT,
    CLIENT_BINDING,
    GLOBAL,
    GLOBAL_TABLES,
    SectionRows,
    TableRows,
    Value,
)
from vault.crypto import keyrecord, sealing, shamir
from vault.crypto.labels import LABEL_BACKUP_KEYS, LABEL_BACKUP_SERVER_KEYS
from vault.errors import DecryptionFailed, InvalidInput, RecoveryShareError, UntrustedRecord
from vault.keyholder.backupfile import decode, encode
from vault.keyholder.keys import RootBundle

MANIFEST, COUNTERS = "_sections", "_counters"


def section_name(section: SectionRows, audit_index: int) -> str:
    if section.kind == AUDIT:
        return f"audit:{audit_index}"
    if section.kind == CLIENT:
        return f"client:{section.client_id}"
    return "global"


def check_section(section: SectionRows) -> None:
    """The section holds only what its kind may: UntrustedRecord otherwise (before it is sealed
    or written). A client's section: that client's row once, and rows each naming that client
    (or, for versions, one of its secrets); an audit section: audit events; the global
    section: no table of a client's."""
    names = [t.table for t in section.tables]
    if len(names) != len(set(names)):
        raise UntrustedRecord("a backup section names a table twice")
    if section.kind == AUDIT:
        if names != [AUDIT_TABLE]:
            raise UntrustedRecord("an audit section of the backup holds other rows than audit events")
        return
    if section.kind == GLOBAL:
        if not set(names) <= set(GLOBAL_TABLES):
            raise UntrustedRecord("the global section of the backup holds rows of a client")
        return
    client_id = section.client_id
    if section.kind != CLIENT or not isinstance(client_id, int) or not set(names) <= set(CLIENT_BINDING):
        raise UntrustedRecord("a client section of the backup holds rows of another kind")
    tables = {t.table: t for t in section.tables}
    own = _column(tables.get("clients"), "id")
    if own != [client_id]:
        raise UntrustedRecord(f"the section of client #{client_id} does not hold that client's row once")
    secrets = set(_column(tables.get("secrets"), "id"))
    for table in section.tables:
        column = CLIENT_BINDING[table.table]
        allowed = secrets if column == "secret_id" else {client_id}
        if not set(_column(table, column)) <= allowed:
            raise UntrustedRecord(f"the section of client #{client_id} holds {table.table} of another client")
        if table.table == "checkouts" and not set(_column(table, "secret_id")) <= secrets:
            raise UntrustedRecord(f"the section of client #{client_id} holds checkouts of another client")


def _column(table: TableRows | None, column: str) -> list[Value]:
    if table is None or not table.rows:
        return []
    if column not in table.columns:
        raise UntrustedRecord(f"the backup's {table.table} rows have no {column}")
    at = table.columns.index(column)
    return [row[at] for row in table.rows]


# -- the plaintext of a section ------------------------------------------------------------------


def section_plaintext(section: SectionRows, extra: dict[str, Any] | None = None) -> bytes:
    document: dict[str, Any] = {
        t.table: [{k: encode(v) for k, v in zip(t.columns, row, strict=True)} for row in t.rows] for t in section.tables
    }
    document.update(extra or {})
    return json.dumps(document).encode("utf-8")


def opened_section(kind: str, client_id: int | None, plain: bytes) -> tuple[SectionRows, dict[str, Any]]:
    """The rows of an opened section, and its other entries (the global section's manifest
    and counters); InvalidInput if it is not a section's JSON."""
    try:
        document = json.loads(plain)
    except ValueError:
        raise DecryptionFailed() from None
    if not isinstance(document, dict):
        raise InvalidInput("the backup has a malformed section", hint="use an unmodified backup")
    tables, extra = [], {}
    for name, found in document.items():
        if name in (MANIFEST, COUNTERS):
            extra[name] = found
            continue
        if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
            raise InvalidInput("the backup has a malformed section", hint="use an unmodified backup")
        columns = tuple(found[0]) if found else ()
        if any(tuple(r) != columns for r in found):
            raise InvalidInput("the backup has a malformed section", hint="use an unmodified backup")
        rows = tuple(tuple(decode(r[c]) for c in columns) for r in found)
        tables.append(TableRows(str(name), tuple(str(c) for c in columns), rows))
    return SectionRows(kind, client_id, tuple(tables)), extra


def count_rows(section: SectionRows, table: str) -> int:
    return sum(len(t.rows) for t in section.tables if t.table == table)


# -- the key export ----------------------------------------------------------------------------------


def open_key_export(
    keys: dict[str, Any], vault_id: bytes, admin: str | None, passphrase: str | None, shares: list[str] | None
) -> dict[str, Any]:
    """The backup keys in a key export: opened with the recovery shares, or with an admin's
    passphrase (their key record is in the export)."""
    context = (LABEL_BACKUP_KEYS, vault_id)
    raw = _opened(keys, vault_id, admin, passphrase, shares, context, keys["recovery"], lambda entry: entry["keys"])
    try:
        payload = json.loads(raw)
    except ValueError:
        raise DecryptionFailed() from None
    return cast(dict[str, Any], payload)


def open_server_master_keys(
    keys: dict[str, Any], vault_id: bytes, admin: str | None, passphrase: str | None, shares: list[str] | None
) -> tuple[tuple[int, bytes], ...]:
    """The team server's master keys a key export made on its host carries, as (version, key),
    oldest first (docs/format.md §11): opened as ``open_key_export`` opens the backup keys. An
    export without them is ``InvalidInput``; one whose sealed set was altered or moved from another
    vault's export, ``DecryptionFailed``."""
    carried = keys.get("server_master_keys")
    if not isinstance(carried, dict):
        raise InvalidInput(
            "this key export carries no server master key",
            hint="make the key export on the server's host with its key file "
            "(credvault --server-key FILE backup export-keys)",
        )
    context = (LABEL_BACKUP_SERVER_KEYS, vault_id)
    admins = carried["admins"]
    raw = _opened(keys, vault_id, admin, passphrase, shares, context, carried["recovery"],
                  lambda entry: admins[str(int(entry["id"]))])  # fmt: skip
    try:
        payload = json.loads(raw)
        found = tuple(sorted((int(v), bytes.fromhex(k)) for v, k in payload.items()))
    except (ValueError, AttributeError, TypeError):
        raise DecryptionFailed() from None
    if [v for v, _ in found] != sorted(int(v) for v in carried["versions"]) or any(len(k) != 32 for _, k in found):
        raise UntrustedRecord("the key export's server master keys are not the versions it names")
    return found


def _opened(
    keys: dict[str, Any],
    vault_id: bytes,
    admin: str | None,
    passphrase: str | None,
    shares: list[str] | None,
    context: tuple[bytes, bytes],
    recovery_blob: Any,
    admin_blob: Callable[[dict[str, Any]], Any],
) -> bytes:
    """A set sealed in a key export (``context``), opened with the recovery shares (``recovery_blob``)
    or with a listed admin's passphrase (``admin_blob`` of their entry)."""
    root_version = int(keys["root_version"])
    if shares:
        decoded = [shamir.decode_share(vault_id, text) for text in shares]
        if len({k for k, _, _ in decoded}) != 1:
            raise RecoveryShareError("the shares are from different splits")
        bundle = RootBundle(shamir.combine([(x, y) for _, x, y in decoded], decoded[0][0]), root_version)
        if bundle.recovery.public.hex() != keys.get("recovery_public"):
            raise RecoveryShareError(
                "the shares do not rebuild the recovery key of this key export",
                hint="use shares printed for this vault since its last root rotation",
            )
        return sealing.open_sealed(bundle.recovery, root_version, decode(recovery_blob), context)
    entry = next((a for a in keys["admins"] if a["name"] == admin), None)
    if entry is None or passphrase is None:
        raise InvalidInput("name an admin listed in the key export and give their passphrase, or use recovery shares")
    private = keyrecord.open_record(
        decode(entry["key_record"]), passphrase, vault_id, int(entry["id"]), int(entry["generation"])
    )
    return sealing.open_sealed(
        sealing.KeyPair(private.sealing_private), root_version, decode(admin_blob(entry)), context
    )
