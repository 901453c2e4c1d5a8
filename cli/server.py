"""The team server: ``credvault serve`` (docs/server.md §6).

The command checks its options and hands them to ``vault.server.run`` (uvicorn); the server
itself lives in ``vault/server/``. TLS is required unless the bind host is loopback.
"""

from __future__ import annotations

import click

from .context import AppContext, pass_app


@click.command("serve")
@click.option("--db", "db", metavar="URL", help="The vault's database (else the global --db, CREDVAULT_DB, …).")
@click.option("--bind", default="127.0.0.1:8443", show_default=True, metavar="HOST:PORT", help="Where to listen.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), metavar="FILE", help="TLS certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), metavar="FILE", help="TLS private key (PEM).")
@click.option("--public-url", metavar="URL", help="The URL engineers use and sign for (default: the bind address).")
@click.option(
    "--max-body", type=click.IntRange(min=1), default=64 * 1024, show_default=True, help="Request body limit, bytes."
)
@click.option("--access-log", metavar="FILE|-", help="Write one line per request to FILE, or - for standard error.")
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="CIDR",
    help="A reverse proxy whose X-Forwarded-For names the client (repeatable).",
)
@click.option(
    "--org-key",
    metavar="HEX",
    help="The organisation signing key to trust (64 hex digits); without it, the first one read is trusted.",
)
@click.option(
    "--server-key",
    type=click.Path(dir_okay=False, exists=True),
    metavar="FILE",
    help="The server key file (JSON, mode 0600): signs the audit events of checkouts.",
)
@pass_app
def serve(
    app: AppContext,
    db: str | None,
    bind: str,
    tls_cert: str | None,
    tls_key: str | None,
    public_url: str | None,
    max_body: int,
    access_log: str | None,
    trusted_proxies: tuple[str, ...],
    org_key: str | None,
    server_key: str | None,
) -> None:
    """Run the team server: engineers' signed requests over HTTPS to this vault's database.

    TLS is required unless --bind is a loopback address (127.0.0.1, ::1).

    \b
    Example:
      credvault serve --db postgresql+psycopg://vault@db.internal/credvault \\
        --bind 0.0.0.0:8443 --tls-cert server.pem --tls-key server.key \\
        --public-url https://vault.example.net:8443 --access-log - \\
        --server-key /etc/credvault/server-key.json
    """
    from vault.server import ServeOptions, run

    options = ServeOptions(
        db_url=db or app.db_url(),
        bind=bind,
        tls_cert=tls_cert,
        tls_key=tls_key,
        public_url=public_url,
        max_body=max_body,
        access_log=access_log,
        trusted_proxies=tuple(trusted_proxies),
        org_key=org_key,
        server_key=server_key,
    )
    run(options)


COMMANDS = [serve]
