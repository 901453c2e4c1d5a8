"""Answering a parsed command line through the engineer's agent, printing what the
click command prints.

Each ``serve_*`` function mirrors one click command (named in its docstring): the
same checks in the same order, one agent request, the same output. Each returns the
exit status, or None when no agent of the selected engineer runs on the selected
database: the click CLI then does the work in-process. Standard library only (and
``vault.errors``, ``vault.service.agentclient``/``config``/``passwords``, which are).
"""

from __future__ import annotations

import sys

from vault import errors
from vault.service import agentclient, config

from .parse import Order
from .printing import (
    SHOW_WARNING,
    USAGE_HINT,
    Time,
    block_lines,
    cell,
    echo,
    echo_json,
    echo_pairs,
    echo_table,
    printable,
    report,
    shown_value,
    when,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any


class NoAgent(Exception):
    """No agent of the selected engineer answers: the click CLI does the work."""


class Served:
    """One order and the agent it goes to."""

    def __init__(self, order: Order) -> None:
        self.order = order
        name = config.resolve_engineer(_text(order.as_engineer))
        if not name:
            raise NoAgent()
        try:
            self.path = agentclient.socket_path(config.resolve_target(_text(order.db), _text(order.server)), name)
        except errors.ConfigurationError:
            raise NoAgent() from None  # no usable private directory: no agent can be running there

    def ask(self, op: str, **values: object) -> dict[str, Any]:
        try:
            return agentclient.request(self.path, {"op": op, **values})
        except agentclient.AgentAbsent:
            raise NoAgent() from None
        except errors.InvalidInput as error:
            if agentclient.unknown_request(error):  # an agent of an earlier release: click does it
                raise NoAgent() from None
            raise

    def ensure_running(self) -> None:
        """Before reading standard input: once read, it cannot be handed to click."""
        self.ask("ping")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def serve(order: Order) -> int | None:
    """Run ``order`` through the agent: the exit status, or None if no agent runs."""
    try:
        served = Served(order)
        SERVERS[order.words](served)
    except NoAgent:
        return None
    except errors.ConfigurationError:
        return None  # the click CLI says it with its full context
    except errors.VaultError as error:
        report(str(error), error.hint or (USAGE_HINT if isinstance(error, errors.InvalidInput) else ""))
        return 1
    except UnicodeDecodeError:  # as vault.cli.errors.reported_errors
        report("the input is not valid UTF-8 text", "give UTF-8 text on standard input and in files")
        return 1
    return 0


def whoami(served: Served) -> None:
    """``vault.cli.engineers.whoami``."""
    info = served.ask("whoami")["result"]
    if served.order.as_json:
        echo_json(info)
        return
    echo_pairs(
        [
            ("engineer", info["engineer"]),
            ("role", info["role"]),
            ("session until", Time(info["expires_at"])),
            ("vault", info["vault_id"]),
        ]
    )


def status(served: Served) -> None:
    """``vault.cli.keys.status`` (an admin's warnings)."""
    report = served.ask("status")["result"]
    if served.order.as_json:
        echo_json(report)
        return
    echo(f"{report['clients']} client(s), {report['secrets']} secret(s), {report['engineers']} engineer(s).")
    for warning in report["warnings"]:
        echo(printable(f"warning: {warning}"))
    for ref in report["must_change"]:
        echo(printable(f"must change: {ref}"))
    if not report["warnings"]:
        echo("No warnings.")


def client_list(served: Served) -> None:
    """``vault.cli.clients.list_clients``."""
    rows = served.ask("client-list")["result"]
    if served.order.as_json:
        echo_json(rows)
        return
    echo_table(
        ["slug", "name", "secrets", "key version", "created"],
        [(c["slug"], c["name"], c["secrets"], c["key_version"], Time(c["created_at"])) for c in rows],
    )


def secret_list(served: Served) -> None:
    """``vault.cli.secrets.list_secrets``."""
    rows = served.ask("secret-list", client=served.order.client)["result"]
    if served.order.as_json:
        echo_json(rows)
        return
    echo_table(
        ["secret", "kind", "username", "version", "updated"],
        [(f"{s['client']}/{s['name']}", s["kind"], s["username"], s["version"], Time(s["updated_at"])) for s in rows],
    )


def secret_show(served: Served) -> None:
    """``vault.cli.secrets.show_secret``."""
    info = served.ask("secret-show", ref=served.order.ref)["result"]
    if served.order.as_json:
        echo_json(info)
        return
    ref = f"{info['client']}/{info['name']}"
    pairs: list[tuple[str, object]] = [
        ("secret", ref),
        ("kind", info["kind"]),
        ("version", info["version"]),
        ("username", info["username"]),
        ("url", info["url"]),
        ("host", info["host"]),
        ("note", info["note"]),
    ]
    pairs += [(f"field {key}", value) for key, value in sorted(info["fields"].items())]
    hidden = info["sensitive_fields"]
    pairs += [(f"field {key}", f"(sensitive: `credvault checkout {ref} --field {key}`)") for key in hidden]
    pairs += [("created", Time(info["created_at"])), ("updated", Time(info["updated_at"]))]
    echo_pairs(pairs)


def audit_log(served: Served) -> None:
    """``vault.cli.audit.log`` (without --since, which the click command reads)."""
    order = served.order
    entries = served.ask("audit-log", client=order.client, engineer=order.engineer, limit=order.limit)["result"]
    if order.as_json:
        echo_json(entries)
        return
    rows = (
        [
            cell(value)
            for value in (
                e["seq"],
                Time(e["at"]),
                e["engineer"],
                e["action"],
                f"{e['client']}/{e['secret']}" if e["secret"] else e["client"],
                _details(e["details"], e["readable"]),
            )
        ]
        for e in entries
    )
    lines = list(block_lines(["seq", "time", "engineer", "action", "client/secret", "details"], rows))
    for line in lines or ["(none)"]:  # as vault.cli.audit._stream_table
        echo(line)


def _details(details: dict[str, object] | None, readable: bool) -> str:  # as vault.cli.audit._details
    if not readable:
        return "(encrypted: no key)"
    if not details:
        return ""
    return ", ".join(f"{k}={v}" for k, v in sorted(details.items()) if v not in (None, ""))


def checkout(served: Served) -> None:
    """``vault.cli.access.checkout``; the clipboard copy happens here, in the CLI process."""
    order = served.order
    board = None
    if not (order.show or order.as_json):
        from .. import clipboard  # stdlib only; the clearer is a detached process

        board = clipboard.find()
        if board is None:
            raise NoAgent()  # the click command says there is no clipboard
    message = {"ref": order.ref, "reason": order.reason, "field": order.field, "version": order.version}
    answer = served.ask("checkout", **message, hold_for=order.hold_for or None)
    expires = _text(answer.get("expires_at"))
    if order.as_json:
        fields = ("ref", "field", "version", "value", "expires_at", "must_change")
        echo_json({k: answer.get(k) for k in fields})
        return
    if order.show:
        value, altered = shown_value(str(answer["value"]))
        echo(value)
        if altered:
            echo(f"warning: {SHOW_WARNING}", err=True)
    else:
        from .. import clipboard

        assert board is not None
        clipboard.copy_with_clear(board, str(answer["value"]), int(str(order.clear_after)))
        echo(
            f"Copied the {order.field} of {order.ref} (version {answer['version']}) to the clipboard; "
            f"it is cleared in {order.clear_after} s.",
            err=True,
        )
    if expires is not None:
        echo(f"Checked out until {when(expires)}; run `credvault checkin {order.ref}` when done.", err=True)
    if answer.get("must_change") is True:
        echo("This client rotates after checkout: store a new value at check-in (--generate).", err=True)


def checkin(served: Served) -> None:
    """``vault.cli.access.checkin`` (without --break, which the click command does)."""
    order = served.order
    new_password = None
    if order.new_password_stdin:
        served.ensure_running()
        new_password = _strip_newline(sys.stdin.read())
    answer = served.ask(
        "checkin", ref=order.ref, new_password=new_password, generate=order.generate, length=order.length
    )
    stored = " and stored a new password" if (new_password is not None or order.generate) else ""
    echo(f"Checked in {order.ref}{stored}.")
    result = answer.get("result")
    if isinstance(result, dict) and result.get("must_change") is True:
        echo("Note: this secret must still be changed (rotate-after-checkout).", err=True)


def secret_add(served: Served) -> None:
    """``vault.cli.secrets.add_secret``, with the password from standard input or
    generated here (a hidden prompt is the click command's); never from argv."""
    order = served.order
    if order.kind is None or order.password_stdin == order.generate:
        raise NoAgent()  # --kind missing, both sources (usage errors), or a prompt to make: click's
    if order.length is not None and not order.generate:
        raise NoAgent()  # click's usage error
    served.ensure_running()
    if order.generate:
        from vault.service import passwords

        length = order.length if isinstance(order.length, int) else passwords.DEFAULT_LENGTH
        password = passwords.generate_password(length)
    else:
        password = _strip_newline(sys.stdin.read())
    answer = served.ask(
        "secret-add",
        ref=order.ref,
        password=password,
        kind=order.kind,
        username=order.username,
        url=order.url,
        host=order.host,
        note=order.note,
        fields=order.fields,
        sensitive_fields=order.sensitive_fields,
        public_fields=order.public_fields,
    )
    info = answer["result"]
    echo(f"Added {info['client']}/{info['name']} ({info['kind']}, version {info['version']}).")
    if order.generate:
        echo(f"A random {len(password)}-character password was generated and stored; it is not shown.")


def checkouts(served: Served) -> None:
    """``vault.cli.access.checkouts`` (the agent's ``call`` of ``checkouts.list``)."""
    rows = served.ask("call", noun="checkouts", method="list")["result"]
    if served.order.as_json:
        echo_json(rows)
        return
    echo_table(
        ["secret", "engineer", "exclusive", "since", "until"],
        [(f"{c['client']}/{c['secret']}", c["engineer"], c["exclusive"], *_times(c)) for c in rows],
    )


def _times(checkout: dict[str, Any]) -> tuple[Time, Time]:
    return Time(checkout["started_at"]), Time(checkout["expires_at"])


def secret_history(served: Served) -> None:
    """``vault.cli.secrets.history`` (the agent's ``call`` of ``secrets.history``)."""
    rows = served.ask("call", noun="secrets", method="history", args={"ref": served.order.ref})["result"]
    if served.order.as_json:
        echo_json(rows)
        return
    echo_table(
        ["version", "created", "by", "key version", "current"],
        [(v["version"], Time(v["created_at"]), v["created_by"], v["key_version"], v["current"]) for v in rows],
    )


def _strip_newline(text: str) -> str:  # as vault.cli.context.strip_newline
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")


SERVERS = {
    ("whoami",): whoami,
    ("status",): status,
    ("client", "list"): client_list,
    ("secret", "list"): secret_list,
    ("secret", "show"): secret_show,
    ("audit", "log"): audit_log,
    ("checkout",): checkout,
    ("checkin",): checkin,
    ("secret", "add"): secret_add,
    ("checkouts",): checkouts,
    ("secret", "history"): secret_history,
}
