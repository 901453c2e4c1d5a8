"""Keys over time: rotate client/root/engineer/resume, passwd, status, maintain,
settings, and the two commands attached to other families: `engineer remove` and
`secret rotate`.

Long re-wraps show a progress bar with an ETA on a terminal. A rotation interrupted by
Ctrl-C or a crash is safe: every batch is its own transaction, reads keep working, and
`credvault rotate resume` finishes it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from vault.service.records import RootRotation
from vault.service.validation import shown

from .context import AppContext, pass_app
from .engineers import _parse_shares
from .output import echo_json, echo_table, say

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
BATCH = click.option(
    "--batch",
    "batch_size",
    type=click.IntRange(1, 100_000),
    default=2000,
    show_default=True,
    help="Data keys re-wrapped per transaction.",
)


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback drawing a bar with an ETA on a terminal; None elsewhere."""
    if not sys.stderr.isatty():
        yield None
        return
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = click.progressbar(length=max(total, 1), label=label, show_eta=True, file=sys.stderr)
            bar.__enter__()
            state["bar"], state["done"] = bar, 0
        bar.update(done - state["done"])
        state["done"] = done

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"].__exit__(None, None, None)


@click.group("rotate")
def rotate() -> None:
    """Rotate keys without downtime: a client's key, the root key, an engineer's keys.

    \b
    Example:
      credvault rotate client acme
      credvault rotate root
      credvault rotate resume
    """


@rotate.command("client")
@click.argument("client")
@BATCH
@pass_app
def rotate_client(app: AppContext, client: str, batch_size: int) -> None:
    """Give CLIENT a new key; re-wrap its data keys in resumable batches (admin).

    \b
    Example:
      credvault rotate client acme
    """
    with progress_bar(f"re-wrapping {client}") as progress:
        info = app.session_vault().keys.rotate_client(client, batch_size=batch_size, progress=progress)
    say(
        f"Rotated {info.client}: key version {info.from_version} -> {info.to_version}, "
        f"{info.done} data key(s) re-wrapped, old version destroyed."
    )


@rotate.command("root")
@click.option(
    "--shares",
    callback=_parse_shares,
    metavar="K-of-N",
    help="Issue new recovery shares, any K of N rebuild the new key (and use K-of-N from now on).",
)
@pass_app
def rotate_root(app: AppContext, shares: tuple[int, int] | None) -> None:
    """Make a new recovery key and organisation key; re-seal every client key (admin).

    Every verified certificate is re-issued under the new organisation key (engineers
    keep working), the new key is sealed to every certified admin, and when the vault
    uses recovery shares new ones are printed once: the old shares open nothing current.

    \b
    Example:
      credvault rotate root
      credvault rotate root --shares 3-of-5
    """
    result = app.session_vault().keys.rotate_root(shares=shares)
    click.echo(
        f"Rotated the recovery key (version {result.root_version}) and the organisation key "
        f"(version {result.org_version}): {result.clients} client(s) re-sealed; the old keys are destroyed."
    )
    echo_root_rotation(result)


def echo_root_rotation(result: RootRotation) -> None:
    """What a root rotation leaves an admin to check or keep: the roster, refusals, the new shares."""
    click.echo(f"The new recovery key is sealed to: {', '.join(shown(a) for a in result.admins)}.")
    for entry in result.refused:
        click.echo(f"warning: not trusted, left out: {entry}", err=True)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.shares:
        click.echo("")
        click.echo(
            f"NEW RECOVERY SHARES: any {result.threshold} of these {len(result.shares)} rebuild the new recovery key."
        )
        click.echo("Shown this once and stored nowhere; destroy the old shares: they open nothing current.")
        for share in result.shares:
            click.echo(f"  {share}")
    else:
        click.echo(
            "This vault has no recovery shares (old ones, if any, open nothing current). "
            "To make them: `credvault rotate root --shares 3-of-5`.",
            err=True,
        )


@rotate.command("engineer")
@click.argument("name")
@pass_app
def rotate_engineer(app: AppContext, name: str) -> None:
    """Destroy NAME's keys now (a lost laptop) and re-invite them (admin).

    \b
    Example:
      credvault rotate engineer bob
    """
    code = app.session_vault().engineers.rotate(name)
    click.echo(f"The keys of {name} are destroyed; their grants wait for new keys.")
    click.echo(f"Give {name} this one-time code (valid 72 h) to enrol again, by a separate channel:")
    click.echo(f"  {code}")
    server = app.server_url()
    if server is not None:  # re-keyed through the team server: they enrol through it
        click.echo(f"On a new machine they first run `credvault server trust {server} --ca-file CA`.")
    click.echo(f"They run `credvault engineer enroll {name}` and type it when asked (or use --code-file PATH);")
    click.echo(f"then you confirm with `credvault engineer confirm {name}`.")


@rotate.command("resume")
@BATCH
@pass_app
def rotate_resume(app: AppContext, batch_size: int) -> None:
    """Finish rotations left incomplete by a crash or an interrupt (admin).

    \b
    Example:
      credvault rotate resume
    """
    with progress_bar("re-wrapping") as progress:
        done = app.session_vault().keys.resume(batch_size=batch_size, progress=progress)
    if not done:
        click.echo("No rotation was under way.")
    for info in done:
        say(f"Finished {info.client}: key version {info.to_version}, {info.done} data key(s) re-wrapped.")


