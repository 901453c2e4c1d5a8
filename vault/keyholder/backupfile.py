"""The files of backups and key exports (docs/format.md §11): written and read a section at a time.

The keyholder's: the file is where the admin is, and holds only what the keyholder sealed.

A backup (format 2) is JSON Lines: a header object on the first line, then one line per
encrypted section ``{"section": NAME, "b": BASE64}``, then ``{"end": COUNT}``. A backup of
a million secrets is gigabytes: each section is written as soon as it is made and read
back one line at a time, so neither side holds more than one section. Format 1 (one
JSON document with a ``sections`` object) is still read. A file without its end line
was cut short and is refused before anything is opened.

A key export is one small JSON document (format 1).

Every file is created new (never overwritten), readable by its owner only, and removed
again if writing it fails part way.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from vault.errors import AlreadyExists, IntegrityError, InvalidInput, StoreUnavailable

MAGIC, KEYS_MAGIC = "credvault-backup", "credvault-backup-keys"
FORMAT, READABLE_FORMATS = 2, (1, 2)


def encode(value: Any) -> Any:
    """A column value as JSON: bytes and times are tagged objects."""
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dt.datetime):
        return {"t": value.isoformat()}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict) and "b" in value:
        return base64.b64decode(value["b"], validate=True)
    if isinstance(value, dict) and "t" in value:
        return dt.datetime.fromisoformat(value["t"])
    return value


# -- writing ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def private_file(path: Path) -> Iterator[TextIO]:
    """A new file readable by its owner only, to write to; if anything fails before the
    block ends, the file is removed (a cut-short file never stays behind) and a write
    error is ``StoreUnavailable``. Used inside the transaction that records the file, so
    a failure records nothing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AlreadyExists(f"{Path(path).name} already exists", hint="choose a new file name") from None
    except OSError:
        raise StoreUnavailable(
            f"cannot create {Path(path).name}", hint="check that the folder exists and is writable"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
    except OSError:
        Path(path).unlink(missing_ok=True)
        raise StoreUnavailable(
            f"cannot write {Path(path).name}: nothing was recorded", hint="check free disk space"
        ) from None
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


def write_private(path: Path, content: str) -> None:
    with private_file(path) as out:
        out.write(content)


class BackupWriter:
    """Writes a format-2 backup: the header at once, then each section as it comes."""

    def __init__(self, out: TextIO, header: dict[str, Any]) -> None:
        self._out = out
        self.count = 0
        out.write(json.dumps({"magic": MAGIC, "format": FORMAT, **header}) + "\n")

    def section(self, name: str, blob: bytes) -> None:
        self._out.write(json.dumps({"section": name, "b": base64.b64encode(blob).decode("ascii")}) + "\n")
        self.count += 1

    def end(self) -> None:
        self._out.write(json.dumps({"end": self.count}) + "\n")


# -- reading ---------------------------------------------------------------------------------------


def load_json(path: Path, magic: str, what: str) -> dict[str, Any]:
    """A whole JSON document with this ``magic`` (a key export, or a format-1 backup)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InvalidInput(f"cannot read {Path(path).name}: not a credvault file") from None
    if not isinstance(document, dict) or document.get("magic") != magic or document.get("format") != 1:
        raise InvalidInput(f"{Path(path).name} is not a credvault {what}")
    return document


class BackupReader:
    """A backup file of either format: its ``header`` and, as often as asked, its
    ``sections()`` as (name, blob) pairs, read from the file one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._legacy: dict[str, Any] | None = None
        first = self._first_line()
        if not isinstance(first, dict) or first.get("magic") != MAGIC or first.get("format") not in READABLE_FORMATS:
            raise InvalidInput(f"{self.path.name} is not a credvault backup")
        if first["format"] == 1:
            self._legacy = first  # one document: its sections are in it
            if not isinstance(first.get("sections"), dict):
                raise InvalidInput(f"{self.path.name} is not a credvault backup")
        self.header: dict[str, Any] = {k: v for k, v in first.items() if k != "sections"}
        if self._legacy is None:
            self._check_complete()

    def sections(self) -> Iterator[tuple[str, bytes]]:
        if self._legacy is not None:
            for name, value in self._legacy["sections"].items():
                yield str(name), decode(value)
            return
        count = 0
        with self._open() as handle:
            handle.readline()  # the header
            for line in handle:
                item = self._parse(line)
                if not isinstance(item, dict):
                    raise InvalidInput(f"{self.path.name} has a malformed section", hint="use an unmodified file")
                if "end" in item:
                    if item["end"] != count:
                        raise IntegrityError(
                            f"{self.path.name} does not hold the sections its end line counts",
                            hint="the backup file was altered; use another backup",
                        )
                    return
                count += 1
                name, blob = item.get("section"), item.get("b")
                try:
                    if not isinstance(name, str) or not isinstance(blob, str):
                        raise ValueError(name)
                    raw = base64.b64decode(blob, validate=True)
                except ValueError:
                    raise InvalidInput(
                        f"{self.path.name} has a malformed section", hint="use an unmodified file"
                    ) from None
                yield name, raw
        raise InvalidInput(f"{self.path.name} was cut short", hint="use a complete backup")

    def _first_line(self) -> Any:
        with self._open() as handle:
            try:
                line = handle.readline()
            except ValueError:  # not UTF-8
                raise InvalidInput(f"cannot read {self.path.name}: not a credvault file") from None
            return self._parse(line)

    def _check_complete(self) -> None:
        """The last line must be the end line, counting the sections before it."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 256))
                last = handle.read().splitlines()[-1]
            end = json.loads(last)
        except (OSError, ValueError, IndexError):
            end = None
        if not isinstance(end, dict) or not isinstance(end.get("end"), int):
            raise InvalidInput(f"{self.path.name} was cut short", hint="use a complete backup")

    def _open(self) -> TextIO:
        try:
            return self.path.open(encoding="utf-8")
        except OSError:
            raise InvalidInput(f"cannot read {self.path.name}: not a credvault file") from None

    def _parse(self, line: str) -> Any:
        try:
            return json.loads(line)
        except ValueError:
            raise InvalidInput(f"cannot read {self.path.name}: not a credvault file") from None
