"""Printing results: aligned plain-text tables for people, JSON for scripts.

Everything printed from the database goes through ``printable`` first: names and notes
are validated when written, but a reader should not trust a database that someone
else may have edited to carry terminal escapes. JSON output escapes every non-ASCII
character, so it is safe to print as it is.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import click

from .errors import printable

_URL_PASSWORD = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*):[^@/]*@")


class Record(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def when(value: dt.datetime | None) -> str:
    """A time as people read it: UTC, to the minute."""
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def cell(value: object) -> str:
    """One table cell: never empty, one line, no control characters."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return when(value)
    return printable(str(value).replace("\n", " ").replace("\t", " "))


def safe_url(url: str) -> str:
    """A database URL with its password, if any, replaced by ***."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


def say(text: str, *, err: bool = False) -> None:
    """One line of text that may quote names or metadata read from the database: printed
    with control and escape characters neutralised (``printable``)."""
    click.echo(printable(text), err=err)


def shown_value(value: str) -> tuple[str, bool]:
    """A revealed value as ``checkout --show`` prints it: lines and tabs kept, every other
    control or escape character replaced by '?'; and whether anything was replaced (then
    the exact value is only in --json or the clipboard)."""
    lines = value.split("\n")
    cleaned = "\n".join("\t".join(printable(part) for part in line.split("\t")) for line in lines)
    return cleaned, cleaned != value


SHOW_WARNING = "the value holds control characters, printed as '?'; use --json for the exact value"


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=True))


def echo_records(records: Iterable[Record]) -> None:
    echo_json([record.to_json() for record in records])


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str = "(none)") -> None:
    """Columns padded to their widest cell, two spaces apart, headers in capitals."""
    cells = [[cell(value) for value in row] for row in rows]
    if not cells:
        click.echo(empty)
        return
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    for row in [[h.upper() for h in headers], *cells]:
        click.echo("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip())


def echo_pairs(pairs: Iterable[tuple[str, object]]) -> None:
    """``label: value`` lines, labels aligned; multi-line values indented under them."""
    items = list(pairs)
    width = max((len(label) for label, _ in items), default=0) + 1
    for label, value in items:
        lines = value.replace("\t", " ").splitlines() if isinstance(value, str) and value.strip() else [cell(value)]
        click.echo(f"{(label + ':').ljust(width)}  {printable(lines[0])}".rstrip())
        for line in lines[1:]:
            click.echo(f"{' ' * width}  {printable(line)}".rstrip())