@click.command("passwd")
@pass_app
def passwd(app: AppContext) -> None:
    """Change your passphrase (only your own key record changes).

    \b
    Example:
      credvault passwd
    """
    vault = app.session_vault()
    old = app.passphrase(prompt="Current passphrase")
    new = _new_from_prompt()  # always typed: never the --passphrase-file that gave the old one
    vault.engineers.change_passphrase(old, new)
    click.echo("Passphrase changed.")


def _new_from_prompt() -> str:
    return str(click.prompt("New passphrase", hide_input=True, confirmation_prompt=True, err=True))


@click.command("status")
@JSON
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Warnings an admin should act on: old keys, unfinished rotations, values to change.

    \b
    Example:
      credvault status
    """
    report = app.session_vault().reports.status()
    if as_json:
        echo_json(report.to_json())
        return
    click.echo(f"{report.clients} client(s), {report.secrets} secret(s), {report.engineers} engineer(s).")
    for warning in report.warnings:
        say(f"warning: {warning}")
    for ref in report.must_change:
        say(f"must change: {ref}")
    if not report.warnings:
        click.echo("No warnings.")


@click.command("maintain")
@pass_app
def maintain(app: AppContext) -> None:
    """Housekeeping: delete the key copies of expired grants (admin).

    \b
    Example:
      credvault maintain
    """
    removed = app.session_vault().grants.maintain()
    click.echo(f"Deleted {removed} sealed key copy(ies) of expired grants.")


@click.command("settings")
@click.option("--retention", type=int, metavar="N", help="Versions kept per secret (default 10).")
@click.option("--cryptoperiod", type=int, metavar="DAYS", help="Warn about keys older than this (default 365).")
@pass_app
def settings(app: AppContext, retention: int | None, cryptoperiod: int | None) -> None:
    """Change vault-wide settings (admin).

    \b
    Example:
      credvault settings --retention 5 --cryptoperiod 180
    """
    vault = app.session_vault()
    if retention is None and cryptoperiod is None:
        raise click.UsageError("give --retention and/or --cryptoperiod")
    if retention is not None:
        vault.keys.set_retention(retention)
    if cryptoperiod is not None:
        vault.keys.set_cryptoperiod(cryptoperiod)
    click.echo("Settings saved.")


@click.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@BATCH
@JSON
@pass_app
def remove_engineer(app: AppContext, name: str, yes: bool, batch_size: int, as_json: bool) -> None:
    """Offboard NAME: revoke all, rotate their clients' keys, print what is at risk (admin).

    \b
    Example:
      credvault engineer remove bob
    """
    if not yes:
        click.confirm(f"Remove {name}, revoke every grant and rotate every key they could hold?", abort=True, err=True)
    with progress_bar("rotating client keys") as progress:
        vault = app.session_vault()
        at_risk, rotations = vault.engineers.remove(name, batch_size=batch_size, progress=progress)
    root = vault.last_root_rotation
    if as_json:
        out: dict[str, Any] = {"at_risk": [r.to_json() for r in at_risk], "rotations": [r.to_json() for r in rotations]}
        out["not_adopted"] = list(vault.adoption_skipped)
        if root is not None:  # printed this once: the new recovery shares, if the vault uses them
            out["root_rotation"] = {
                "admins": list(root.admins),
                "shares": list(root.shares),
                "threshold": root.threshold,
            }
        echo_json(out)
        return
    click.echo(f"Removed {name}: {len(rotations)} client key(s) rotated.")
    for entry in vault.adoption_skipped:
        click.echo(f"warning: not signed by {name}, not adopted, its key copies deleted: {entry}", err=True)
    if root is not None:
        click.echo(f"{name} was an admin: the recovery key and the organisation key were rotated.")
        echo_root_rotation(root)
    if at_risk:
        click.echo(f"{len(at_risk)} value(s) {name} saw have not changed since; change them on the equipment:")
        echo_table(
            ["secret", "field", "last revealed", "reason"],
            [(f"{r.client}/{r.secret}", r.field, r.at, r.reason) for r in at_risk],
        )
    else:
        click.echo(f"Nothing {name} revealed is unchanged.")


@click.command("rotate")
@click.argument("ref", metavar="CLIENT/NAME")
@click.option("--generate", is_flag=True, default=True, help="Generate the new value (the default).")
@click.option("--length", type=int, help="Length of the generated password (default 24).")
@JSON
@pass_app
def rotate_secret(app: AppContext, ref: str, generate: bool, length: int | None, as_json: bool) -> None:
    """Store a new generated value for a secret as a new version.

    Versions beyond the retention setting (default 10) are destroyed with their keys.

    \b
    Example:
      credvault secret rotate acme/fw01-admin --length 32
    """
    info = app.session_vault().keys.rotate_secret(ref, length=length)
    if as_json:
        echo_json(info.to_json())
        return
    click.echo(f"Stored a new value for {ref} (version {info.version}); check it out to set it on the equipment.")


COMMANDS = [rotate, passwd, status, maintain, settings]
ENGINEER_COMMANDS = [remove_engineer]
SECRET_COMMANDS = [rotate_secret]
