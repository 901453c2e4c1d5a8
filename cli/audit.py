"""The access log and reports: audit verify/log/export/checkpoint, report access/at-risk.

``audit verify`` is incremental: it starts from the last head this machine verified (whose
own fields, signature and link are checked again) and also checks that the log still
reaches the furthest head this machine has seen (both kept in the local config
directory), so a truncated tail is caught. An incremental verify never re-reads the
events before its anchor, so a full one is run instead when this machine's last full
verify is older than ``FULL_EVERY_DAYS`` or ``FULL_EVERY_EVENTS`` events. ``--full``
starts from the first event; ``--checkpoint FILE`` checks signed checkpoints kept elsewhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .context import AppContext, pass_app
from .errors import CommandFailed
from .fast.printing import BLOCK, block_lines
from .output import cell, echo_json, echo_records, echo_table

if TYPE_CHECKING:
    from vault.service.records import AccessRecord, AuditEntry

T = TypeVar("T")

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
FULL_EVERY_DAYS = 7
FULL_EVERY_EVENTS = 100_000


def full_verify_due(full: tuple[int, int] | None, head_seq: int, now: dt.datetime) -> bool:
    """Whether the periodic full verify is due: never run here, or too long or too many events ago."""
    if full is None:
        return True
    at, seq = full
    return now.timestamp() - at > FULL_EVERY_DAYS * 86_400 or head_seq - seq > FULL_EVERY_EVENTS


@click.group("audit")
def audit() -> None:
    """Verify, read and export the access log.

    \b
    Example:
      credvault audit verify
      credvault audit log --client acme --since 7d
    """


@audit.command("verify")
@click.option(
    "--full",
    is_flag=True,
    help="Verify from the first event, not from the last verified head (done anyway every "
    f"{FULL_EVERY_DAYS} days or {FULL_EVERY_EVENTS} events).",
)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file holding a checkpoint line printed by `audit checkpoint` (repeatable).",
)
@JSON
@pass_app
def verify(app: AppContext, full: bool, checkpoints: tuple[Path, ...], as_json: bool) -> None:
    """Recompute the hash chain and every signature; name the first bad event.

    \b
    Example:
      credvault audit verify
      credvault audit verify --full --checkpoint head-2026-11-01.txt
    """
    from vault.service.config import AuditMemory

    from .agentvault import AgentVault

    texts = [line for path in checkpoints for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    now = dt.datetime.now(dt.UTC)
    vault: Any = app.session_vault()
    served = app.server_url() is not None  # through the server: an admin's the whole chain, else one's own events
    local = not served and not isinstance(vault, AgentVault)  # the agent verifies in its own inspecting()
    with vault.store.inspecting() if local else contextlib.nullcontext():  # foreign objects reported, not refused
        memory = AuditMemory.load(vault.vault_id().hex())
        due = memory.verified is not None and full_verify_due(memory.full, vault.audit.head()[0], now)
        periodic = not full and due
        full = full or periodic or memory.verified is None
        since = None if full else memory.verified
        result = vault.audit.verify(since=since, known_head=memory.seen, checkpoints=texts)
    whole = not served or vault.audit.whole_chain
    if as_json:
        echo_json({**result.to_json(), "whole_chain": whole} if served else result.to_json())
    if not result.ok:
        raise CommandFailed(
            f"the audit log does not verify: {result.problem}",
            hint="the database was altered outside credvault; restore from a backup and investigate",
        )
    head = (result.head_seq, bytes.fromhex(result.head_hash))
    memory.see(head)
    if whole:
        memory.verified = head
        if full:
            memory.full = (int(now.timestamp()), result.head_seq)
    memory.save()
    if as_json:
        return
    if not whole:  # an engineer's through the server (vault/service/remote_chain.py)
        click.echo(
            f"Your {result.checked} event(s) and the chain's head at event {result.head_seq} verify; the whole "
            "chain is verified by an admin (`credvault audit verify` as an admin)."
        )
        return
    scope = "all" if full or result.first_seq == 1 else f"events {result.first_seq}-{result.head_seq}"
    if result.checked == 0 and not full:
        scope = "none since the head verified last"  # not "events 11-10"
    if periodic:
        scope += f"; the periodic full verify, due every {FULL_EVERY_DAYS} days or {FULL_EVERY_EVENTS} events"
    click.echo(
        f"The audit log verifies: {result.checked} new event(s) checked ({scope}), head at event {result.head_seq}."
    )


@audit.command("checkpoint")
@pass_app
def checkpoint(app: AppContext) -> None:
    """Print a signed checkpoint of the log's head, to keep somewhere else.

    \b
    Example:
      credvault audit checkpoint >> ~/Documents/credvault-checkpoints.txt
    """
    click.echo(app.session_vault().audit.checkpoint())


def _since(since: str | None) -> dt.datetime | None:
    """An ISO time as given, or a duration read as "that long ago" (7d, 12h)."""
    from vault.errors import InvalidInput
    from vault.service.validation import duration, point_in_time

    if not since:
        return None
    now = dt.datetime.now(dt.UTC)
    try:
        return now - duration(since)
    except InvalidInput:
        return point_in_time(since, now)


@audit.command("log")
@click.option("--client", metavar="SLUG", help="Only events about this client.")
@click.option("--engineer", metavar="NAME", help="Only events by this engineer.")
@click.option("--since", metavar="TIME", help="An ISO time or a duration ago (7d, 12h).")
@click.option("--limit", type=click.IntRange(1), help="Only the newest N events.")
@JSON
@pass_app
def log(
    app: AppContext, client: str | None, engineer: str | None, since: str | None, limit: int | None, as_json: bool
) -> None:
    """Show audit events, with details where you may read them.

    \b
    Example:
      credvault audit log --engineer bob --since 30d
    """
    vault = app.session_vault()
    if limit is None and not _agent(vault):  # the whole log: streamed, printed as it is read
        entries: Iterable[AuditEntry] = vault.audit.log(
            client=client, engineer=engineer, since=_since(since), stream=True
        )
    else:
        entries = vault.audit.log(client=client, engineer=engineer, since=_since(since), limit=limit)
    if as_json:
        _stream_json(e.to_json() for e in entries)
        return
    _stream_table(
        ["seq", "time", "engineer", "action", "client/secret", "details"],
        (
            (
                e.seq,
                e.at,
                e.engineer,
                e.action,
                f"{e.client}/{e.secret}" if e.secret else e.client,
                _details(e.details, e.readable),
            )
            for e in entries
        ),
    )


def _agent(vault: object) -> bool:
    """Whether ``vault`` is the running agent's (cli/agentvault.py): it answers ``audit log``
    in one response, not as a stream."""
    from .agentvault import AgentVault

    return isinstance(vault, AgentVault)


def _first(items: Iterable[T]) -> tuple[list[T], Iterator[T]]:
    """The first item of ``items`` (none if it is empty) and an iterator of the rest: the
    stream's checks and errors come out before anything is printed."""
    it = iter(items)
    return list(itertools.islice(it, 1)), it


