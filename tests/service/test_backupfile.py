"""The backup file itself (vault/service/backupfile.py): written and read a section at a
time, and refused, before any key is used, when it is not whole."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from vault.errors import AlreadyExists, IntegrityError, InvalidInput, StoreUnavailable
from vault.service import backupfile

HEADER = {"vault_id": "00" * 16, "backup_id": "11" * 16, "schema": "0006", "created_at": "x", "audit_head": 3}
SECTIONS = [("audit:0", b"\x01\x07 audit"), ("client:7", b"\x01\x07 client \xff"), ("global", b"\x01\x07 global")]


def _write(path: Path, sections: list[tuple[str, bytes]] = SECTIONS) -> Path:
    with backupfile.private_file(path) as handle:
        out = backupfile.BackupWriter(handle, HEADER)
        for name, blob in sections:
            out.section(name, blob)
        out.end()
    return path


def test_a_backup_reads_back_its_header_and_sections_in_order_as_often_as_asked(tmp_path):
    path = _write(tmp_path / "b.cvbk")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + len(SECTIONS) + 1 and json.loads(lines[-1]) == {"end": len(SECTIONS)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reader = backupfile.BackupReader(path)
    assert reader.header == {"magic": backupfile.MAGIC, "format": 2, **HEADER}
    assert list(reader.sections()) == SECTIONS
    assert list(reader.sections()) == SECTIONS  # read again from the file: a restore's second pass


def test_a_format_1_document_is_still_read(tmp_path):
    document = {"magic": backupfile.MAGIC, "format": 1, **HEADER}
    document["sections"] = {n: {"b": base64.b64encode(b).decode()} for n, b in SECTIONS}
    path = tmp_path / "old.cvbk"
    path.write_text(json.dumps(document), encoding="utf-8")
    reader = backupfile.BackupReader(path)
    assert reader.header == {"magic": backupfile.MAGIC, "format": 1, **HEADER}
    assert list(reader.sections()) == SECTIONS


def test_a_file_that_is_not_a_whole_backup_is_refused_before_anything_is_opened(tmp_path):
    good = _write(tmp_path / "good.cvbk").read_bytes()
    lines = good.splitlines(keepends=True)
    not_backups = {
        "empty": b"",
        "random bytes": bytes(range(256)) * 4,
        "a key export": json.dumps({"magic": backupfile.KEYS_MAGIC, "format": 1}).encode(),
        "an unknown format": good.replace(b'"format": 2', b'"format": 3', 1),
        "format 1 without sections": json.dumps({"magic": backupfile.MAGIC, "format": 1}).encode(),
        "no end line": b"".join(lines[:-1]),
        "cut in a line": good[: len(good) // 2],
        "only the header": lines[0],
    }
    for i, content in enumerate(not_backups.values()):
        (tmp_path / f"{i}.cvbk").write_bytes(content)
        with pytest.raises(InvalidInput):
            list(backupfile.BackupReader(tmp_path / f"{i}.cvbk").sections())
    with pytest.raises(InvalidInput):
        backupfile.BackupReader(tmp_path / "missing.cvbk")


def test_a_section_line_removed_or_malformed_is_refused(tmp_path):
    lines = _write(tmp_path / "good.cvbk").read_bytes().splitlines(keepends=True)
    dropped = tmp_path / "dropped.cvbk"
    dropped.write_bytes(b"".join([lines[0], lines[2], lines[3], lines[4]]))  # the end line still counts 3
    with pytest.raises(IntegrityError):
        list(backupfile.BackupReader(dropped).sections())
    for bad in ({"section": "audit:0"}, {"section": 5, "b": ""}, {"section": "x", "b": "not base64!"}, [1, 2]):
        path = tmp_path / "bad.cvbk"
        path.write_bytes(b"".join([lines[0], json.dumps(bad).encode() + b"\n", *lines[2:]]))
        with pytest.raises(InvalidInput):
            list(backupfile.BackupReader(path).sections())


def test_a_file_is_never_overwritten_and_a_failed_write_leaves_nothing(tmp_path):
    existing = tmp_path / "existing"
    existing.write_text("precious", encoding="utf-8")
    with pytest.raises(AlreadyExists):
        _write(existing)
    assert existing.read_text(encoding="utf-8") == "precious"
    for failure, expected in ((OSError(28, "No space left on device"), StoreUnavailable), (KeyError("x"), KeyError)):
        path = tmp_path / f"cut-{expected.__name__}.cvbk"
        with pytest.raises(expected), backupfile.private_file(path) as handle:
            handle.write("a first section\n")
            raise failure
        assert not path.exists()
    with pytest.raises(StoreUnavailable):
        backupfile.write_private(tmp_path / "no such folder" / "b.cvbk", "x")
