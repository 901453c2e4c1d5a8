"""What the click commands print, written with the standard library alone.

Each function here mirrors one in ``vault.cli.output`` or ``vault.cli.errors`` (named
beside it), on the records' JSON form (``to_json``) that the agent sends: a time is an
ISO-8601 string there, so the callers wrap the fields that are times in ``Time``.
``tests/cli/test_fast.py`` prints the same records both ways and compares the bytes.
"""

from __future__ import annotations

import json
import sys

PROG = "credvault"
USAGE_HINT = "see the command's --help for what it accepts"  # as vault.cli.errors.USAGE_HINT
MAX_MESSAGE = 300  # as vault.cli.errors.MAX_MESSAGE
SHOW_WARNING = "the value holds control characters, printed as '?'; use --json for the exact value"  # cli/output.py

BLOCK = 500  # rows of a streamed table printed together (their widths decided together)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence


class Time:
    """A time field of a record (an ISO-8601 string, or None), printed as ``when`` does."""

    __slots__ = ("iso",)

    def __init__(self, iso: object) -> None:
        self.iso = iso if isinstance(iso, str) else None


def echo(text: str = "", *, err: bool = False) -> None:
    (sys.stderr if err else sys.stdout).write(text + "\n")


def printable(text: str) -> str:  # as vault.cli.errors.printable
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def shortened(text: str) -> str:  # as vault.cli.errors.shortened
    return printable(text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…")


def report(message: str, hint: str) -> None:  # as vault.cli.errors.report
    echo(f"{PROG}: error: {shortened(message)}", err=True)
    if hint:
        echo(f"hint: {shortened(hint)}", err=True)


def when(iso: str | None) -> str:
    """``vault.cli.output.when`` of an ISO-8601 time; one in UTC ("+00:00") is sliced
    rather than parsed (importing datetime costs this path a millisecond)."""
    if iso is None:
        return "-"
    if len(iso) >= 16 and iso.endswith("+00:00") and iso[10] == "T":
        return f"{iso[:10]} {iso[11:16]} UTC"
    import datetime as dt

    return dt.datetime.fromisoformat(iso).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def cell(value: object) -> str:  # as vault.cli.output.cell
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Time):
        return when(value.iso)
    return printable(str(value).replace("\n", " ").replace("\t", " "))


def echo_json(data: object) -> None:  # as vault.cli.output.echo_json
    echo(json.dumps(data, indent=2, ensure_ascii=True))


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str = "(none)") -> None:
    """As ``vault.cli.output.echo_table``."""
    cells = [[cell(value) for value in row] for row in rows]
    if not cells:
        echo(empty)
        return
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    for row in [[h.upper() for h in headers], *cells]:
        echo("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip())


def block_lines(headers: Sequence[str], cells: Iterable[Sequence[str]], block: int = BLOCK) -> Iterator[str]:
    """The lines of a table printed ``block`` rows at a time (``audit log``, the click command's
    and the fast path's): the columns are as wide as the widest cell of the first block, and
    widen (never narrow) for a wider cell later; up to ``block`` rows it is ``echo_table``'s
    text. ``cells`` are the rows already through ``cell``; no line at all when there is none."""
    widths = [len(h) for h in headers]
    rows = iter(cells)
    shown = False
    while chunk := [list(row) for _, row in zip(range(block), rows, strict=False)]:
        widths = [max(w, *(len(row[i]) for row in chunk)) for i, w in enumerate(widths)]
        for row in chunk if shown else [[h.upper() for h in headers], *chunk]:
            yield "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
        shown = True


def echo_pairs(pairs: Iterable[tuple[str, object]]) -> None:
    """As ``vault.cli.output.echo_pairs``."""
    items = list(pairs)
    width = max((len(label) for label, _ in items), default=0) + 1
    for label, value in items:
        lines = value.replace("\t", " ").splitlines() if isinstance(value, str) and value.strip() else [cell(value)]
        echo(f"{(label + ':').ljust(width)}  {printable(lines[0])}".rstrip())
        for line in lines[1:]:
            echo(f"{' ' * width}  {printable(line)}".rstrip())


def shown_value(value: str) -> tuple[str, bool]:  # as vault.cli.output.shown_value
    cleaned = "\n".join("\t".join(printable(part) for part in line.split("\t")) for line in value.split("\n"))
    return cleaned, cleaned != value
