"""Checking what a user typed before it reaches storage or crypto.

Names are deliberately narrow (ASCII letters, digits and a few separators), so that a
name can never carry terminal escapes, right-to-left overrides, zero-width characters,
path separators or newlines into a terminal, a log line or a file name. Errors quote
at most a sanitised form of the input.
"""

from __future__ import annotations

import datetime as dt
import re

from vault.errors import InvalidInput

CLIENT_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62})")
ENGINEER_NAME = re.compile(r"[a-z][a-z0-9._-]{0,31}")
SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
KINDS = ("equipment", "service", "other")
MAX_FIELD_BYTES = 64 * 1024
MAX_DISPLAY_NAME = 200
RESERVED_FIELDS = ("password", "username", "url", "host", "note", "name")
_DURATION = re.compile(r"(\d{1,10})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = dt.timedelta(days=100 * 366)  # longer than any setting needs; well inside datetime's range
MAX_TEXT = 4096  # a search, a time or a duration typed by a person is shorter than this
MAX_ID = 2**31 - 1  # versions, receipt numbers, counts: an INTEGER column on both engines


def shown(text: str, limit: int = 40) -> str:
    """A safe rendering of untrusted input for an error message."""
    cleaned = "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text[:limit])
    return repr(cleaned + ("…" if len(text) > limit else ""))


def valid_text(label: str, value: object, *, limit: int = MAX_FIELD_BYTES) -> str:
    """``value`` if it is a string that is valid Unicode text (no lone surrogates, which is
    what undecodable bytes in argv or a JSON request become) of at most ``limit`` UTF-8
    bytes; otherwise InvalidInput. Other checks (control characters, a pattern) follow."""
    if not isinstance(value, str):
        raise InvalidInput(f"the {label} is not text", hint="give it as a string")
    if len(value) > limit:  # each character is at least one byte: refused before encoding
        raise InvalidInput(f"the {label} is too long", hint=f"use at most {limit} bytes")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(
            f"the {label} is not valid text", hint="use UTF-8 text (the input held bytes that are not UTF-8)"
        ) from None
    if size > limit:
        raise InvalidInput(f"the {label} is too long", hint=f"use at most {limit} bytes")
    return value


def number(label: str, value: object, low: int, high: int = MAX_ID) -> int:
    """``value`` if it is a whole number from ``low`` to ``high``, else InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"bad {label} {shown(str(value))}", hint=f"use a whole number from {low} to {high}")
    return value


def _matching(what: str, value: object, pattern: re.Pattern[str], hint: str, reserved: tuple[str, ...] = ()) -> str:
    """``value`` if it is a string ``pattern`` matches whole (and not one of ``reserved``), else
    InvalidInput "bad ``what``" with ``hint``: the one shape of every name check below."""
    if not isinstance(value, str) or not pattern.fullmatch(value) or value in reserved:
        raise InvalidInput(f"bad {what} {shown(str(value))}", hint=hint)
    return value


def client_slug(slug: str) -> str:
    return _matching(
        "client slug",
        slug,
        CLIENT_SLUG,
        "use 1-63 lowercase letters, digits and dashes, starting with a letter or digit (e.g. acme-ltd)",
    )


def engineer_name(name: str) -> str:
    return _matching(
        "engineer name",
        name,
        ENGINEER_NAME,
        "use 1-32 lowercase letters, digits, '.', '_' or '-', starting with a letter (e.g. alice)",
    )


def secret_name(name: str) -> str:
    return _matching(
        "secret name",
        name,
        SECRET_NAME,
        "use 1-128 letters, digits, '.', '_', '@', '+' or '-' (e.g. fw01-admin)",
    )


def secret_ref(ref: str) -> tuple[str, str]:
    if not isinstance(ref, str) or ref.count("/") != 1:
        raise InvalidInput(f"bad secret reference {shown(str(ref))}", hint="write CLIENT/NAME, e.g. acme/fw01-admin")
    client, name = ref.split("/")
    return client_slug(client), secret_name(name)


def kind(value: str) -> str:
    if value not in KINDS:
        raise InvalidInput(f"bad secret kind {shown(str(value))}", hint="use one of: " + ", ".join(KINDS))
    return value


def display_name(value: str) -> str:
    stripped = value.strip() if isinstance(value, str) else ""
    if not stripped or len(stripped) > MAX_DISPLAY_NAME or not stripped.isprintable():
        raise InvalidInput(
            "bad client name", hint=f"use 1-{MAX_DISPLAY_NAME} printable characters, no control characters"
        )
    return stripped


def field_value(label: str, value: str | None, *, allow_newlines: bool = False) -> str | None:
    if value is None:
        return None
    valid_text(label, value, limit=4 * MAX_FIELD_BYTES)
    if len(value.encode("utf-8")) > MAX_FIELD_BYTES:
        raise InvalidInput(f"the {label} is longer than {MAX_FIELD_BYTES // 1024} KiB")
    bad = [ch for ch in value if not ch.isprintable() and not (allow_newlines and ch in "\n\t")]
    if bad:
        raise InvalidInput(f"the {label} contains control characters", hint="remove escape, tab or newline characters")
    return value


def password(value: str) -> str:
    if not value:
        raise InvalidInput("the password is empty")
    valid_text("password", value, limit=4 * MAX_FIELD_BYTES)
    if len(value.encode("utf-8")) > MAX_FIELD_BYTES:
        raise InvalidInput(f"the password is longer than {MAX_FIELD_BYTES // 1024} KiB")
    if "\x00" in value:
        raise InvalidInput("the password contains a NUL character")
    return value


def field_name(name: str) -> str:
    """The name of a field to reveal: password, a metadata field or a custom field's name."""
    return _matching(
        "field name",
        name,
        FIELD_NAME,
        "use password, username, url, host, note or a custom field's name",
    )


def custom_fields(fields: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in fields.items():
        hint = "use 1-32 letters, digits, '_' or '-', starting with a letter"
        _matching("field name", key, FIELD_NAME, hint, RESERVED_FIELDS)
        checked = field_value(f"field {key}", value)
        assert checked is not None
        out[key] = checked
    return out


def duration(text: str) -> dt.timedelta:
    """Parse '90m', '2h', '7d', '1w' or combinations like '1h30m' (at most about 100 years)."""
    valid_text("duration", text, limit=MAX_TEXT)
    cleaned = text.strip().lower()
    pos = 0
    total = 0
    for match in _DURATION.finditer(cleaned):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(cleaned) or total <= 0 or total > MAX_DURATION.total_seconds():
        raise InvalidInput(f"bad duration {shown(text)}", hint="write e.g. 15m, 2h, 7d or 1h30m")
    return dt.timedelta(seconds=total)


def point_in_time(text: str, now: dt.datetime) -> dt.datetime:
    """An ISO 8601 time (UTC if no zone is given) or a duration from now ('8h')."""
    try:
        return now + duration(text)
    except InvalidInput:
        pass
    hint = "write an ISO time such as 2026-12-31T18:00 or a duration such as 8h"
    try:
        value = dt.datetime.fromisoformat(text.strip())
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value.astimezone(dt.UTC).timestamp()  # a time at the ends of datetime's range cannot be stored
    except (ValueError, OverflowError):
        raise InvalidInput(f"bad time {shown(text)}", hint=hint) from None
    return value
