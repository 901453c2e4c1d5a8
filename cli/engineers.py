"""Engineers and sessions: init, engineer invite/enroll/confirm/list, unlock, lock, whoami.

Passphrases come from a hidden prompt (asked twice when one is being set) or from
``--passphrase-file PATH``; never from the command line itself.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.errors import ConfigurationError, InvalidInput, VaultError
from vault.service import config
from vault.service.validation import engineer_name

from .context import AppContext, pass_app, read_private_file
from .errors import CommandFailed, printable
from .output import echo_json, echo_pairs, echo_records, echo_table, safe_url, say, when

if TYPE_CHECKING:
    from vault.service.records import PendingConfirmation

PASSPHRASE_FILE = click.option(
    "--passphrase-file",
    "passphrase_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Read the passphrase from PATH (one trailing newline is removed) instead of a hidden prompt.",
)
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _parse_shares(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    k, sep, n = value.lower().partition("-of-")
    if not sep or not k.isdigit() or not n.isdigit():
        raise click.BadParameter("write K-of-N, e.g. 3-of-5")
    return int(k), int(n)


def _remember(*, db_url: str | None = None, engineer: str | None = None) -> None:
    """Update the local config file with what this machine should use next time."""
    local = config.LocalConfig.load()
    if db_url is not None:
        local.db_url = db_url
    if engineer is not None:
        local.engineer = engineer
    local.save()


@click.command()
@click.option("--admin", "admin_name", required=True, metavar="NAME", help="Name of the first admin (you).")
@click.option(
    "--shares",
    callback=_parse_shares,
    metavar="K-of-N",
    help="Also split the recovery key into N shares, any K of which rebuild it.",
)
@PASSPHRASE_FILE
@pass_app
def init(app: AppContext, admin_name: str, shares: tuple[int, int] | None, passphrase_file: Path | None) -> None:
    """Create a new vault with its recovery key and first admin.

    Without --db the vault is a SQLite file in this machine's data directory. The
    recovery shares, if asked for, are printed once: store them apart.

    \b
    Example:
      credvault init --admin alice --shares 3-of-5
      credvault --db postgresql+psycopg://vault@db.internal/credvault init --admin alice
    """
    from vault import Vault

    url = app.db_url()
    engineer_name(admin_name)  # before the prompt that names them
    passphrase = app.passphrase(passphrase_file, new=True, prompt=f"New passphrase for {admin_name}")
    vault, result = Vault.create(url, admin=admin_name, passphrase=passphrase, shares=shares)
    try:
        app.check_pin(url, vault, trust=True)  # the vault just made here is the one to expect there
    finally:
        vault.close()
    _remember(db_url=url, engineer=admin_name)
    click.echo(f"Created a vault at {safe_url(url)}")
    echo_pairs(
        [
            ("admin", result.admin),
            ("admin fingerprint", result.admin_fingerprint),
            ("org fingerprint", result.org_fingerprint),
        ]
    )
    if result.shares:
        k = shares[0] if shares else 0
        click.echo("")
        click.echo(f"RECOVERY SHARES: any {k} of these {len(result.shares)} rebuild the vault's recovery key.")
        click.echo("They are shown this once and stored nowhere. Give each to a different person or safe;")
        click.echo("never keep them together or next to the database.")
        for share in result.shares:
            click.echo(f"  {share}")
    else:
        click.echo("")
        click.echo(
            "warning: no recovery shares were made: if every admin loses their passphrase, the vault cannot be "
            "recovered. To make them: `credvault rotate root --shares 3-of-5` (any 3 of 5 rebuild the key).",
            err=True,
        )
    click.echo("")
    click.echo(f"Next: run `credvault unlock {result.admin}` to start working.")


@click.group()
def engineer() -> None:
    """Invite, enrol, confirm and list engineers.

    \b
    Example:
      credvault engineer invite bob
      credvault engineer list
    """


@engineer.command("invite")
@click.argument("name")
@click.option(
    "--admin", "make_admin", is_flag=True, help="Invite as an admin (can read every client and manage engineers)."
)
@click.option(
    "--service",
    "make_service",
    is_flag=True,
    help="Invite a service identity (an RMM script, a CI job): enrolled with a key file, never an admin.",
)
@click.option(
    "--valid-for",
    default="72h",
    show_default=True,
    metavar="DURATION",
    help="How long the code can be used, e.g. 24h or 7d.",
)
@pass_app
def invite(app: AppContext, name: str, make_admin: bool, make_service: bool, valid_for: str) -> None:
    """Create a one-time enrolment code for a new engineer (admin only).

    \b
    Example:
      credvault engineer invite bob --valid-for 24h
      credvault engineer invite rmm-nightly --service
    """
    from vault.service.validation import duration

    if make_admin and make_service:
        raise InvalidInput("a service identity is never an admin", hint="give --admin or --service, not both")
    lifetime = duration(valid_for)
    role = "admin" if make_admin else "service" if make_service else "engineer"
    code = app.session_vault().engineers.invite(name, role=role, valid_for=lifetime)
    expires = dt.datetime.now(dt.UTC) + lifetime
    click.echo(f"One-time enrolment code for {name} (valid until {when(expires)}):")
    click.echo("")
    click.echo(f"  {code}")
    click.echo("")
    click.echo(f"Give it to {name} in person or over a separate channel. On their own machine they run:")
    server = app.server_url()
    if make_service:  # a script's identity: its key file, made on the machine that runs it
        where = server or "URL"
        click.echo(f"  credvault server trust {where} --ca-file CA")
        click.echo(f"  credvault --server {where} engineer enroll {name} --key-file FILE")
    elif server is not None:  # invited through the team server: they enrol through it
        click.echo(f"  credvault server trust {server} --ca-file CA; credvault engineer enroll {name}")
    else:
        click.echo(f"  credvault --db {safe_url(app.db_url())} engineer enroll {name}")
        click.echo(f"or, with a team server: credvault server trust URL --ca-file CA; credvault engineer enroll {name}")
    click.echo("and type the code when asked (or pass --code-file PATH: a file only they can read).")
    click.echo(f"then read you their fingerprint, and you run: credvault engineer confirm {name}")


@engineer.command("enroll")
@click.argument("name")
@click.option(
    "--code-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Read the enrolment code from PATH (a file only you can read); else it is asked for.",
)
@click.option("--code", "code_in_argv", metavar="CODE", hidden=True, help="Refused: the code never goes in argv.")
@click.option(
    "--key-file",
    "service_key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="A service identity: write its key file to FILE (created, mode 0600) instead of asking a passphrase.",
)
@PASSPHRASE_FILE
@pass_app
def enroll(
    app: AppContext,
    name: str,
    code_file: Path | None,
    code_in_argv: str | None,
    service_key_file: Path | None,
    passphrase_file: Path | None,
) -> None:
    """Make your keys on this machine with the code an admin gave you.

    Type the code when asked (it is never taken on the command line, where other
    users and your shell history would see it), or put it in a file only you can
    read. You choose a passphrase (asked twice); only you know it. Then read the
    fingerprint this prints to your admin, who confirms it.

    Through a team server (pinned first with `credvault server trust`), the key record is
    kept on this machine and no database is used.

    \b
    Example:
      credvault --server https://vault.example.net:8443 engineer enroll bob
      credvault --db postgresql+psycopg://vault@db.internal/credvault engineer enroll bob
    """
    engineer_name(name)  # before the prompts: the second one names them
    if code_in_argv is not None:
        raise InvalidInput(
            "the enrolment code is not taken on the command line (ps and shell history would show it)",
            hint="run the command without --code and type the code when asked, or pass --code-file PATH",
        )
    server = app.server_url()
    if service_key_file is not None:
        from .servers import enroll_service

        enroll_service(server, name, lambda: _code(code_file), service_key_file)
        return
    if server is not None:
        _enroll_through(app, server, name, code_file, passphrase_file)
        return
    url = app.db_url()
    vault = app.open(url=url)  # the pinned vault (see `AppContext.check_pin`), before anything is typed
    code = _code(code_file)
    passphrase = app.passphrase(passphrase_file, new=True, prompt=f"New passphrase for {name}")
    fingerprint = vault.engineers.enroll(name, code, passphrase)
    _remember(db_url=url, engineer=name)
    _enrolled(name, fingerprint)


def _code(code_file: Path | None) -> str:
    if code_file is not None:
        return read_private_file(code_file, "enrolment code file").strip()
    return str(click.prompt("Enrolment code", hide_input=True, err=True)).strip()


def _enroll_through(
    app: AppContext, server: str, name: str, code_file: Path | None, passphrase_file: Path | None
) -> None:
    """Enrol through the team server pinned for ``server``; the key record is kept on this machine."""
    from vault.service.remote import RemoteVault
    from vault.service.serverpins import ServerPins

    pin = ServerPins.load().get(server)  # pinned first (`server trust`), before anything is typed
    code = _code(code_file)
    passphrase = app.passphrase(passphrase_file, new=True, prompt=f"New passphrase for {name}")
    remote = RemoteVault(pin, engineer=name)
    try:
        fingerprint = remote.engineers.enroll(name, code, passphrase)  # the key record kept on this machine
    finally:
        remote.close()
    local = config.LocalConfig.load()
    local.server, local.engineer = pin.url, name
    local.save()
    _enrolled(name, fingerprint)


def _enrolled(name: str, fingerprint: str) -> None:
    click.echo(f"Enrolled {name}. Your fingerprint:")
    click.echo("")
    click.echo(f"  {fingerprint}")
    click.echo("")
    click.echo("Read it to your admin (in person or by phone); they run `credvault engineer confirm " + name + "`.")
    click.echo("Once confirmed, run `credvault unlock` to start working.")


@engineer.command("confirm")
@click.argument("name")
@click.option("--fingerprint", metavar="FP", help="The fingerprint the engineer read to you; it must match.")
@pass_app
def confirm(app: AppContext, name: str, fingerprint: str | None) -> None:
    """Certify an enrolled engineer's keys after comparing their fingerprint (admin only).

    It first shows what it will certify: the name, the role the signed invitation gives,
    the fingerprint, the grants it carries over to the new keys and the grant rows it
    drops (not signed by an admin for this engineer, or expired). Without --fingerprint
    it then asks whether the fingerprint matches what the engineer read to you; there is
    deliberately no way to skip the comparison.

    \b
    Example:
      credvault engineer confirm bob --fingerprint "1a2b 3c4d ..."
    """
    vault = app.session_vault()
    pending = vault.engineers.pending_confirmation(name)
    _echo_pending(pending)
    if fingerprint is None:
        question = "Does the engineer's fingerprint match, and are the role and grants above what you expect?"
        if not click.confirm(question, default=False, err=True):
            raise CommandFailed(
                f"{name} was not confirmed", hint="compare the fingerprint with the engineer again, or re-invite them"
            )
        fingerprint = pending.fingerprint
    info = vault.engineers.confirm(name, fingerprint, shown=pending)
    say(f"Confirmed {info.name} ({info.role}). They can now run `credvault unlock`.")


def _echo_pending(pending: PendingConfirmation) -> None:
    echo_pairs(
        [
            ("engineer", pending.name),
            ("role", pending.role),
            ("invited by", pending.invited_by),
            ("fingerprint", pending.fingerprint),
        ]
    )
    click.echo("")
    click.echo(f"Grants carried over to the new keys ({len(pending.carried)}):")
    echo_table(["client", "until"], [(g.client, g.until or "open-ended") for g in pending.carried])
    if pending.dropped:
        click.echo("")
        click.echo(f"Grant rows NOT carried over ({len(pending.dropped)}):")
        echo_table(["grant", "client", "reason"], [(d.grant_id, d.client or "?", d.reason) for d in pending.dropped])
    click.echo("")


@engineer.command("list")
@JSON
@pass_app
def list_engineers(app: AppContext, as_json: bool) -> None:
    """List the vault's engineers with their role, status and fingerprint.

    \b
    Example:
      credvault engineer list --json
    """
    rows = app.session_vault().engineers.list()
    if as_json:
        echo_records(rows)
        return
    echo_table(
        ["name", "role", "status", "fingerprint", "created"],
        [(e.name, e.role, e.status, e.fingerprint, e.created_at) for e in rows],
    )


UNLOCK_ENV = "CREDVAULT_UNLOCK"  # "agent" (the default) or "keyring": where `unlock` keeps the session
UNLOCK_MODES = ("agent", "keyring")


def unlock_mode(flag: bool | None) -> str:
    """``keyring`` or ``agent``: --keyring/--agent, else CREDVAULT_UNLOCK, else the agent."""
    import os

    if flag is not None:
        return "keyring" if flag else "agent"
    mode = os.environ.get(UNLOCK_ENV) or "agent"
    if mode not in UNLOCK_MODES:
        raise ConfigurationError(
            f"{UNLOCK_ENV} must be agent or keyring", hint=f"unset {UNLOCK_ENV}, or set it to agent"
        )
    return mode


@click.command()
@click.argument("name", required=False)
@click.option(
    "--ttl", metavar="DURATION", help="How long the session lasts (default CREDVAULT_SESSION_TTL or 15m; at most 12h)."
)
@click.option(
    "--keyring/--agent",
    "use_keyring",
    default=None,
    help="Keep the session in the OS keyring only "
    "(default: the agent, and the OS keyring where one works; or CREDVAULT_UNLOCK).",
)
@PASSPHRASE_FILE
@pass_app
def unlock(
    app: AppContext, name: str | None, ttl: str | None, use_keyring: bool | None, passphrase_file: Path | None
) -> None:
    """Open your keys once and keep the session in the agent until it expires.

    The agent is a background process holding your keys in memory (no OS keyring
    needed); the everyday commands go through it. With --keyring (or
    CREDVAULT_UNLOCK=keyring) the session goes to the OS keyring instead, where every
    command opens it in-process. NAME defaults to --as, CREDVAULT_ENGINEER, or the
    engineer last unlocked here.

    \b
    Example:
      credvault unlock bob --ttl 1h
      credvault unlock --keyring
    """
    name = name or app.require_engineer()
    lifetime = app.session_ttl(ttl)
    engineer_name(name)  # before the prompt that names them
    if unlock_mode(use_keyring) == "agent":
        _unlock_agent(app, name, lifetime, passphrase_file)
        return
    vault = app.keyring_vault(name)  # the pinned vault (see `AppContext.check_pin`), before the passphrase
    passphrase = app.passphrase(passphrase_file, prompt=f"Passphrase for {name}")
    info = vault.engineers.unlock(name, passphrase, ttl=lifetime, org_memory=config.OrgKeyMemory())
    if app.server_url() is not None:
        _remember(engineer=info.engineer)
    else:
        _remember(db_url=config.LocalConfig.load().db_url or app.db_url(), engineer=info.engineer)
    say(f"Unlocked {info.engineer} ({info.role}) until {when(info.expires_at)}.")


def _unlock_agent(app: AppContext, name: str, lifetime: dt.timedelta, passphrase_file: Path | None) -> None:
    """``unlock`` into a new agent, replacing this engineer's agent on this database."""
    from vault.service import agent as agent_service  # the server side: only starting needs it

    url = app.target()
    app.check_target(url)  # the pinned vault or server (`AppContext.check_pin`), before any passphrase is typed
    passphrase = app.passphrase(passphrase_file, prompt=f"Passphrase for {name}")
    # A new unlock replaces the session, as it does in the keyring; the new agent stops the
    # old one only once it has unlocked, so a wrong passphrase leaves the running session alone.
    answer = agent_service.start(url, name, passphrase, lifetime, replace=True)
    if app.server_url() is not None:
        _remember(engineer=str(answer["engineer"]))
    else:
        _remember(db_url=config.LocalConfig.load().db_url or url, engineer=str(answer["engineer"]))
    expires = dt.datetime.fromisoformat(str(answer["expires_at"]))
    where = "the agent holds the session"
    try:  # where an OS keyring works, the commands the agent does not serve use it, unprompted
        app.keyring_vault(name).engineers.unlock(name, passphrase, ttl=lifetime, org_memory=config.OrgKeyMemory())
        where += " (and the OS keyring, for the commands the agent does not serve)"
    except ConfigurationError:
        pass  # no keyring here (headless): those commands ask the passphrase at a terminal
    except VaultError as error:  # a keyring that refuses (locked): the agent's session stands, say so
        where += f"; the OS keyring did not keep it ({printable(str(error))})"
    say(f"Unlocked {answer['engineer']} ({answer['role']}) until {when(expires)}; {where}.")


@click.command()
@pass_app
def lock(app: AppContext) -> None:
    """Forget the unlocked session of the selected engineer on this machine, and stop their agents.

    \b
    Example:
      credvault lock
    """
    from .agent import stop_agent

    name = app.require_engineer()
    stopped = stop_agent(app, name, every=True)
    if stopped:
        click.echo(f"Stopped the agent for {name}.")
    try:
        locked = app.keyring_vault(name).engineers.lock()
    except ConfigurationError:
        if not stopped:
            click.echo(f"{name} had no unlocked session here.")
        return  # no OS keyring here: an agent held the only session, if any
    if locked:
        click.echo(f"Locked {name}.")
    elif not stopped:
        click.echo(f"{name} had no unlocked session here.")


@click.command()
@JSON
@pass_app
def whoami(app: AppContext, as_json: bool) -> None:
    """Show the engineer acting here, their role, and when the session expires.

    \b
    Example:
      credvault whoami --json
    """
    info = app.session_vault().engineers.whoami()
    if as_json:
        echo_json(info.to_json())
        return
    echo_pairs(
        [("engineer", info.engineer), ("role", info.role), ("session until", info.expires_at), ("vault", info.vault_id)]
    )


COMMANDS = [init, engineer, unlock, lock, whoami]
