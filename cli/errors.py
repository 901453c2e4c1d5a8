"""The one place where an exception becomes what the user sees.

Every failure ends as ``credvault: error: <message>`` on stderr, then ``hint: <hint>``
when there is one, and an exit status: 1 for errors, 130 for an interrupt, 2 for
click's own usage errors (which pass through untouched). Library errors
(``vault.errors.VaultError``) carry a message and a hint written to be shown; anything
else is a bug and is reported by its type name only, never its text, because an
unexpected exception may quote data we did not mean to print (a database driver's own
exception, which the library should have mapped, is reported as a failed database). Set CREDVAULT_DEBUG=1 to
get the traceback instead.

    with reported_errors():
        ...  # a command's body
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import click

from vault.errors import InvalidInput, VaultError

PROG = "credvault"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
BUG_HINT = "this is a bug in credvault: please report it (set CREDVAULT_DEBUG=1 to see the details)"
USAGE_HINT = "see the command's --help for what it accepts"


class CommandFailed(Exception):
    """A command stopped on purpose for a reason of its own (not the library's)."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


MAX_MESSAGE = 300  # an error line quotes at most this much: a 100 KB argument is not echoed back


def printable(text: str) -> str:
    """``text`` with every control, escape, bidi or zero-width character replaced by '?'
    (lone surrogates, which undecodable input becomes, are not printable either)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def shortened(text: str, limit: int = MAX_MESSAGE) -> str:
    """``printable(text)``, cut to ``limit`` characters."""
    return printable(text if len(text) <= limit else text[: limit - 1] + "…")


def report(message: str, hint: str = "") -> None:
    """Print the error line and, if any, the hint line to stderr."""
    click.echo(f"{PROG}: error: {shortened(message)}", err=True)
    if hint:
        click.echo(f"hint: {shortened(hint)}", err=True)


def debugging() -> bool:
    return os.environ.get("CREDVAULT_DEBUG") == "1"


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn any exception raised inside into a reported error and a click exit."""
    try:
        yield
    except click.UsageError as error:
        setattr(error, "message", shortened(error.message))  # noqa: B010 - click quotes the bad value: neutralised, cut short
        raise  # usage errors keep click's exit status 2
    except (click.exceptions.Exit, BrokenPipeError):
        raise  # click's own control flow and a closed pipe keep their meaning
    except click.Abort as error:
        # click.prompt turns Ctrl-C and end-of-input into Abort; its context says which.
        if isinstance(error.__context__, KeyboardInterrupt):
            report("interrupted")
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        if isinstance(error.__context__, EOFError):
            report("no answer was given", "answer the prompt, or see --help for the non-interactive options")
        else:
            report("cancelled: nothing was changed", "run the command again and answer y to go ahead")
        raise click.exceptions.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        click.echo(err=True)
        report("interrupted")
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except VaultError as error:
        report(str(error), error.hint or (USAGE_HINT if isinstance(error, InvalidInput) else ""))
        raise click.exceptions.Exit(EXIT_ERROR) from None
    except CommandFailed as error:
        report(str(error), error.hint)
        raise click.exceptions.Exit(EXIT_ERROR) from None
    except click.ClickException as error:
        report(error.format_message())
        raise click.exceptions.Exit(error.exit_code) from None
    except UnicodeDecodeError:
        # Only input is decoded: standard input or a file given to the command was not UTF-8.
        report("the input is not valid UTF-8 text", "give UTF-8 text on standard input and in files")
        raise click.exceptions.Exit(EXIT_ERROR) from None
    except Exception as error:
        if debugging():
            raise
        if _from_the_driver(error):  # the library maps these (vault/storage/engine.py): a safety net
            report("the database failed: nothing was changed", DRIVER_HINT)
        else:
            report(f"internal error ({type(error).__name__})", BUG_HINT)
        raise click.exceptions.Exit(EXIT_ERROR) from None


DRIVER_MODULES = ("sqlalchemy", "psycopg", "sqlite3")
DRIVER_HINT = "check the --db URL or CREDVAULT_DB, that the server runs, and disk space and permissions"


def _from_the_driver(error: BaseException) -> bool:
    """Whether ``error`` is the database driver's (checked by module: --help imports no driver)."""
    return type(error).__module__.split(".")[0] in DRIVER_MODULES
