"""The ``credvault`` command: the root group, its global options, and the entry point.

Each command family lives in its own module and opens ``vault.Vault`` only inside its
command functions, so this module imports click and the small service modules alone:
``credvault --help`` stays fast. Errors are turned into output in one place,
``vault.cli.errors``, by the root group's ``invoke``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vault import __version__

from . import (
    access,
    admin,
    agent,
    audit,
    clients,
    demo,
    engineers,
    keys,
    purge,
    secret_import,
    secrets,
    server,
    servers,
)
from .context import ALLOW_READABLE_ENV, INSECURE_DB_ENV, AppContext
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
    "--server",
    "server",
    metavar="URL",
    help="The team server (else CREDVAULT_SERVER, else the local config); pinned with `credvault server trust`.",
)
@click.option(
    "--server-key",
    "server_key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    metavar="FILE",
    help="On the team server's host: record an admin's work with the server key file (else CREDVAULT_SERVER_KEY_FILE).",
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
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CREDVAULT_KEY_FILE",
    metavar="FILE",
    help="Act as the service identity whose key file this is, for this one command (scripts; else CREDVAULT_KEY_FILE).",
)
@click.option(
    "--trust-new-vault",
    is_flag=True,
    help="Accept a database whose vault this machine has not pinned for its URL (a new or replaced vault).",
)
@click.option(
    "--insecure-db",
    is_flag=True,
    help="Allow a remote PostgreSQL URL without sslmode=verify-full (TLS with certificate check).",
)
@click.option(
    "--allow-readable",
    is_flag=True,
    help="Open a SQLite vault file that other users may read (better: chmod 600 it).",
)
@click.version_option(__version__, prog_name="credvault")
@click.pass_context
def cli(
    ctx: click.Context,
    db: str | None,
    server: str | None,
    server_key: Path | None,
    as_engineer: str | None,
    passphrase_file: Path | None,
    key_file: Path | None,
    trust_new_vault: bool,
    insecure_db: bool,
    allow_readable: bool,
) -> None:
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
    app = AppContext(
        db=db,
        as_engineer=as_engineer,
        server=server,
        server_key=server_key,
        passphrase_file=passphrase_file,
        key_file=key_file,
        trust_new_vault=trust_new_vault,
    )
    ctx.obj = app
    ctx.call_on_close(app.close)
    for flag, name in ((insecure_db, INSECURE_DB_ENV), (allow_readable, ALLOW_READABLE_ENV)):
        if flag:
            ctx.call_on_close(_set_for_this_command(name))


for family in (engineers, clients, secrets, access, agent, audit, keys, purge, admin, demo, server, servers):
    for command in family.COMMANDS:
        cli.add_command(command)
for command in keys.ENGINEER_COMMANDS:
    engineers.engineer.add_command(command)
for command in (*keys.SECRET_COMMANDS, *secret_import.SECRET_COMMANDS):
    secrets.secret.add_command(command)
for command in purge.REPORT_COMMANDS:
    audit.report.add_command(command)


def _set_for_this_command(name: str) -> Callable[[], None]:
    """Set the opt-out ``name``=1 for this command (and an agent it starts: the library and
    the agent read it from the environment); return the undo."""
    import os

    previous = os.environ.get(name)
    os.environ[name] = "1"

    def undo() -> None:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous

    return undo


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="credvault")
