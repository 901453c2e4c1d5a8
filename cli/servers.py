"""``credvault server trust`` and ``server join``: this machine's side of a team server.

``trust`` reads the server's identity over TLS checked against the CA file the admin gave,
shows its fingerprints for the person to compare with the admin, and pins it
(``vault/service/serverpins.py``); the server becomes this machine's default. ``join`` is the
one-time move of an engineer who enrolled on the shared database: their key record is copied
from it to this machine, so that from then on no database credential is needed here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from vault.errors import InvalidInput
from vault.service import config

from .context import AppContext, interactive, pass_app
from .output import echo_pairs, say


@click.group("server")
def server() -> None:
    """Pin a team server on this machine, and move your key record to it.

    \b
    Example:
      credvault server trust https://vault.example.net:8443 --ca-file team-ca.pem
      credvault server join https://vault.example.net:8443 alice --db postgresql+psycopg://...
    """


@server.command("trust")
@click.argument("url")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True),
    metavar="FILE",
    help="The CA certificate (PEM) your admin gave you, or the server's own certificate.",
)
@click.option("--yes", is_flag=True, help="Do not ask: the fingerprints were compared some other way.")
@click.option("--replace", is_flag=True, help="Replace this URL's pin with the identity the server shows now.")
@pass_app
def trust(app: AppContext, url: str, ca_file: str | None, yes: bool, replace: bool) -> None:
    """Pin the team server at URL after you compared its fingerprints with your admin.

    The server is then this machine's default (`credvault unlock`, `checkout`, ... go to it).
    A later change of its vault, organisation key, server key or certificate is refused.

    \b
    Example:
      credvault server trust https://vault.example.net:8443 --ca-file team-ca.pem
    """
    from vault.service import serverjoin

    identity = serverjoin.trust(url, ca_file)
    pairs: list[tuple[str, object]] = list(identity.fingerprints().items())
    echo_pairs(pairs)
    if not yes:
        if not interactive():
            raise InvalidInput(
                "nothing was pinned: compare the fingerprints with your admin first",
                hint="run this at a terminal, or pass --yes once they were compared",
            )
        if not click.confirm("Do these match what your admin told you?", default=False, err=True):
            raise InvalidInput("nothing was pinned", hint="ask your admin for the server's fingerprints")
    pin = serverjoin.pin(url, identity, ca_file, replace=replace)
    local = config.LocalConfig.load()
    local.server = pin.url
    local.save()
    say(f"Pinned {pin.url}; this machine now uses it by default.")


@server.command("join")
@click.argument("url")
@click.argument("name", required=False)
@click.option(
    "--passphrase-file",
    "local_passphrase_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Read the passphrase from PATH instead of asking.",
)
@pass_app
def join(app: AppContext, url: str, name: str | None, local_passphrase_file: Path | None) -> None:
    """Copy your key record from the shared database (--db) to this machine, for the server at URL.

    Run it once, where you still reach the database; pin the server first (`server trust`).
    NAME defaults to --as, CREDVAULT_ENGINEER, or the engineer last unlocked here.

    \b
    Example:
      credvault --db postgresql+psycopg://alice@db.internal/credvault server join https://vault.example.net:8443 alice
    """
    from vault.service import serverjoin
    from vault.service.serverpins import ServerPins

    name = name or app.require_engineer()
    pin = ServerPins.load().get(url)
    vault = app.open(url=app.db_url())
    passphrase = app.passphrase(local_passphrase_file, prompt=f"Passphrase for {name}")
    path = serverjoin.join(pin, vault, name, passphrase)
    local = config.LocalConfig.load()
    local.server, local.engineer = pin.url, name
    local.save()
    say(f"Copied the key record of {name} to {path}; `credvault unlock` now needs only the server.")


@server.command("keygen")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keygen(path: Path) -> None:
    """Make the server key file at PATH (mode 0600, never replaced), on the server's host.

    It holds the server's signing key and its master key (the layer over every stored data
    key): keep a copy as safe as the recovery key. An admin then certifies it (`server certify`).

    \b
    Example:
      credvault server keygen /etc/credvault/server-key.json
    """
    from vault.server.keyfile import new_key_file
    from vault.transport.https_identity import fingerprint

    made = new_key_file(path)
    say(f"Wrote {path} (mode 0600): server key version {made.signing.version}, {fingerprint(made.signing.public)}.")
    say(f"An admin certifies it: credvault --db URL server certify {path}")


@server.command("certify")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--recover",
    is_flag=True,
    help="The key file was lost and PATH is `serve recover-key`'s: no server key is left to sign the event.",
)
@pass_app
def certify(app: AppContext, path: Path, recover: bool) -> None:
    """Admin: certify the server key in the key file PATH with the organisation key (--db).

    Engineers' machines then trust the server's signatures (`server trust` shows its fingerprint).
    After `credvault serve rotate-key` it certifies the file's new version; the servers then sign
    with it, and engineers' machines take it with its certificate.

    With `--recover` (after `credvault serve recover-key`, every copy of the old file lost) the
    event is the admin's own `server-key-recover`, in the older format, since no server key is
    left to sign it.

    \b
    Example:
      credvault --db postgresql+psycopg://admin@db.internal/credvault server certify server-key.json
      credvault --db "$DB" server certify /etc/credvault/server-key.json --recover
    """
    from vault.server.keyfile import read_server_keys
    from vault.service.serverkeys import certify_server_key
    from vault.transport.https_identity import fingerprint

    keys = read_server_keys(path)
    vault = app.session_vault()
    if vault.core.server_key is None and not recover:  # a next version (serve rotate-key): the file's active one
        vault.core.server_key = keys.signing_keys  # records it
    key = keys.signing  # the newest version the file holds
    row = certify_server_key(vault, key.version, key.public, recover=recover)
    say(f"Certified server key version {row.version}: {fingerprint(row.signing_public)}.")


@server.command("openapi")
def openapi() -> None:
    """Print the team server's API as an OpenAPI 3.1 document (JSON), made from the wire codec's schemas.

    \b
    Example:
      credvault server openapi > openapi.json
    """
    from vault import __version__
    from vault.wire import openapi as document

    click.echo(document.dumps(__version__), nl=False)


def enroll_service(server: str | None, name: str, code: Callable[[], str], key_file: Path) -> None:
    """A service identity's enrolment through the team server: its key file, no passphrase."""
    from vault.service.remote import RemoteVault
    from vault.service.serverpins import ServerPins
    from vault.service.servicekeys import ServiceKeyFile

    if server is None:
        raise InvalidInput(
            "a service identity enrols through a team server", hint="pass --server URL (pinned with `server trust`)"
        )
    pin = ServerPins.load().get(server)
    ServiceKeyFile.refuse_existing(key_file)  # before the code is typed
    typed = code()
    remote = RemoteVault(pin, engineer=name)
    try:
        fingerprint = remote.engineers.enroll_service(name, typed, key_file)
    finally:
        remote.close()
    click.echo(f"Enrolled the service identity {name}; its key file is {key_file} (mode 0600). Its fingerprint:")
    click.echo("")
    click.echo(f"  {fingerprint}")
    click.echo("")
    click.echo(f"Read it to your admin, who runs `credvault engineer confirm {name}` and grants it its clients.")
    click.echo(f"Then: credvault --server {pin.url} --key-file {key_file} checkout CLIENT/SECRET --reason TEXT --show")
    click.echo("Whoever can read the key file acts as this identity: keep it like an SSH private key.", err=True)


COMMANDS = [server]