def _stream_json(records: Iterable[dict[str, Any]]) -> None:
    """``echo_json`` of a list, printed record by record (the same text, never the whole list)."""
    first, rest = _first(records)
    if not first:
        click.echo("[]")
        return
    for i, record in enumerate(itertools.chain(first, rest)):
        text = textwrap.indent(json.dumps(record, indent=2, ensure_ascii=True), "  ")
        click.echo(("[\n" if i == 0 else ",\n") + text, nl=False)
    click.echo("\n]")


def _stream_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """``echo_table``, printed a block of ``BLOCK`` rows at a time by ``block_lines`` (the
    fast path's printer too, cli/fast/printing.py): the same text both ways."""
    first, rest = _first(block_lines(headers, ([cell(value) for value in row] for row in rows), BLOCK))
    if not first:
        click.echo("(none)")
        return
    for line in itertools.chain(first, rest):
        click.echo(line)


def _details(details: dict[str, object] | None, readable: bool) -> str:
    if not readable:
        return "(encrypted: no key)"
    if not details:
        return ""
    return ", ".join(f"{k}={v}" for k, v in sorted(details.items()) if v not in (None, ""))


@audit.command("export")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True, help="Output format."
)
@click.option("--client", metavar="SLUG", help="Only events about this client.")
@click.option("--engineer", metavar="NAME", help="Only events by this engineer.")
@click.option("--since", metavar="TIME", help="An ISO time or a duration ago (7d, 12h).")
@pass_app
def export(app: AppContext, fmt: str, client: str | None, engineer: str | None, since: str | None) -> None:
    """Write the log as JSON lines, one event per line, for a SIEM.

    \b
    Example:
      credvault audit export --format jsonl --since 1d > siem.jsonl
    """
    for line in app.session_vault().audit.export(client=client, engineer=engineer, since=_since(since)):
        click.echo(line)


@click.group("report")
def report() -> None:
    """Reports for admins: what an engineer revealed, and what is at risk.

    \b
    Example:
      credvault report access bob
      credvault report at-risk bob
    """


@report.command("access")
@click.argument("engineer")
@JSON
@pass_app
def access(app: AppContext, engineer: str, as_json: bool) -> None:
    """Every secret ENGINEER revealed: when, why, and whether it changed since.

    \b
    Example:
      credvault report access bob --json
    """
    records = app.session_vault().reports.access(engineer, stream=True)
    if as_json:
        _stream_json(r.to_json() for r in records)
        return
    _stream_table(["when", "secret", "field", "version", "reason", "changed since"], _access_rows(records))


@report.command("at-risk")
@click.argument("engineer")
@JSON
@pass_app
def at_risk(app: AppContext, engineer: str, as_json: bool) -> None:
    """The values ENGINEER saw that have not changed since: change them on the equipment.

    \b
    Example:
      credvault report at-risk bob
    """
    rows = app.session_vault().reports.at_risk(engineer)
    _echo_access(rows, as_json)


def _echo_access(rows: Sequence[AccessRecord], as_json: bool) -> None:
    if as_json:
        echo_records(rows)
        return
    echo_table(["when", "secret", "field", "version", "reason", "changed since"], list(_access_rows(rows)))


def _access_rows(records: Iterable[AccessRecord]) -> Iterator[tuple[object, ...]]:
    for r in records:
        yield (r.at, f"{r.client}/{r.secret}", r.field, r.version, r.reason, r.changed_since)


COMMANDS = [audit, report]
