"""Backup files as one editable document, for tests that alter them (tamper, fuzz).

``read(path)`` turns a backup of either format into the shape of format 1, a dict of
the header fields and ``sections: {name: {"b": base64}}``; ``write(document, path)``
writes such a dict back as format 2 (JSON Lines, with its end line counting the
sections), unless the document says ``format`` 1, which is written as one JSON
document. Tests change the dict in between.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from vault.service.backupfile import BackupReader


def read(path: Path) -> dict[str, Any]:
    reader = BackupReader(path)
    sections = {name: {"b": base64.b64encode(blob).decode("ascii")} for name, blob in reader.sections()}
    return {**reader.header, "sections": sections}


def write(document: dict[str, Any], path: Path) -> Path:
    path.write_text(text(document), encoding="utf-8")
    return path


def text(document: dict[str, Any]) -> str:
    """The file ``write`` makes of ``document``."""
    if document.get("format") == 1 or not isinstance(document.get("sections"), dict):
        return json.dumps(document)
    header = {k: v for k, v in document.items() if k != "sections"}
    lines = [json.dumps(header)]
    lines += [json.dumps({"section": name, **value}) for name, value in document["sections"].items()]
    lines.append(json.dumps({"end": len(document["sections"])}))
    return "\n".join(lines) + "\n"
