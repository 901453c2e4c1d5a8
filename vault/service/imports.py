"""Importing a client's secrets from a file: ``credvault secret import`` (its parsing and checks).

Pure: no I/O but the bytes given. ``parse`` reads a whole file in one of ``FORMATS`` (chosen by
the caller, never guessed) into rows and the problems of its bad rows; ``check`` then holds
each row to what ``secrets.add`` would refuse (``secrets.new_metadata``), a name given twice in
the file, and the names the client already has. Nothing is written unless no row is bad:
``add_planned`` then adds each row through the same public call as ``secret add``, counting as
it goes, so that an import stopped half way says how many were added, and running it again
with ``skip_existing`` adds only the rest.

A row's ``repr`` never shows its password, and no problem quotes a password: a reason names
the row (``line 3``, ``item 2 ('Acme VPN')``) and what is wrong. It quotes no cell of a CSV file
(cells out of place would put a password in the name column; a header run into the first row
would hold one): a bad column is named by its position. What it quotes (a Bitwarden item's or
custom field's name) goes through ``validation.shown`` (ASCII, control characters as '?', cut
short).

    csv        a header row naming columns among CSV_COLUMNS (name and password required)
    keepassxc  KeePassXC's CSV export (Database > Export > CSV): Title as the name, Username,
               Password, URL, Notes as the note, TOTP as the sensitive field ``totp``; its
               Group, Icon and dates are not imported
    bitwarden  Bitwarden's unencrypted JSON export: its login items (other items are left out,
               each named in ``Parsed.left_out``)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

from vault.errors import InvalidInput
from vault.service import validation
from vault.service.secrets import new_metadata

FORMATS = ("csv", "keepassxc", "bitwarden")
MAX_BYTES = 10 * 1024 * 1024  # far more than any client's passwords: a bigger file is a mistake
MAX_ROWS = 10_000
CSV_COLUMNS = ("name", "kind", "username", "password", "url", "host", "note")
CSV_REQUIRED = ("name", "password")
BITWARDEN_LOGIN = 1
BITWARDEN_TYPES = {1: "login", 2: "secure note", 3: "card", 4: "identity", 5: "SSH key"}
BITWARDEN_TEXT, BITWARDEN_HIDDEN, BITWARDEN_BOOLEAN = 0, 1, 2  # a field's type; 3 (linked) holds no value
FIELD_TYPES = (BITWARDEN_TEXT, BITWARDEN_HIDDEN, BITWARDEN_BOOLEAN)
NAME_RULE = "1-128 letters, digits, '.', '_', '@', '+' or '-' (e.g. fw01-admin; no spaces)"
FIELD_KINDS = ("fields", "sensitive_fields", "public_fields")
TOTP_FIELD = "totp"  # a login's authenticator key: a sensitive custom field (revealed by checkout)
# KeePassXC's CSV export: each of its columns, as the column of ours it fills (None: not imported)
KEEPASSXC = {"group": None, "title": "name", "username": "username", "password": "password", "url": "url",
             "notes": "note", "totp": TOTP_FIELD, "icon": None, "last modified": None, "created": None}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ImportRow:
    """One secret to add, as the file gives it; ``where`` names its place (``line 3``)."""

    where: str
    name: str
    password: str = dataclasses.field(repr=False)
    kind: str = "other"
    username: str | None = dataclasses.field(default=None, repr=False)
    url: str | None = dataclasses.field(default=None, repr=False)
    host: str | None = dataclasses.field(default=None, repr=False)
    note: str | None = dataclasses.field(default=None, repr=False)
    fields: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    sensitive_fields: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    public_fields: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    def metadata(self) -> dict[str, Any]:
        """The keyword arguments of ``secrets.add`` besides the ref and the password."""
        return {
            "kind": self.kind,
            "username": self.username,
            "url": self.url,
            "host": self.host,
            "note": self.note,
            "fields": dict(self.fields),
            "sensitive_fields": dict(self.sensitive_fields) or None,
            "public_fields": dict(self.public_fields) or None,
        }


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why the row at ``where`` cannot be imported (never quoting a password)."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Parsed:
    """A file read whole: its rows, the problems of its bad rows, and what it holds that is not
    imported (Bitwarden items that are not logins, each named)."""

    rows: tuple[ImportRow, ...]
    problems: tuple[Problem, ...] = ()
    left_out: tuple[str, ...] = ()
    renamed: tuple[str, ...] = ()  # what ``fix_names`` changed, a line each


@dataclasses.dataclass(frozen=True)
class ImportPlan:
    """What an import of ``client`` does: ``to_add`` in the file's order, ``existing`` left as
    they are (``skip_existing``), and the ``problems`` that make it write nothing."""

    client: str
    to_add: tuple[ImportRow, ...]
    existing: tuple[ImportRow, ...]
    problems: tuple[Problem, ...]
    left_out: tuple[str, ...] = ()

    def ref(self, row: ImportRow) -> str:
        return f"{self.client}/{row.name}"


class SecretAdder(Protocol):
    """The one call an import makes: ``vault.secrets.add`` (in-process, remote or the agent's)."""

    def add(
        self,
        ref: str,
        *,
        password: str,
        kind: str = ...,
        username: str | None = ...,
        url: str | None = ...,
        host: str | None = ...,
        note: str | None = ...,
        fields: dict[str, str] | None = ...,
        sensitive_fields: dict[str, str] | None = ...,
        public_fields: dict[str, str] | None = ...,
    ) -> object: ...


@dataclasses.dataclass
class Progress:
    """How many secrets ``add_planned`` has added so far (read when it stops half way), and
    whom to tell after each (``report(added, total)``: a progress bar)."""

    added: int = 0
    report: Callable[[int, int], None] | None = None


def add_planned(secrets: SecretAdder, plan: ImportPlan, progress: Progress) -> None:
    """Add each row of ``plan`` through ``secrets.add``, one unit of work (and one event) each,
    counting in ``progress``; an error stops it there, what was added staying added."""
    if plan.problems:
        raise InvalidInput("the file has bad rows: nothing is imported", hint="fix the rows named and run it again")
    for row in plan.to_add:
        secrets.add(plan.ref(row), password=row.password, **row.metadata())
        progress.added += 1
        if progress.report is not None:
            progress.report(progress.added, len(plan.to_add))


# -- reading a file ---------------------------------------------------------------------------


def decoded(data: bytes) -> str:
    """``data`` as text: at most MAX_BYTES of UTF-8 (a leading byte-order mark dropped)."""
    if len(data) > MAX_BYTES:
        raise InvalidInput(
            f"the file is larger than {MAX_BYTES // (1024 * 1024)} MiB",
            hint=f"split it into files of at most {MAX_ROWS} rows and import each",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInput(
            f"the file is not UTF-8 text (byte {error.start + 1} is not)",
            hint="export it again as UTF-8, or convert it (e.g. iconv -t UTF-8)",
        ) from None
    return text.removeprefix("\ufeff")


def parse(data: bytes, fmt: str) -> Parsed:
    """The rows of a whole file in format ``fmt``; InvalidInput if the file itself is unusable
    (too big, not UTF-8, no header, not a Bitwarden export, too many rows)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {validation.shown(fmt)}", hint="use one of: " + ", ".join(FORMATS))
    text = decoded(data)
    if fmt == "bitwarden":
        return parse_bitwarden(text)
    return parse_csv(text, KEEPASSXC if fmt == "keepassxc" else {c: c for c in CSV_COLUMNS})


def _too_many() -> InvalidInput:
    return InvalidInput(
        f"the file holds more than {MAX_ROWS} secrets", hint=f"split it into files of at most {MAX_ROWS} rows"
    )


def _header(where: str, row: list[str], known: Mapping[str, str | None]) -> list[str | None]:
    """The columns of ours the header ``row`` names (``known``: each column a file of its format may
    have, as ours; None: not imported). No cell of it is quoted: a first line that names no name and
    password column may be a row of data (a file without a header), and a header whose line break is
    lost runs into the first row, password and all."""
    named = [cell.strip().lower() for cell in row]
    columns = [known.get(c) for c in named]
    hint = "the first line names the columns, e.g. " + ",".join(c for c in known if known[c] is not None)
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        given = next(c for c in known if known[c] == missing[0])
        raise InvalidInput(f"{where} is not a header: it names no {given!r} column", hint=hint)
    unknown = [str(n) for n, c in enumerate(named, start=1) if c not in known]
    if unknown:  # by position: a header run into the first row of data would quote its password
        raise InvalidInput(
            f"{where}: unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:10])} (counted from 1)",
            hint="use columns among: " + ", ".join(known),
        )
    twice = sorted({c for c in named if named.count(c) > 1})
    if twice:
        raise InvalidInput(f"{where}: column {twice[0]!r} is given twice", hint="name each column once")
    return columns


def parse_csv(text: str, known: Mapping[str, str | None]) -> Parsed:
    """A CSV file: a header line naming columns of ``known`` (``_header``), then one secret a line
    (a quoted cell may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[ImportRow] = []
    problems: list[Problem] = []
    columns: list[str | None] | None = None
    start = 1
    try:
        for cells in reader:
            where, start = f"line {start}", reader.line_num + 1
            if not any(cells):
                continue  # a blank line
            if columns is None:
                columns = _header(where, cells, known)
                continue
            if len(cells) != len(columns):
                problems.append(Problem(where, f"has {len(cells)} cells, the header names {len(columns)}"))
            else:
                rows.append(_csv_row(where, {c: v for c, v in zip(columns, cells, strict=True) if c is not None}))
            if len(rows) + len(problems) > MAX_ROWS:
                raise _too_many()
    except csv.Error as error:  # a NUL, a stray quote, a cell over csv's own limit: the rest is unreadable
        problems.append(Problem(f"line {start}", f"not readable as CSV from here ({_csv_reason(error)})"))
    if columns is None:
        if problems:  # the header itself is not readable
            raise InvalidInput(str(problems[0]), hint="the first line names the columns, e.g. name,password")
        raise InvalidInput("the file is empty", hint="the first line names the columns, e.g. name,password")
    return Parsed(tuple(rows), tuple(problems))


def _csv_reason(error: csv.Error) -> str:
    text = str(error)
    return "a cell is too long" if "field limit" in text else validation.shown(text, 80).strip("'\"")


def _csv_row(where: str, cells: dict[str, str]) -> ImportRow:
    def cell(column: str) -> str | None:
        return cells.get(column) or None

    return ImportRow(
        where,
        name=cells["name"],
        password=cells["password"],
        kind=cells.get("kind") or "other",
        username=cell("username"),
        url=cell("url"),
        host=cell("host"),
        note=cell("note"),
        sensitive_fields={TOTP_FIELD: totp} if (totp := cell(TOTP_FIELD)) else {},
    )


def _export(text: str) -> list[Any]:
    """The items of a Bitwarden export, else InvalidInput naming why it is not one."""
    hint = "export the vault from Bitwarden as .json (not encrypted), or give --format csv"
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidInput("the file is not JSON", hint=hint) from None
    if not isinstance(document, dict):
        raise InvalidInput("the file is not a Bitwarden export (no items)", hint=hint)
    if document.get("encrypted") is not False and document.get("encrypted") is not None:
        raise InvalidInput(
            "the Bitwarden export is encrypted", hint="export it again choosing .json, not .json (Encrypted)"
        )
    items = document.get("items")
    if not isinstance(items, list):
        raise InvalidInput("the file is not a Bitwarden export (no items)", hint=hint)
    if len(items) > MAX_ROWS:
        raise _too_many()
    return items


def parse_bitwarden(text: str) -> Parsed:
    """Bitwarden's unencrypted JSON export: each login item a secret; the others left out, named."""
    rows: list[ImportRow] = []
    problems: list[Problem] = []
    left_out: list[str] = []
    for number, item in enumerate(_export(text), start=1):
        where = f"item {number}"
        if not isinstance(item, dict):
            problems.append(Problem(where, "is not an object"))
            continue
        if isinstance(item.get("name"), str):
            where += f" ({validation.shown(item['name'])})"
        kind = item.get("type")
        if not _is(kind, BITWARDEN_LOGIN):
            known = next((f"a {label}" for n, label in BITWARDEN_TYPES.items() if _is(kind, n)), "another item")
            left_out.append(f"{where}: {known}, not a login")
            continue
        try:
            rows.append(_login(where, item))
        except InvalidInput as error:
            problems.append(Problem(where, str(error)))
    return Parsed(tuple(rows), tuple(problems), tuple(left_out))


def _is(value: Any, number: int) -> bool:
    """Whether a JSON value is the whole number ``number`` (``true`` is not 1)."""
    return type(value) is int and value == number


def _text(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise InvalidInput(f"its {what} is not text")


def _login(where: str, item: Mapping[str, Any]) -> ImportRow:
    login = item.get("login")
    if not isinstance(login, dict):
        raise InvalidInput("it has no login")
    uris = login.get("uris") or []
    if not isinstance(uris, list) or not all(isinstance(u, dict) for u in uris):
        raise InvalidInput("its login.uris is not a list of objects")
    found = [_text(u.get("uri"), "uri") for u in uris]
    urls = [u for u in found if u]
    public = {f"uri-{n}": url for n, url in enumerate(urls[1:], start=2)}  # the first is the URL
    fields, sensitive = _fields(item.get("fields"))
    totp = _text(login.get("totp"), "login.totp")
    if totp is not None:
        if TOTP_FIELD in fields or TOTP_FIELD in sensitive:
            raise InvalidInput(f"field {TOTP_FIELD!r} is given twice (a custom field and login.totp)")
        sensitive[TOTP_FIELD] = totp
    twice = sorted(set(public) & (set(fields) | set(sensitive)))
    if twice:
        raise InvalidInput(f"field {validation.shown(twice[0])} is given twice (a custom field and a URI)")
    return ImportRow(
        where,
        name=_text(item.get("name"), "name") or "",
        password=_text(login.get("password"), "login.password") or "",
        username=_text(login.get("username"), "login.username"),
        url=urls[0] if urls else None,
        note=_text(item.get("notes"), "notes"),
        fields=fields,
        sensitive_fields=sensitive,
        public_fields=public,
    )


def _fields(value: Any) -> tuple[dict[str, str], dict[str, str]]:
    """An item's custom fields: (classified by their name, hidden ones: sensitive). A linked
    field, or one without a value, holds nothing to import and is left out."""
    if value is None:
        return {}, {}
    if not isinstance(value, list) or not all(isinstance(f, dict) for f in value):
        raise InvalidInput("its fields are not a list of objects")
    fields: dict[str, str] = {}
    sensitive: dict[str, str] = {}
    for entry in value:
        name = _text(entry.get("name"), "field name")
        if entry.get("value") is None or not any(_is(entry.get("type"), t) for t in FIELD_TYPES):
            continue
        text = _text(entry["value"], f"field {validation.shown(name or '')}") or ""
        if not name:
            raise InvalidInput("a custom field has no name")
        if name in fields or name in sensitive:
            raise InvalidInput(f"field {validation.shown(name)} is given twice")
        (sensitive if _is(entry.get("type"), BITWARDEN_HIDDEN) else fields)[name] = text
    return fields, sensitive


# -- checking the rows against what ``secret add`` accepts and what the client holds ----------


def check(parsed: Parsed, client: str, existing: Collection[str], *, skip_existing: bool = False) -> ImportPlan:
    """The plan of importing ``parsed`` into ``client``, whose secrets are named ``existing``:
    every row checked as ``secrets.add`` checks it; a name twice in the file is a problem, and
    so is one the client has, unless ``skip_existing`` (then it is left as it is, unread)."""
    validation.client_slug(client)
    problems = list(parsed.problems)
    to_add: list[ImportRow] = []
    skipped: list[ImportRow] = []
    first: dict[str, str] = {}
    for row in parsed.rows:
        reasons = row_reasons(client, row)
        if row.name in first:
            reasons.append(f"the name is also on {first[row.name]}")
        elif row.name:
            first[row.name] = row.where.split(" (")[0]
        if row.name in existing and not reasons:
            if not skip_existing:
                problems.append(Problem(row.where, f"{client}/{row.name} already exists (--skip-existing leaves it)"))
                continue
            skipped.append(row)
            continue
        problems.extend(Problem(row.where, reason) for reason in reasons)
        if not reasons:
            to_add.append(row)
    problems.sort(key=_position)
    return ImportPlan(client, tuple(to_add), tuple(skipped), tuple(problems), parsed.left_out)


def _position(problem: Problem) -> int:
    number = problem.where.split(" ")[1]
    return int(number) if number.isdigit() else 0


def row_reasons(client: str, row: ImportRow) -> list[str]:
    """Why ``secrets.add`` would refuse ``row`` (each reason once; empty if it would not). The
    name and kind are not quoted: in a CSV row whose cells are out of place they may be a
    password; each reason names what is wrong and what is accepted."""
    reasons: list[str] = []
    name, password = row.name, row.password
    if not name:
        reasons.append("no name")
    elif not validation.SECRET_NAME.fullmatch(name):
        reasons.append("the name is not one a secret may have: " + NAME_RULE)
    if not password:
        reasons.append("no password")
    elif (reason := _refusal(validation.password, password)) is not None:
        reasons.append(reason)  # says what is wrong with it (empty, too long, a NUL), never the value
    if row.kind not in validation.KINDS:
        reasons.append("the kind is not one of: " + ", ".join(validation.KINDS))
    if row.url and row.host:
        reasons.append("both a url and a host are given (a secret has one or the other)")
        return reasons
    metadata = row.metadata()
    del metadata["kind"]  # checked above, as the name and the password: placeholders stand for them below
    rest = _refusal(lambda _: new_metadata(f"{client}/x", "x", "other", **metadata), None)
    if rest is not None:
        reasons.append(rest)
    return reasons


def _refusal(check: Any, value: Any) -> str | None:
    """``check(value)``'s InvalidInput as one reason (its hint after a colon), else None."""
    try:
        check(value)
    except InvalidInput as error:
        return f"{error}: {error.hint}" if error.hint else str(error)
    return None
