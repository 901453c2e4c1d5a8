"""Checkout and check-in: checkout, checkin, checkouts, policy show/set.

``checkout`` reveals only after the library has committed the audit event; it checks
that the value has somewhere to go (a clipboard, --show or --json) *before* asking,
so that no access is recorded for a value that could not be shown.
"""

from __future__ import annotations

import datetime as dt
import sys

import click

from . import clipboard
from .context import AppContext, pass_app
from .errors import CommandFailed
from .output import SHOW_WARNING, echo_json, echo_pairs, echo_records, echo_table, say, shown_value, when

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.command("checkout")
@click.argument("ref", metavar="CLIENT/NAME")
@click.option("--reason", "-r", metavar="TEXT", help="Why: a ticket number or a few words (required by default).")
@click.option(
    "--field",
    default="password",
    show_default=True,
    help="Which field: password, username, url, host, note, or a custom field.",
)
@click.option("--show", is_flag=True, help="Print the value instead of copying it to the clipboard.")
@click.option("--json", "as_json", is_flag=True, help="Print the value and the checkout as JSON (for scripts).")
@click.option(
    "--for", "hold_for", metavar="DURATION", help="Hold the checkout this long (default: the client's policy, 2h)."
)
@click.option("--version", "version", type=int, metavar="N", help="Reveal an older version.")
@click.option(
    "--clear-after",
    type=click.IntRange(5, 600),
    default=clipboard.DEFAULT_CLEAR_SECONDS,
    show_default=True,
    help="Seconds before the clipboard is cleared (only if it still holds the value).",
)
@pass_app
def checkout(
    app: AppContext,
    ref: str,
    reason: str | None,
    field: str,
    show: bool,
    as_json: bool,
    hold_for: str | None,
    version: int | None,
    clear_after: int,
) -> None:
    """Check out a secret: reveal it after the access is on record.

    The value goes to the clipboard and is cleared after 30 s (only if it is still
    ours), or is printed with --show or --json. Under an exclusive policy one engineer
    holds the checkout at a time until check-in or until it lapses.

    \b
    Example:
      credvault checkout acme/fw01-admin --reason "T-1234 reset VPN"
      credvault checkout acme/fw01-admin -r T-1234 --show
      credvault checkout acme/xero --field username -r T-99 --json
    """
    from vault.service.validation import duration

    board = None if (show or as_json) else clipboard.find()
    if not (show or as_json) and board is None:
        raise CommandFailed(
            "there is no clipboard here, so nothing was checked out",
            hint="pass --show to print the value, or --json for scripts",
        )
    length = duration(hold_for) if hold_for else None
    revealed = app.agent_checkout(ref, reason=reason, field=field, version=version, hold_for=hold_for)
    if revealed is None:  # no agent runs: open the vault and the session here
        revealed = app.session_vault().checkouts.checkout(
            ref, reason=reason, field=field, version=version, hold_for=length
        )
    if as_json:
        echo_json(
            {
                "ref": revealed.ref,
                "field": revealed.field,
                "version": revealed.version,
                "value": revealed.value,
                "expires_at": revealed.expires_at.isoformat() if revealed.expires_at else None,
                "must_change": revealed.must_change,
            }
        )
        return
    if show:
        value, altered = shown_value(revealed.value)
        click.echo(value)
        if altered:
            click.echo(f"warning: {SHOW_WARNING}", err=True)
    else:
        assert board is not None
        clipboard.copy_with_clear(board, revealed.value, clear_after)
        click.echo(
            f"Copied the {field} of {ref} (version {revealed.version}) to the clipboard; "
            f"it is cleared in {clear_after} s.",
            err=True,
        )
    if revealed.expires_at is not None:
        click.echo(f"Checked out until {when(revealed.expires_at)}; run `credvault checkin {ref}` when done.", err=True)
    if revealed.must_change:
        click.echo("This client rotates after checkout: store a new value at check-in (--generate).", err=True)


@click.command("checkin")
@click.argument("ref", metavar="CLIENT/NAME")
@click.option("--new-password-stdin", is_flag=True, help="Store a new password read from standard input.")
@click.option("--generate", is_flag=True, help="Store a newly generated password.")
@click.option("--length", type=int, help="Length of a generated password (default 24).")
@click.option("--break", "break_it", is_flag=True, help="Admin: release someone else's checkout (logged).")
@pass_app
def checkin(
    app: AppContext, ref: str, new_password_stdin: bool, generate: bool, length: int | None, break_it: bool
) -> None:
    """Check a secret back in, optionally storing a new password.

    \b
    Example:
      credvault checkin acme/fw01-admin
      credvault checkin acme/fw01-admin --generate
      printf '%s' "$NEWPW" | credvault checkin acme/fw01-admin --new-password-stdin
      credvault checkin acme/fw01-admin --break      # admin
    """
    vault = app.session_vault()
    if break_it:
        holders = vault.checkouts.break_checkout(ref)
        say(f"Released the checkout of {ref} held by {holders}.")
        return
    new_password = None
    if new_password_stdin:
        from .context import strip_newline

        new_password = strip_newline(sys.stdin.read())
    result = vault.checkouts.checkin(ref, new_password=new_password, generate=generate, length=length)
    stored = " and stored a new password" if (new_password is not None or generate) else ""
    click.echo(f"Checked in {ref}{stored}.")
    if result is not None and result.must_change:
        click.echo("Note: this secret must still be changed (rotate-after-checkout).", err=True)


