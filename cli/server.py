"""The team server: ``credvault serve`` (docs/server.md §6), and ``serve rotate-key``.

The command checks its options and hands them to ``vault.server.run`` (uvicorn); the server
itself lives in ``vault/server/``. TLS is required unless the bind host is loopback.
``serve rotate-key`` adds the next server key to the key file, and ``--drop-old`` removes the
older one once it is certified (``vault/server/keyfile_rotation.py``).
"""

from __future__ import annotations

from pathlib import Path

import click

from .context import AppContext, pass_app, read_passphrase_file
from .errors import CommandFailed
from .output import say


@click.group("serve", invoke_without_command=True)
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
@click.option(
    "--db-pool",
    type=click.IntRange(min=1),
    metavar="N",
    help="At most N database connections, and N requests served at once (default: 15 and 40).",
)
@click.pass_context
def serve(
    ctx: click.Context,
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
    db_pool: int | None,
) -> None:
    """Run the team server: engineers' signed requests over HTTPS to this vault's database.

    TLS is required unless --bind is a loopback address (127.0.0.1, ::1).

    \b
    Example:
      credvault serve --db postgresql+psycopg://vault@db.internal/credvault \\
        --bind 0.0.0.0:8443 --tls-cert server.pem --tls-key server.key \\
        --public-url https://vault.example.net:8443 --access-log - \\
        --server-key /etc/credvault/server-key.json --db-pool 20
    """
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.find_object(AppContext)
    assert app is not None
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
        db_pool=db_pool,
    )
    run(options)


# -- rotating the server key (docs/server.md §5) ------------------------------------------------------


@serve.command("rotate-key")
@click.option(
    "--server-key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    metavar="FILE",
    help="The server key file (JSON, mode 0600) to rotate.",
)
@click.option("--drop-old", is_flag=True, help="Remove the older keys, once the new one is certified and active.")
@click.option(
    "--full",
    is_flag=True,
    help="After a suspected theft of the file: a new server client key for every client, every data key re-layered.",
)
@click.option("--db", "db", metavar="URL", help="The vault's database, for --drop-old/--full (else the global --db).")
@pass_app
def rotate_key(app: AppContext, key_file: str, drop_old: bool, full: bool, db: str | None) -> None:
    """Add the next signing key and master key to the server key file, keeping the old ones.

    Then an admin certifies the new signing key (`server certify`); servers started on the new
    file sign with the old version until then (`/readyz`: server-key-not-certified), then with
    the new one. Once every server runs on the new file and it is certified, `--drop-old`
    moves every server client key to the new master key and removes the old keys.

    After a suspected theft of the key file, rotate, certify and drop the old keys, then run
    `--full`: every client gets a new server client key (under the new master key), every data
    key is re-layered under it and the old ones are deleted, with the servers running. A copy
    of the database made before then still opens with the stolen file; none made after does.

    \b
    Example:
      credvault serve rotate-key --server-key /etc/credvault/server-key.json
      credvault --db "$DB" --server-key /etc/credvault/server-key.json server certify /etc/credvault/server-key.json
      credvault serve rotate-key --server-key /etc/credvault/server-key.json --drop-old --db "$DB"
      credvault serve rotate-key --server-key /etc/credvault/server-key.json --full --db "$DB"
    """
    from vault.server import keyfile_rotation
    from vault.transport.https_identity import fingerprint

    if full and drop_old:
        raise click.UsageError("--full and --drop-old are separate steps: drop the old keys first, then run --full")
    if full:
        done = keyfile_rotation.relayer_at(key_file, db or app.db_url())
        say(
            f"New server client keys for {done.clients} client(s); {done.rows} data key(s) re-layered; "
            f"{done.retired} old server client key(s) deleted."
        )
        if done.left:
            say(
                f"{done.left} old server client key(s) kept: a server wrote under them during the run. "
                "Run `credvault serve rotate-key --full` again."
            )
        return

    if drop_old:
        kept, dropped = keyfile_rotation.drop_old_at(key_file, db or app.db_url())
        if not dropped.signing and not dropped.master:
            say(f"{key_file} holds no older key: nothing dropped.")
            return
        say(
            f"Dropped signing key version(s) {_versions(dropped.signing)} and master key version(s) "
            f"{_versions(dropped.master)} from {key_file} ({dropped.moved} server client keys moved first); "
            f"it holds server key version {kept.signing.version}."
        )
        return
    rotated = keyfile_rotation.rotate(key_file)
    master = f", master key version {rotated.master.version}" if rotated.master is not None else ""
    say(
        f"Added server key version {rotated.signing.version} ({fingerprint(rotated.signing.public)}){master} "
        f"to {key_file}; version {rotated.signing.version - 1} is kept and signs until the new one is certified."
    )
    say(f"An admin certifies it: credvault --db URL --server-key {key_file} server certify {key_file}")


@serve.command("recover-key")
@click.option(
    "--keys",
    "keys",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A key export made on the server's host (it carries the master keys).",
)
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    help="The new server key file (written 0600; must not exist).",
)  # fmt: skip
@click.option("--admin", metavar="NAME", help="An admin named in the key export (asks for their passphrase).")
@click.option(
    "--shares-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    metavar="PATH",
    help="Recovery shares instead of an admin, one per line, from PATH (only you may read it) or - (typed).",
)
@click.option("--db", "db", metavar="URL", help="The vault's database (else the global --db).")
@pass_app
def recover_key(
    app: AppContext, keys: Path, out: Path, admin: str | None, shares_file: Path | None, db: str | None
) -> None:
    """After every copy of the server key file is lost: a new one from a key export.

    It holds the master keys the key export carries (so the stored layer opens again) and a new
    signing key, the version after the vault's newest. An admin certifies it with `server
    certify FILE --recover` (no server key is left to sign that event: it is the admin's, in the
    older event format, which `audit verify` accepts for this action only); then start the
    servers on it. Engineers' machines take the new version with its certificate.

    \b
    Example:
      credvault serve recover-key --keys backup-keys.json --admin alice --out /etc/credvault/server-key.json --db "$DB"
      credvault --db "$DB" server certify /etc/credvault/server-key.json --recover
    """
    from vault import Vault
    from vault.server import keyfile_rotation
    from vault.transport.https_identity import fingerprint

    from .purge import _read_shares

    if not admin and shares_file is None:
        raise click.UsageError("give --admin NAME or --shares-file PATH")
    if out.exists():
        raise CommandFailed(f"{out} already exists", hint="choose a new file name")
    url = db or app.db_url()
    shares = _read_shares(shares_file) if shares_file is not None else ()
    passphrase = None
    if admin:
        passphrase = (
            read_passphrase_file(app.passphrase_file)
            if app.passphrase_file
            else app.passphrase(prompt=f"Passphrase of {admin}")
        )
    vault = Vault.open(url)
    try:
        opened = vault.backups.server_master_keys
        masters = opened(keys, admin=admin, passphrase=passphrase, shares=list(shares) or None)
    finally:
        vault.close()
    made = keyfile_rotation.write_recovered(out, masters, url)
    say(
        f"Wrote {out} (mode 0600): server key version {made.signing.version} ({fingerprint(made.signing.public)}), "
        f"master key version(s) {_versions(tuple(k.version for k in (*made.previous, made.master) if k))}."
    )
    say(f"An admin certifies it: credvault --db URL server certify {out} --recover")


def _versions(versions: tuple[int, ...]) -> str:
    return ", ".join(map(str, versions)) or "none"


COMMANDS = [serve]
