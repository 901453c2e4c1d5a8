"""Clients and grants: client add/list/show, grant, revoke, grants.

An admin sees every client; an engineer sees only the clients they hold a grant for
(the library decides; these commands only print what it returns).
"""

from __future__ import annotations

import datetime as dt

import click

from .context import AppContext, pass_app
from .output import echo_json, echo_pairs, echo_records, echo_table, say, when

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group()
def client() -> None:
    """Add, list and show clients.

    \b
    Example:
      credvault client add acme --name "Acme Ltd"
      credvault client list
    """


@client.command("add")
@click.argument("slug")
@click.option("--name", required=True, help="The client's display name (stored encrypted).")
@pass_app
def add_client(app: AppContext, slug: str, name: str) -> None:
    """Add a client with its own encryption key (admin only).

    SLUG is the short name used in commands: lowercase letters, digits and dashes.

    \b
    Example:
      credvault client add acme --name "Acme Ltd"
    """
    info = app.session_vault().clients.add(slug, name)
    click.echo(f"Added client {info.slug} ({info.name}).")


@client.command("list")
@JSON
@pass_app
def list_clients(app: AppContext, as_json: bool) -> None:
    """List the clients you may see.

    \b
    Example:
      credvault client list --json
    """
    rows = app.session_vault().clients.list()
    if as_json:
        echo_records(rows)
        return
    echo_table(
        ["slug", "name", "secrets", "key version", "created"],
        [(c.slug, c.name, c.secrets, c.key_version, c.created_at) for c in rows],
    )


@client.command("show")
@click.argument("slug")
@JSON
@pass_app
def show_client(app: AppContext, slug: str, as_json: bool) -> None:
    """Show one client.

    \b
    Example:
      credvault client show acme
    """
    info = app.session_vault().clients.show(slug)
    if as_json:
        echo_json(info.to_json())
        return
    echo_pairs(
        [
            ("slug", info.slug),
            ("name", info.name),
            ("secrets", info.secrets),
            ("key version", info.key_version),
            ("created", info.created_at),
        ]
    )


@click.command()
@click.argument("engineer")
@click.argument("client_slug", metavar="CLIENT")
@click.option(
    "--until", metavar="TIME", help="End of the grant: an ISO time (UTC if no zone) or a duration such as 8h."
)
@click.option("--reason", metavar="TEXT", help="Why the engineer needs access (kept, encrypted, in the audit log).")
@pass_app
def grant(app: AppContext, engineer: str, client_slug: str, until: str | None, reason: str | None) -> None:
    """Let an engineer read a client's secrets (admin only).

    \b
    Example:
      credvault grant bob acme --until 8h --reason "firewall upgrade"
    """
    from vault.service.validation import point_in_time

    end = point_in_time(until, dt.datetime.now(dt.UTC)) if until else None
    info = app.session_vault().grants.grant(engineer, client_slug, until=end, reason=reason)
    say(f"Granted {info.engineer} access to {info.client}" + (f" until {when(info.until)}." if info.until else "."))


@click.command()
@click.argument("engineer")
@click.argument("client_slug", metavar="CLIENT")
@pass_app
def revoke(app: AppContext, engineer: str, client_slug: str) -> None:
    """Revoke an engineer's grant for a client and delete their copy of its key (admin only).

    \b
    Example:
      credvault revoke bob acme
    """
    count = app.session_vault().grants.revoke(engineer, client_slug)
    click.echo(f"Revoked {count} grant{'s' if count != 1 else ''} of {engineer} for {client_slug}.")


@click.command()
@click.option("--engineer", metavar="NAME", help="Only the grants of this engineer.")
@click.option("--client", "client_slug", metavar="SLUG", help="Only the grants for this client.")
@JSON
@pass_app
def grants(app: AppContext, engineer: str | None, client_slug: str | None, as_json: bool) -> None:
    """List grants (an engineer sees only their own).

    \b
    Example:
      credvault grants --client acme
    """
    if engineer is not None and client_slug is not None:
        raise click.UsageError("give --engineer or --client, not both")
    rows = app.session_vault().grants.list(engineer=engineer, client=client_slug)
    if as_json:
        echo_records(rows)
        return
    echo_table(
        ["engineer", "client", "state", "until", "granted by", "granted"],
        [(g.engineer, g.client, g.state, g.until, g.granted_by, g.created_at) for g in rows],
    )


COMMANDS = [client, grant, revoke, grants]
