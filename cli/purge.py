"""Deletion and access requests: purge client/secret/subject/scrub, receipts, subject
find/report, backup create/restore/export-keys, report stale.

A purge shows what will go and asks for the client's slug (or the secret's reference)
to be typed back, unless --yes. Nothing is purged without a request reference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from vault.errors import ConfigurationError, InvalidInput

from .context import AppContext, pass_app, read_passphrase_file, read_private_file
from .errors import CommandFailed
from .output import echo_json, echo_pairs, echo_records, echo_table, say

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
REQUEST = click.option(
    "--request", "request", required=True, metavar="REF", help="The deletion request's reference (ticket number)."
)
YES = click.option("--yes", is_flag=True, help="Do not ask to type the name back.")
VACUUM = click.option(
    "--vacuum", is_flag=True, help="Also compact the database (SQLite VACUUM / PostgreSQL VACUUM FULL)."
)
KEY_EXPORT_REMINDER = (
    "Older backup-key exports still open this client's part of older backups: "
    "run `credvault backup export-keys NEW_FILE` and destroy every older key export."
)


def _confirm_typed(expected: str, yes: bool) -> None:
    if yes:
        return
    typed = click.prompt(f"Type {expected} to confirm", err=True, default="", show_default=False)
    if typed.strip() != expected:
        raise CommandFailed(
            "nothing was purged: the name typed did not match", hint=f"type {expected} exactly, or pass --yes"
        )


def _echo_receipt(receipt: object, as_json: bool) -> None:
    from vault.service.records import ReceiptInfo

    assert isinstance(receipt, ReceiptInfo)
    if as_json:
        echo_json(receipt.to_json())
        return
    echo_pairs(
        [
            ("receipt", f"#{receipt.id}"),
            ("kind", receipt.kind),
            ("request", receipt.request),
            ("admin", receipt.admin),
            ("time", receipt.purged_at),
            ("counts", ", ".join(f"{k}={v}" for k, v in sorted(receipt.counts.items()))),
            ("destroyed key fingerprints", " ".join(receipt.fingerprints) or "-"),
            ("audit event", receipt.event_seq),
            *([("vacuum", receipt.scrubbed)] if receipt.scrubbed else []),
        ]
    )


@click.group("purge")
def purge() -> None:
    """Erase a client, a secret or a person's data on request (crypto-shredding).

    \b
    Example:
      credvault purge client acme --request DSR-2026-014
      credvault purge subject jane.doe@example.org --request DSR-2026-015
    """


@purge.command("client")
@click.argument("client")
@REQUEST
@YES
@VACUUM
@JSON
@pass_app
def purge_client(app: AppContext, client: str, request: str, yes: bool, vacuum: bool, as_json: bool) -> None:
    """Destroy every key of CLIENT and delete its data; leave a signed receipt (admin).

    \b
    Example:
      credvault purge client acme --request DSR-2026-014
    """
    vault = app.session_vault()
    preview = vault.purge.preview(client)
    click.echo(
        f"This destroys client {client}: {preview.secrets} secret(s), {preview.versions} version(s), "
        f"{preview.key_versions} key version(s), {preview.grants} grant(s), {preview.open_checkouts} open checkout(s); "
        f"{preview.audit_events} audit event(s) will become pseudonymous.",
        err=True,
    )
    _confirm_typed(client, yes)
    receipt = vault.purge.client(client, request=request, vacuum=vacuum)
    _echo_receipt(receipt, as_json)
    click.echo(KEY_EXPORT_REMINDER, err=True)


@purge.command("secret")
@click.argument("ref", metavar="CLIENT/NAME")
@REQUEST
@YES
@VACUUM
@JSON
@pass_app
def purge_secret(app: AppContext, ref: str, request: str, yes: bool, vacuum: bool, as_json: bool) -> None:
    """Destroy one secret, every version and data key; leave a signed receipt (admin).

    \b
    Example:
      credvault purge secret acme/old-vpn --request DSR-2026-016
    """
    vault = app.session_vault()
    versions = len(vault.secrets.history(ref))
    click.echo(f"This destroys {ref} and its {versions} version(s).", err=True)
    _confirm_typed(ref, yes)
    _echo_receipt(vault.purge.secret(ref, request=request, vacuum=vacuum), as_json)


@purge.command("subject")
@click.argument("query")
@REQUEST
@YES
@VACUUM
@JSON
@pass_app
def purge_subject(app: AppContext, query: str, request: str, yes: bool, vacuum: bool, as_json: bool) -> None:
    """Destroy every secret whose metadata names a person (review with `subject find` first).

    \b
    Example:
      credvault purge subject jane.doe@example.org --request DSR-2026-015
    """
    vault = app.session_vault()
    matches = [x for x in vault.subjects.find(query) if x.secret_id is not None]
    refs = sorted({f"{x.client}/{x.secret}" for x in matches})
    say(f"This destroys {len(refs)} secret(s): {', '.join(refs) or '-'}", err=True)
    _confirm_typed("yes", yes)
    receipts = vault.subjects.purge(query, request=request, vacuum=vacuum)
    if as_json:
        echo_records(receipts)
        return
    for receipt in receipts:
        _echo_receipt(receipt, False)


@purge.command("scrub")
@VACUUM
@pass_app
def scrub(app: AppContext, vacuum: bool) -> None:
    """Remove freed data from disk (SQLite WAL checkpoint; PostgreSQL VACUUM).

    \b
    Example:
      credvault purge scrub --vacuum
    """
    click.echo(app.session_vault().purge.scrub(vacuum=vacuum))


@click.group("receipts", invoke_without_command=True)
@JSON
@click.pass_context
def receipts(ctx: click.Context, as_json: bool) -> None:
    """List purge receipts, or verify one.

    \b
    Example:
      credvault receipts
      credvault receipts verify 3
    """
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.find_object(AppContext)
    assert app is not None
    rows = app.session_vault().purge.receipts()
    if as_json:
        echo_records(rows)
        return
    echo_table(
        ["#", "kind", "request", "admin", "time", "counts"],
        [
            (r.id, r.kind, r.request, r.admin, r.purged_at, ", ".join(f"{k}={v}" for k, v in sorted(r.counts.items())))
            for r in rows
        ],
    )


@receipts.command("verify")
@click.argument("receipt_id", type=int, metavar="N")
@pass_app
def verify_receipt(app: AppContext, receipt_id: int) -> None:
    """Check receipt N's signature and that nothing it destroyed is still in the store.

    \b
    Example:
      credvault receipts verify 3
    """
    check = app.session_vault().purge.verify_receipt(receipt_id)
    if not check.ok:
        raise CommandFailed(
            f"receipt #{receipt_id} does not verify: " + "; ".join(check.problems),
            hint="the store may have been altered or restored from an older copy",
        )
    click.echo(f"Receipt #{receipt_id} verifies: signed by its admin, and nothing it destroyed remains.")


@click.group("subject")
def subject() -> None:
    """Find what is held about a person, for an access or erasure request (admin).

    \b
    Example:
      credvault subject find jane.doe@example.org
      credvault subject report "Jane Doe" --out jane-doe.json
    """


@subject.command("find")
@click.argument("query")
@JSON
@pass_app
def subject_find(app: AppContext, query: str, as_json: bool) -> None:
    """List where QUERY (a name, an email address) appears, across all clients.

    \b
    Example:
      credvault subject find jane.doe@example.org
    """
    matches = app.session_vault().subjects.find(query)
    if as_json:
        echo_records(matches)
        return
    echo_table(
        ["client", "secret", "version", "field", "value"],
        [(x.client, x.secret, x.version, x.field, x.value) for x in matches],
    )


@subject.command("report")
@click.argument("query")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write (created, mode 600)."
)
@pass_app
def subject_report(app: AppContext, query: str, out: Path) -> None:
    """Write what is held about a person to a file, for an access request (logged).

    \b
    Example:
      credvault subject report "Jane Doe" --out jane-doe.json
    """
    try:  # claim the file first: a refused run must not log a report nobody received
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandFailed(f"{out} already exists", hint="choose a new file name") from None
    except OSError:
        raise CommandFailed(f"cannot create {out}", hint="check the folder exists and is writable") from None
    try:
        report = app.session_vault().subjects.report(query)
    except BaseException:
        os.close(fd)
        out.unlink(missing_ok=True)
        raise
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
    click.echo(f"Wrote {len(report['matches'])} match(es) to {out}.")


@click.group("backup")
def backup() -> None:
    """Encrypted backups whose purged clients stay purged.

    Each client's part of a backup is encrypted under its own backup key, kept only in
    the live store and in key exports. Keep only the newest key export, apart from the
    backups: with it every old backup restores except clients purged since.

    \b
    Example:
      credvault backup create vault-2026-11-24.cvbk
      credvault backup export-keys backup-keys.json
      credvault --db sqlite:///new.db backup restore vault-2026-11-24.cvbk --keys backup-keys.json --admin alice
    """


@backup.command("create")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_app
def backup_create(app: AppContext, file: Path) -> None:
    """Write a consistent, encrypted copy of the vault to FILE (admin).

    Through a team server (--server) the server streams the rows as stored and this machine
    checks and seals them; the file is the same as one made on the server's host.

    \b
    Example:
      credvault backup create vault-2026-11-24.cvbk
      credvault --server https://vault.example.net:8443 backup create vault-2026-11-24.cvbk
    """
    if file.exists():
        raise CommandFailed(f"{file} already exists", hint="choose a new file name")
    served = app.server_url() is not None
    info = app.session_vault().backups.create(file)
    click.echo(f"Wrote {file}: {info.clients} client(s), {info.secrets} secret(s), audit head {info.audit_head}.")
    where = (
        "`credvault --db URL --server-key FILE backup export-keys FILE` on the server's host"
        if served
        else "`credvault backup export-keys FILE`"
    )
    click.echo(f"It needs a key export to restore: {where} (keep it apart).", err=True)


@backup.command("export-keys")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_app
def backup_export_keys(app: AppContext, file: Path) -> None:
    """Write the backup keys, sealed to the recovery key and each admin (admin).

    \b
    Example:
      credvault backup export-keys backup-keys-2026-11-24.json
    """
    if file.exists():
        raise CommandFailed(f"{file} already exists", hint="choose a new file name")
    count = app.session_vault().backups.export_keys(file)
    click.echo(f"Wrote the keys of {count} client(s) to {file}. Destroy older key exports.")


def _read_shares(path: Path) -> tuple[str, ...]:
    """Shares from a private file, or typed one per line (hidden) until an empty line."""
    if str(path) == "-":
        typed: list[str] = []
        prompt = "Share {} (an empty line ends)"
        while line := str(click.prompt(prompt.format(len(typed) + 1), default="", hide_input=True, err=True)).strip():
            typed.append(line)
        return tuple(typed)
    return tuple(line.strip() for line in read_private_file(path, "shares file").splitlines() if line.strip())


@backup.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--keys", "keys", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A key export."
)
@click.option("--admin", metavar="NAME", help="An admin named in the key export (asks for their passphrase).")
@click.option(
    "--shares-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    metavar="PATH",
    help="Recovery shares instead of an admin, one per line, from PATH (only you may read it) or - (typed).",
)
@click.option("--share", "share_in_argv", multiple=True, hidden=True, help="Refused: shares never go in argv.")
@pass_app
def backup_restore(
    app: AppContext,
    file: Path,
    keys: Path,
    admin: str | None,
    shares_file: Path | None,
    share_in_argv: tuple[str, ...],
) -> None:
    """Restore FILE into an empty database (--db), opening it with a key export.

    Recovery shares are read from a file only you can read, or typed (`--shares-file -`,
    one per line, an empty line to end); never from the command line.

    \b
    Example:
      credvault --db sqlite:///restored.db backup restore vault.cvbk --keys backup-keys.json --admin alice
      credvault --db sqlite:///restored.db backup restore vault.cvbk --keys backup-keys.json --shares-file -
    """
    if app.server_url() is not None:  # it writes a whole database: where the database is, never through a server
        raise ConfigurationError(
            "a restore is a host operation: it is not served through a team server",
            hint="run `credvault --db URL backup restore FILE --keys KEYS` on a new, empty database on the server's "
            "host, then serve it with the key file",
        )
    if share_in_argv:
        raise InvalidInput(
            "recovery shares are not taken on the command line (ps and shell history would show them)",
            hint="pass --shares-file PATH (one share per line, a file only you can read), or - to type them",
        )
    if not admin and shares_file is None:
        raise click.UsageError("give --admin NAME or --shares-file PATH")
    shares = _read_shares(shares_file) if shares_file is not None else ()
    passphrase = None
    if admin:
        from vault.service.validation import engineer_name

        engineer_name(admin)  # before the prompt that names them
        passphrase = (
            read_passphrase_file(app.passphrase_file)
            if app.passphrase_file
            else app.passphrase(prompt=f"Passphrase of {admin}")
        )
    from vault import Vault
    from vault.service.config import OrgKeyMemory

    vault = Vault.open(app.db_url(), upgrade=True)
    try:
        info = vault.backups.restore(file, keys, admin=admin, passphrase=passphrase, shares=list(shares) or None)
        app.check_pin(app.db_url(), vault, trust=True)  # restored here on purpose: expect it here
        OrgKeyMemory().forget(vault.vault_id().hex())  # its org-key chain may end before the one seen
    finally:
        vault.close()
    click.echo(f"Restored {info.clients} client(s) and {info.secrets} secret(s) from {file}.")
    if info.skipped_clients:
        click.echo(
            f"{info.skipped_clients} client(s) stayed unreadable: purged since this backup (their keys are gone)."
        )


@click.command("stale")
@JSON
@pass_app
def report_stale(app: AppContext, as_json: bool) -> None:
    """Secrets unused for longer than their client's stale-after setting (admin).

    \b
    Example:
      credvault policy set acme --stale-after 180
      credvault report stale
    """
    rows = app.session_vault().reports.stale()
    if as_json:
        echo_records(rows)
        return
    echo_table(
        ["secret", "last used", "days unused", "stale after"],
        [(f"{r.client}/{r.secret}", r.last_used, r.days_unused, r.stale_days) for r in rows],
    )


COMMANDS = [purge, receipts, subject, backup]
REPORT_COMMANDS = [report_stale]
