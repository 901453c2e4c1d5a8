"""The database itself: db upgrade, db status.

Alembic migrations are the only way a schema is made or changed; `credvault init`
runs them too, so `db upgrade` is for existing vaults after installing a new version.
Neither command needs an unlocked session: they touch the schema, not the secrets.
"""

from __future__ import annotations

import click

from vault.errors import StoreUnavailable

from .context import AppContext, pass_app
from .output import echo_json, echo_pairs, safe_url


@click.group()
def db() -> None:
    """Create or upgrade the database schema, and show its state.

    \b
    Example:
      credvault db status
      credvault --db postgresql+psycopg://vault@db.internal/credvault db upgrade
    """


@db.command("upgrade")
@pass_app
def upgrade(app: AppContext) -> None:
    """Bring the database schema to this version of credvault (safe to repeat).

    \b
    Example:
      credvault db upgrade
    """
    revision = app.open().upgrade_schema()
    click.echo(f"The schema of {safe_url(app.db_url())} is at revision {revision}.")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show the database URL, its schema revision and whether it holds a vault.

    \b
    Example:
      credvault db status --json
    """
    vault = app.open()
    revision = vault.schema_revision()
    vault_id: str | None = None
    if revision is not None:
        try:
            vault_id = vault.vault_id().hex()
        except StoreUnavailable:
            vault_id = None  # a schema without a vault yet: `credvault init` makes one
    url, head = safe_url(app.db_url()), vault.schema_head()
    if as_json:
        echo_json({"db_url": url, "revision": revision, "latest_revision": head, "vault_id": vault_id})
        return
    if revision is None:
        shown = "none (run `credvault db upgrade`)"
    elif revision != head:
        shown = f"{revision}, behind this credvault's {head} (run `credvault db upgrade`)"
    else:
        shown = f"{revision} (the latest)"
    echo_pairs(
        [
            ("database", url),
            ("schema revision", shown),
            ("vault", vault_id or "none (run `credvault init --admin NAME`)"),
        ]
    )


COMMANDS = [db]
