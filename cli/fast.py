"""The console-script entry point, with a fast path for checkouts through a running agent.

``credvault checkout REF --reason TEXT --show`` (or ``--json``) while the engineer's
agent runs needs none of click, SQLAlchemy or cryptography: only the socket request
and the same output the click command prints. This module parses that one command
line strictly, with the standard library alone, and hands *everything else* to the
click CLI (``vault.cli.main``): another command, any option it does not know, an
option given twice, ``--help``, the clipboard, ``--passphrase-file``, no agent
running. Whatever it cannot do exactly as the click command would, it leaves to it;
``tests/cli/test_fast.py`` runs both on the same command lines and compares them.
"""

from __future__ import annotations

import json
import sys

PROG = "credvault"
USAGE_HINT = "see the command's --help for what it accepts"  # as vault.cli.errors.USAGE_HINT
MAX_MESSAGE = 300  # as vault.cli.errors.MAX_MESSAGE
SHOW_WARNING = "the value holds control characters, printed as '?'; use --json for the exact value"  # as cli/output.py
GLOBAL_OPTIONS = {"--db": "db", "--as": "as_engineer"}
CHECKOUT_OPTIONS = {
    "--reason": "reason",
    "-r": "reason",
    "--field": "field",
    "--for": "hold_for",
    "--version": "version",
}
CHECKOUT_FLAGS = {"--show": "show", "--json": "as_json"}


class Checkout:
    """One ``checkout`` command line, as the click command would read it (a plain class:
    importing dataclasses would cost this path several milliseconds)."""

    FIELDS = ("db", "as_engineer", "ref", "reason", "field", "hold_for", "version", "show", "as_json")

    def __init__(self, **values: object) -> None:
        self.db: str | None = None
        self.as_engineer: str | None = None
        self.ref: str | None = None
        self.reason: str | None = None
        self.field = "password"
        self.hold_for: str | None = None
        self.version: int | None = None
        self.show = False
        self.as_json = False
        for name, value in values.items():
            if name not in self.FIELDS:
                raise TypeError(name)
            setattr(self, name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkout) and all(getattr(self, f) == getattr(other, f) for f in self.FIELDS)

    def __repr__(self) -> str:
        shown = {f: getattr(self, f) for f in self.FIELDS if f != "reason"}  # a reason may name a person
        return f"Checkout({shown})"

    __hash__ = None  # type: ignore[assignment]


def parse(argv: list[str]) -> Checkout | None:
    """The checkout that ``argv`` asks for, or None if the click CLI should read it."""
    found = Checkout()
    seen: set[str] = set()
    args = list(argv)
    while args and args[0] != "checkout":  # global options come before the command
        name, value, args = _option(args, GLOBAL_OPTIONS)
        if name is None or name in seen:
            return None
        seen.add(name)
        setattr(found, name, value)
    if not args:
        return None
    args = args[1:]
    while args:
        if args[0] in CHECKOUT_FLAGS:
            name = CHECKOUT_FLAGS[args[0]]
            if name in seen:
                return None
            seen.add(name)
            setattr(found, name, True)
            args = args[1:]
        elif not args[0].startswith("-") and found.ref is None:
            found.ref, args = args[0], args[1:]
        else:
            name, value, args = _option(args, CHECKOUT_OPTIONS)
            if name is None or name in seen or value is None:
                return None
            seen.add(name)
            if name == "version":
                if not value.isascii() or not value.isdigit() or len(value) > 18:
                    return None  # click (or the library, for a number out of range) says why
                found.version = int(value)
            else:
                setattr(found, name, value)
    if found.ref is None or not (found.show or found.as_json):
        return None  # a missing argument (click's usage error) or the clipboard
    return found


def _option(args: list[str], known: dict[str, str]) -> tuple[str | None, str | None, list[str]]:
    """(attribute, value, rest) for ``--opt VALUE`` or ``--opt=VALUE`` at the front of ``args``."""
    head = args[0]
    flag, eq, inline = head.partition("=")
    if flag not in known or (eq and not flag.startswith("--")):
        return None, None, args
    if eq:
        return known[flag], inline, args[1:]
    if len(args) < 2 or (args[1].startswith("-") and args[1] != "-"):
        return None, None, args  # no value: click reports it
    return known[flag], args[1], args[2:]


def via_agent(order: Checkout) -> int | None:
    """Run ``order`` through the engineer's agent; the exit status, or None if none runs."""
    from vault import errors
    from vault.service import agentclient, config

    try:
        name = config.resolve_engineer(order.as_engineer)
        if not name:
            return None
        answer = agentclient.checkout(
            config.resolve_db_url(order.db),
            name,
            ref=str(order.ref),
            reason=order.reason,
            field=order.field,
            version=order.version,
            hold_for=order.hold_for,
        )
        if answer is None:
            return None
    except errors.ConfigurationError:
        return None  # the click CLI says it with its full context
    except errors.VaultError as error:
        _report(str(error), error.hint or (USAGE_HINT if isinstance(error, errors.InvalidInput) else ""))
        return 1
    _print(order, answer)
    return 0


def _print(order: Checkout, answer: dict[str, object]) -> None:
    """What ``vault.cli.access.checkout`` prints for --json and --show."""
    expires = answer.get("expires_at")
    if order.as_json:
        fields = ("ref", "field", "version", "value", "expires_at", "must_change")
        sys.stdout.write(json.dumps({k: answer.get(k) for k in fields}, indent=2, ensure_ascii=True) + "\n")
        return
    value = str(answer["value"])
    printed = "\n".join("\t".join(_printable(part) for part in line.split("\t")) for line in value.split("\n"))
    sys.stdout.write(f"{printed}\n")  # as vault.cli.output.shown_value
    if printed != value:
        sys.stderr.write(f"warning: {SHOW_WARNING}\n")
    if isinstance(expires, str):
        shown = _when(expires)
        sys.stderr.write(f"Checked out until {shown}; run `credvault checkin {answer['ref']}` when done.\n")
    if answer.get("must_change") is True:
        sys.stderr.write("This client rotates after checkout: store a new value at check-in (--generate).\n")


def _when(iso: str) -> str:
    """``vault.cli.output.when`` of an ISO-8601 time; the agent sends UTC ("+00:00"), which
    is sliced rather than parsed (importing datetime costs this path a millisecond)."""
    if len(iso) >= 16 and iso.endswith("+00:00") and iso[10] == "T":
        return f"{iso[:10]} {iso[11:16]} UTC"
    import datetime as dt

    return dt.datetime.fromisoformat(iso).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _printable(text: str) -> str:  # as vault.cli.errors.printable
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _shortened(text: str) -> str:  # as vault.cli.errors.shortened
    return _printable(text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…")


def _report(message: str, hint: str) -> None:
    sys.stderr.write(f"{PROG}: error: {_shortened(message)}\n")
    if hint:
        sys.stderr.write(f"hint: {_shortened(hint)}\n")


def main() -> None:
    """Console-script entry point: the agent fast path, else the click CLI."""
    order = parse(sys.argv[1:])
    if order is not None:
        status = via_agent(order)
        if status is not None:
            sys.stdout.flush()
            sys.exit(status)
    from .main import main as click_main

    click_main()
