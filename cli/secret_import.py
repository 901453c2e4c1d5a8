"""``credvault secret import``: a client's passwords brought in from a file.

The file is read whole (at most 10 MiB and 10,000 secrets) and every row checked before
anything is written (``vault/service/imports.py``); a bad row is named by its line or item
number and its reason, never its password, and then nothing is written. Each secret is then
added through ``vault.secrets.add``, the call of ``secret add`` (in-process, through the team
server, or by the agent), so each is on record as an add. An import stopped half way says
how many were added: running it again with ``--skip-existing`` adds the rest.

The file holds passwords in plain text: it is read into memory only, never copied, and the
command reminds the user (stderr) to delete it securely once imported.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import TYPE_CHECKING

import click

from .context import AppContext, pass_app
from .errors import CommandFailed
from .keys import progress_bar
from .output import say

if TYPE_CHECKING:
    from vault.service.imports import Problem

FORMATS = ("csv", "keepassxc", "bitwarden")  # vault.service.imports.FORMATS, named here so that --help imports nothing
MAX_BYTES = 10 * 1024 * 1024  # imports.MAX_BYTES: read one byte more, and the library refuses the file
MAX_SHOWN = 50  # bad rows printed; the count says how many more


@click.command("import")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--client", "client", metavar="SLUG", required=True, help="The client whose secrets these are.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="csv",
    show_default=True,
    help="csv: a header row naming columns among name, kind, username, password, url, host, note. "
    "keepassxc: KeePassXC's CSV export. bitwarden: Bitwarden's unencrypted JSON export (its login items).",
)
@click.option("--dry-run", is_flag=True, help="Check the file and say what would be added; write nothing.")
@click.option(
    "--fix-names",
    is_flag=True,
    help="Make each name a secret or custom field may not have into one it may (e.g. 'Acme VPN' -> "
    "Acme-VPN); each is listed.",
)
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Leave a secret the client already has as it is (not compared) instead of refusing the file.",
)
@pass_app
def import_secrets(
    app: AppContext, file: str, client: str, fmt: str, dry_run: bool, fix_names: bool, skip_existing: bool
) -> None:
    """Add a client's secrets from FILE, or from standard input if FILE is -.

    Every row is checked first: if any is bad, each is named (line or item number and
    why) and nothing is written. FILE holds passwords in plain text: delete it securely
    once imported.

    \b
    Example:
      credvault secret import acme.csv --client acme --dry-run
      credvault secret import acme.csv --client acme
      credvault secret import export.json --client acme --format bitwarden --fix-names
    """
    from vault.service import imports, imports_names

    data = _read(file)
    if file != "-":
        _warn_plaintext(file)
    parsed = imports.parse(data, fmt)
    if fix_names:
        parsed = imports_names.fix_names(parsed)
        for line in parsed.renamed:
            say(line, err=True)
    vault = app.session_vault()
    existing = {info.name for info in vault.secrets.list(client)}
    plan = imports.check(parsed, client, existing, skip_existing=skip_existing)
    for line in plan.left_out:
        say(f"left out: {line}", err=True)
    if plan.problems:
        _refuse(plan.problems, not fix_names and bool(imports_names.fix_names(parsed).renamed))
    skipped = f"; {len(plan.existing)} the client already has left as they are" if plan.existing else ""
    if dry_run:
        for row in plan.to_add:
            say(f"would add {plan.ref(row)} ({row.kind})")
        say(f"Would add {len(plan.to_add)} secret(s) to {client}{skipped}. Nothing was written (--dry-run).")
        return
    with progress_bar(f"importing into {client}") as bar:
        progress = imports.Progress(report=bar)
        try:
            imports.add_planned(vault.secrets, plan, progress)
        except BaseException:
            say(_stopped(client, progress.added, len(plan.to_add)), err=True)
            raise
    say(f"Added {progress.added} secret(s) to {client}{skipped}.")


def _read(file: str) -> bytes:
    """FILE's bytes, at most one more than the library takes (it refuses a bigger file)."""
    try:
        if file == "-":
            return sys.stdin.buffer.read(MAX_BYTES + 1)
        with open(file, "rb") as stream:
            return stream.read(MAX_BYTES + 1)
    except OSError as error:
        raise CommandFailed(
            f"cannot read {file}: {error.strerror or type(error).__name__}", hint="check the path and its permissions"
        ) from None


def _warn_plaintext(file: str) -> None:
    """The reminder that FILE holds plaintext passwords (warned, not refused: it is the user's export)."""
    try:
        readable = stat.S_IMODE(os.stat(file).st_mode) & 0o077 != 0
    except OSError:
        readable = False
    others = " Other users of this machine may read it." if readable else ""
    say(
        f"warning: {file} holds passwords in plain text.{others} Delete it securely once imported "
        f"(e.g. `shred -u {file}`), and any copy of it.",
        err=True,
    )


def _refuse(problems: tuple[Problem, ...], fixable: bool) -> None:
    """``fixable``: ``--fix-names`` (not given) would rename a row, so the hint names it."""
    for problem in problems[:MAX_SHOWN]:
        say(str(problem), err=True)
    if len(problems) > MAX_SHOWN:
        say(f"… and {len(problems) - MAX_SHOWN} more", err=True)
    fix = "; --fix-names makes each name above into one a secret may have" if fixable else ""
    raise CommandFailed(
        f"{len({p.where for p in problems})} row(s) of the file cannot be imported: nothing was written",
        hint=f"fix or remove the rows named above and run the command again (--dry-run checks without writing){fix}",
    )


def _stopped(client: str, added: int, total: int) -> str:
    done = "nothing was added" if added == 0 else f"{added} of {total} secret(s) were added to {client} and stay"
    return (
        f"The import stopped: {done}. Run the same command again with --skip-existing to add the rest "
        "(nothing is added twice)."
    )


SECRET_COMMANDS = [import_secrets]
