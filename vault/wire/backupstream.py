"""The answer of ``backups.create``: a backup's rows as a stream of JSON lines (docs/format.md §11.1).

A backup is gigabytes for a large vault, so its answer is not an envelope but
``application/x-ndjson``, written a section at a time by the server and read a line at a time
by the admin's keyholder, neither holding more than one section::

    {"backup": {"vault_id": B64, "seq": N, "clients": N, "schema": S, "audit_head": N}}
    {"section": "audit" | "client" | "global", "client_id": N | null, "rows": {TABLE: [ROW, ...]}}
    ...
    {"counters": {TABLE: N, ...}}
    {"end": LINES, "digest": HEX, "key_version": V, "signature": B64}

A row is an object of column to value, bytes and times tagged as in a backup file's sections
(``{"b": base64}``, ``{"t": ISO 8601}``). The end line counts the lines before it and carries
SHA-256 over their bytes (each with its newline), signed by the server's signing key under
``LABEL_SIG_BACKUP_STREAM`` over the vault id, the request's id, the event's seq, the count and
the digest (``stream_fields``): a stream cut short has no end line, a line changed, dropped or
moved does not match the digest, and an end line of another request does not verify. The
admin's keyholder checks every section again before it seals it (``backupsections.check_section``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from vault.authority.backup_requests import AUDIT, CLIENT, GLOBAL, BackupHeader, SectionRows, TableRows
from vault.errors import UntrustedRecord

MEDIA_TYPE = "application/x-ndjson"
Counters = tuple[tuple[str, int], ...]


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dt.datetime):
        return {"t": value.isoformat()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b"} and isinstance(value["b"], str):
        return base64.b64decode(value["b"], validate=True)
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], str):
        return dt.datetime.fromisoformat(value["t"])
    if not isinstance(value, int | str | type(None)):  # a bool is an int (a flag column); never a float
        raise ValueError("not a column value")
    return value


def _line(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8") + b"\n"


def header_line(header: BackupHeader, seq: int, clients: int) -> bytes:
    backup = {
        "vault_id": base64.b64encode(header.vault_id).decode("ascii"),
        "seq": seq,
        "clients": clients,
        "schema": header.schema,
        "audit_head": header.audit_head,
    }
    return _line({"backup": backup})


def section_line(section: SectionRows) -> bytes:
    rows = {t.table: [dict(zip(t.columns, map(_encode, row), strict=True)) for row in t.rows] for t in section.tables}
    return _line({"section": section.kind, "client_id": section.client_id, "rows": rows})


def counters_line(counters: Counters) -> bytes:
    return _line({"counters": {str(t): int(v) for t, v in counters}})


def end_line(count: int, digest: bytes, key_version: int, signature: bytes) -> bytes:
    signed = base64.b64encode(signature).decode("ascii")
    return _line({"end": count, "digest": digest.hex(), "key_version": key_version, "signature": signed})


def stream_fields(vault_id: bytes, request_id: bytes, seq: int, count: int, digest: bytes) -> tuple[Any, ...]:
    """What the end line's signature covers (the one definition: signed and verified with it)."""
    return (vault_id, request_id, seq, count, digest)


# -- reading (the admin's keyholder) ------------------------------------------------------------------


def parsed(line: bytes) -> dict[str, Any]:
    """One line as its object, or UntrustedRecord (nothing of it is shown)."""
    try:
        document = json.loads(line)
    except ValueError:
        raise UntrustedRecord("the server's backup stream has a line that is not JSON") from None
    if not isinstance(document, dict) or len(document) == 0:
        raise UntrustedRecord("the server's backup stream has a malformed line")
    return document


def header_of(document: dict[str, Any]) -> tuple[BackupHeader, int, int]:
    """The header line's ``BackupHeader``, the event's seq and the number of clients."""
    try:
        found = document["backup"]
        vault_id = base64.b64decode(found["vault_id"], validate=True)
        seq, clients, schema, head = found["seq"], found["clients"], found["schema"], found["audit_head"]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (seq, clients, head)):
            raise ValueError("numbers")
        if not isinstance(schema, str):
            raise ValueError("schema")
    except (KeyError, TypeError, ValueError):
        raise UntrustedRecord("the server's backup stream does not begin with its header") from None
    return BackupHeader(vault_id, schema, head), seq, clients


def section_of(document: dict[str, Any]) -> SectionRows:
    """A section line's rows (their tables and columns checked by the keyholder's seal)."""
    try:
        kind, client_id, rows = document["section"], document["client_id"], document["rows"]
        if kind not in (AUDIT, CLIENT, GLOBAL) or not isinstance(rows, dict):
            raise ValueError("kind")
        if (kind == CLIENT) != (isinstance(client_id, int) and not isinstance(client_id, bool)):
            raise ValueError("client")
        tables = []
        for name, found in rows.items():
            if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
                raise ValueError("rows")
            columns = tuple(str(c) for c in found[0]) if found else ()
            if any(tuple(r) != columns for r in found):
                raise ValueError("columns")
            values = tuple(tuple(_decode(r[c]) for c in columns) for r in found)
            tables.append(TableRows(str(name), columns, values))
    except (KeyError, TypeError, ValueError):
        raise UntrustedRecord("the server's backup stream has a malformed section") from None
    return SectionRows(kind, client_id if kind == CLIENT else None, tuple(tables))


def counters_of(document: dict[str, Any]) -> Counters:
    found = document.get("counters")
    if not isinstance(found, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in found.values()
    ):
        raise UntrustedRecord("the server's backup stream has malformed id counters")
    return tuple((str(t), int(v)) for t, v in found.items())


def end_of(document: dict[str, Any]) -> tuple[int, bytes, int, bytes]:
    """The end line's count, digest, key version and signature."""
    try:
        count, version = document["end"], document["key_version"]
        digest = bytes.fromhex(document["digest"])
        signature = base64.b64decode(document["signature"], validate=True)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (count, version)) or len(document) != 4:
            raise ValueError("end")
    except (KeyError, TypeError, ValueError):
        raise UntrustedRecord("the server's backup stream has a malformed end line") from None
    return count, digest, version, signature