@click.command("checkouts")
@JSON
@pass_app
def checkouts(app: AppContext, as_json: bool) -> None:
    """List open checkouts (all of them for an admin, yours otherwise).

    \b
    Example:
      credvault checkouts
    """
    rows = app.session_vault().checkouts.list()
    if as_json:
        echo_records(rows)
        return
    echo_table(
        ["secret", "engineer", "exclusive", "since", "until"],
        [(f"{c.client}/{c.secret}", c.engineer, c.exclusive, c.started_at, c.expires_at) for c in rows],
    )


@click.group("policy")
def policy() -> None:
    """Show and set a client's access policy.

    \b
    Example:
      credvault policy show acme
      credvault policy set acme --exclusive --rotate-after-checkout --for 2h
      credvault policy adopt
    """


@policy.command("show")
@click.argument("client")
@JSON
@pass_app
def policy_show(app: AppContext, client: str, as_json: bool) -> None:
    """Show a client's policy.

    \b
    Example:
      credvault policy show acme --json
    """
    info = app.session_vault().policies.get(client)
    if as_json:
        echo_json(info.to_json())
        return
    _echo_policy(info)


@policy.command("set")
@click.argument("client")
@click.option("--reason-required/--no-reason-required", default=None, help="Require a reason for every checkout.")
@click.option("--exclusive/--no-exclusive", default=None, help="One engineer holds a checkout at a time.")
@click.option(
    "--rotate-after-checkout/--no-rotate-after-checkout",
    default=None,
    help="Flag the password 'must change' after each checkout.",
)
@click.option("--for", "hold_for", metavar="DURATION", help="How long a checkout lasts (default 2h).")
@click.option(
    "--stale-after", "stale_days", type=int, metavar="DAYS", help="Flag secrets unused this many days (0: off)."
)
@pass_app
def policy_set(
    app: AppContext,
    client: str,
    reason_required: bool | None,
    exclusive: bool | None,
    rotate_after_checkout: bool | None,
    hold_for: str | None,
    stale_days: int | None,
) -> None:
    """Change a client's policy (admin; logged).

    \b
    Example:
      credvault policy set acme --exclusive --for 90m
      credvault policy set acme --no-reason-required
    """
    from vault.service.validation import duration

    length: dt.timedelta | None = duration(hold_for) if hold_for else None
    info = app.session_vault().policies.set(
        client,
        reason_required=reason_required,
        exclusive=exclusive,
        rotate_after_checkout=rotate_after_checkout,
        checkout_for=length,
        stale_days=stale_days,
    )
    _echo_policy(info)


@policy.command("adopt")
@click.option("--yes", is_flag=True, help="Sign without asking (the list is still printed).")
@pass_app
def policy_adopt(app: AppContext, yes: bool) -> None:
    """Sign, as stored, the policies that do not verify (admin; logged), after review.

    After upgrading to signed policies (revision 0008) every stored policy reads as the
    strict one until an admin signs it. This lists them as stored and, once you agree,
    signs exactly what it listed. Relaxed values you do not recognise: answer no and use
    `policy set` for that client instead.

    \b
    Example:
      credvault policy adopt
    """
    vault = app.session_vault()
    pending = vault.policies.unsigned()
    if not pending:
        click.echo("Every stored policy is signed: nothing to adopt.")
        return
    echo_table(
        ["client", "reason required", "exclusive", "rotate after checkout", "checkout lasts", "stale after"],
        [
            (
                p.client,
                p.reason_required,
                p.exclusive,
                p.rotate_after_checkout,
                f"{p.checkout_minutes} min",
                f"{p.stale_days} days" if p.stale_days else "off",
            )
            for p in pending
        ],
    )
    if not yes and not click.confirm(f"Sign these {len(pending)} policies as shown?", default=False, err=True):
        raise CommandFailed("nothing was signed", hint="`credvault policy set CLIENT ...` signs one client's policy")
    signed = vault.policies.adopt(pending)
    click.echo(f"Signed {len(signed)} policies.")


def _echo_policy(info: object) -> None:
    from vault.service.records import PolicyInfo

    assert isinstance(info, PolicyInfo)
    echo_pairs(
        [
            ("client", info.client),
            ("reason required", info.reason_required),
            ("exclusive", info.exclusive),
            ("rotate after checkout", info.rotate_after_checkout),
            ("checkout lasts", f"{info.checkout_minutes} min"),
            ("stale after", f"{info.stale_days} days" if info.stale_days else "off"),
            ("signed", "yes" if info.signed else "NO: the stored policy does not verify; the strict one applies"),
        ]
    )
    if not info.signed:
        click.echo(
            f"hint: an admin re-signs it: `credvault policy set {info.client} ...` (starting from the values above)",
            err=True,
        )


COMMANDS = [checkout, checkin, checkouts, policy]
