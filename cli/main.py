"""The ``credvault`` command: the root group, its global options, and the entry point.

Each command family lives in its own module and opens ``vault.Vault`` only inside its
command functions, so this module imports click and the small service modules alone:
``credvault --help`` stays fast. Errors are turned into output in one place,
``vault.cli.errors``, by the root group's ``invoke``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vault import __version__

from . import access, admin, agent, audit, clients, demo, engineers, keys, purge, secrets
from .context import AppContext
from .errors import reported_errors

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CredvaultGroup(click.Group):
    """A click group whose commands report errors the credvault way (see cli/errors.py)."""

    def invoke(self, ctx: click.Context) -> Any:
        with reported_errors():
            return super().invoke(ctx)


@click.group(cls=CredvaultGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--db",
    "db",
    metavar="URL",
    help="Database URL (else CREDVAULT_DB, else the local config, else a SQLite file in the data directory).",
)
@click.option(
    "--as",
    "as_engineer",
    metavar="NAME",
    help="Act as this engineer (else CREDVAULT_ENGINEER, else the last one unlocked here).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Unlock for this one command from the passphrase in PATH, without the OS keyring (automation).",
)
@click.version_option(__version__, prog_name="credvault")
@click.pass_context
def cli(ctx: click.Context, db: str | None, as_engineer: str | None, passphrase_file: Path | None) -> None:
    """credvault: a credential vault for managed service providers.

    Client passwords are encrypted under per-client keys; engineers read only the
    clients they hold a grant for. Unlock once, then work until the session expires.

    \b
    Example:
      credvault init --admin alice
      credvault unlock
      credvault client add acme --name "Acme Ltd"
      credvault secret add acme/fw01-admin --kind equipment --host 10.0.0.1 --generate
    """
    app = AppContext(db=db, as_engineer=as_engineer, passphrase_file=passphrase_file)
    ctx.obj = app
    ctx.call_on_close(app.close)


for family in (engineers, clients, secrets, access, agent, audit, keys, purge, admin, demo):
    for command in family.COMMANDS:
        cli.add_command(command)
for command in keys.ENGINEER_COMMANDS:
    engineers.engineer.add_command(command)
for command in keys.SECRET_COMMANDS:
    secrets.secret.add_command(command)
for command in purge.REPORT_COMMANDS:
    audit.report.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="credvault")
