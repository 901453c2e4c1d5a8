"""Secrets: secret add/list/search/show/update/history.

A password is never taken from the command line and never printed here: it comes
from a hidden prompt (typed twice), from standard input (``--password-stdin``), or is
generated (``--generate``). Revealing a password to a person is the checkout
command's job; these commands show metadata only.

Custom fields: ``--field KEY=VALUE`` is sensitive when its name looks like a secret's
(pass, secret, key, token, seed, otp, mfa, pin, code, recovery, enable, ...), else
shown with the metadata; ``--sensitive-field`` and ``--public-field`` say so explicitly.
A sensitive field is revealed only by ``credvault checkout REF --field KEY`` (logged).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from vault.service import passwords

from .context import AppContext, pass_app, strip_newline
from .output import echo_json, echo_pairs, echo_records, echo_table

F = TypeVar("F", bound=Callable[..., Any])
KINDS = ("equipment", "service", "other")
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _parse_fields(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter("write KEY=VALUE, e.g. --field vlan=20")
        fields[key] = value
    return fields


def _parse_sensitive(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str | None]:
    """KEY=VALUE, or KEY alone: its value is then asked for at a hidden prompt (not in argv)."""
    fields: dict[str, str | None] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise click.BadParameter("write KEY or KEY=VALUE, e.g. --sensitive-field mfa-seed")
        fields[key] = value if sep else None
    return fields


def _prompted(fields: dict[str, str | None]) -> dict[str, str]:
    """The sensitive fields given without a value, asked for (hidden, twice)."""
    return {
        key: value
        if value is not None
        else str(click.prompt(f"Value of {key}", hide_input=True, confirmation_prompt=True, err=True))
        for key, value in fields.items()
    }


def metadata_options(fn: F) -> F:
    """The options shared by `secret add` and `secret update`."""
    decorators = [
        click.option("--username", metavar="USER", help="Login name."),
        click.option("--url", metavar="URL", help="Web address of a service (not with --host)."),
        click.option("--host", metavar="HOST", help="Host name or address of a device (not with --url)."),
        click.option("--note", metavar="TEXT", help="A free-text note."),
        click.option(
            "--field",
            "fields",
            multiple=True,
            callback=_parse_fields,
            metavar="KEY=VALUE",
            help="A custom field, sensitive if its name looks like a secret's (e.g. mfa-seed); repeat for more.",
        ),
        click.option(
            "--sensitive-field",
            "sensitive_fields",
            multiple=True,
            callback=_parse_sensitive,
            metavar="KEY[=VALUE]",
            help="A custom field revealed only by checkout (logged); KEY alone asks for the value. Repeat for more.",
        ),
        click.option(
            "--public-field",
            "public_fields",
            multiple=True,
            callback=_parse_fields,
            metavar="KEY=VALUE",
            help="A custom field shown with the metadata, whatever its name; repeat for more.",
        ),
        click.option(
            "--password-stdin",
            is_flag=True,
            help="Read the password from standard input (one trailing newline is removed).",
        ),
        click.option("--generate", is_flag=True, help="Generate a random password (it is stored, not shown)."),
        click.option(
            "--length",
            type=int,
            metavar="N",
            help=f"Length of a generated password (default {passwords.DEFAULT_LENGTH}).",
        ),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def _password_from_options(
    password_stdin: bool, generate: bool, length: int | None, *, prompt: bool
) -> tuple[str | None, str]:
    """(password or None, how it was obtained) from the password options."""
    if password_stdin and generate:
        raise click.UsageError("give --password-stdin or --generate, not both")
    if length is not None and not generate:
        raise click.UsageError("--length only goes with --generate")
    if generate:
        return passwords.generate_password(passwords.DEFAULT_LENGTH if length is None else length), "generated"
    if password_stdin:
        return strip_newline(sys.stdin.read()), "stdin"
    if prompt:
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)), "prompt"
    return None, ""


def _generated_note(how: str, password: str | None) -> None:
    if how == "generated" and password is not None:
        click.echo(f"A random {len(password)}-character password was generated and stored; it is not shown.")


@click.group()
def secret() -> None:
    """Add, import, list, search, show and update a client's secrets.

    \b
    Example:
      credvault secret add acme/fw01-admin --kind equipment --host 10.0.0.1 --username admin
      credvault secret list acme
    """


@secret.command("add")
@click.argument("ref", metavar="CLIENT/NAME")
@click.option("--kind", type=click.Choice(KINDS), required=True, help="What the secret is for.")
@metadata_options
@pass_app
def add_secret(
    app: AppContext,
    ref: str,
    kind: str,
    username: str | None,
    url: str | None,
    host: str | None,
    note: str | None,
    fields: dict[str, str],
    sensitive_fields: dict[str, str | None],
    public_fields: dict[str, str],
    password_stdin: bool,
    generate: bool,
    length: int | None,
) -> None:
    """Add a secret; the password is asked for twice unless --password-stdin or --generate.

    \b
    Example:
      credvault secret add acme/fw01-admin --kind equipment --host 10.0.0.1 --username admin --generate
      printf '%s' "$PW" | credvault secret add acme/m365 --kind service --url https://portal.office.com --password-stdin
      credvault secret add acme/sw01 --kind equipment --generate --field vlan=20 --sensitive-field enable
    """
    password, how = _password_from_options(password_stdin, generate, length, prompt=True)
    assert password is not None
    info = app.session_vault().secrets.add(
        ref,
        password=password,
        kind=kind,
        username=username,
        url=url,
        host=host,
        note=note,
        fields=fields,
        sensitive_fields=_prompted(sensitive_fields) or None,
        public_fields=public_fields or None,
    )
    click.echo(f"Added {info.ref} ({info.kind}, version {info.version}).")
    _generated_note(how, password)


@secret.command("update")
@click.argument("ref", metavar="CLIENT/NAME")
@click.option("--kind", type=click.Choice(KINDS), help="Change what the secret is for.")
@metadata_options
@click.option("--prompt-password", is_flag=True, help="Ask for a new password (hidden, twice).")
@pass_app
def update_secret(
    app: AppContext,
    ref: str,
    kind: str | None,
    username: str | None,
    url: str | None,
    host: str | None,
    note: str | None,
    fields: dict[str, str],
    sensitive_fields: dict[str, str | None],
    public_fields: dict[str, str],
    password_stdin: bool,
    generate: bool,
    length: int | None,
    prompt_password: bool,
) -> None:
    """Store a new version of a secret; what you do not pass is kept.

    An empty value (e.g. --host "") clears that field. The password changes only
    with --prompt-password, --password-stdin or --generate.

    \b
    Example:
      credvault secret update acme/fw01-admin --generate
      credvault secret update acme/fw01-admin --host 10.0.0.2 --note "moved to rack B"
    """
    if prompt_password and (password_stdin or generate):
        raise click.UsageError("give one of --prompt-password, --password-stdin or --generate")
    password, how = _password_from_options(password_stdin, generate, length, prompt=prompt_password)
    changes: dict[str, Any] = {
        name: value or None
        for name, value in (("username", username), ("url", url), ("host", host), ("note", note))
        if value is not None
    }
    info = app.session_vault().secrets.update(
        ref,
        password=password,
        kind=kind,
        fields=fields or None,
        sensitive_fields=_prompted(sensitive_fields) or None,
        public_fields=public_fields or None,
        **changes,
    )
    click.echo(f"Updated {info.ref}: now version {info.version}.")
    _generated_note(how, password)


@secret.command("list")
@click.argument("client_slug", metavar="[CLIENT]", required=False)
@JSON
@pass_app
def list_secrets(app: AppContext, client_slug: str | None, as_json: bool) -> None:
    """List the secrets you may see (names and kinds, never passwords).

    \b
    Example:
      credvault secret list acme --json
    """
    rows = app.session_vault().secrets.list(client_slug)
    if as_json:
        echo_records(rows)
        return
    echo_table(
        ["secret", "kind", "username", "version", "updated"],
        [(s.ref, s.kind, s.username, s.version, s.updated_at) for s in rows],
    )


@secret.command("search")
@click.argument("query")
@click.option("--client", "client_slug", metavar="SLUG", help="Search this client's secrets only.")
@JSON
@pass_app
def search_secrets(app: AppContext, query: str, client_slug: str | None, as_json: bool) -> None:
    """Find secrets by name, username, host, URL, note or public field (never a password).

    Searches the secrets `secret list` shows you, case-insensitively, on this machine:
    the query is sent to no server and written to no audit log or database (the search is
    on record as the listing it reads). Sensitive fields are not searched.

    \b
    Example:
      credvault secret search 10.0.0.1
      credvault secret search xero --client acme --json
    """
    rows = app.session_vault().secrets.search(query, client_slug)
    if as_json:
        echo_records(rows)
        return
    echo_table(
        ["client", "secret", "kind", "matched"],
        [(s.client, s.name, s.kind, ", ".join(s.matched)) for s in rows],
    )


@secret.command("show")
@click.argument("ref", metavar="CLIENT/NAME")
@JSON
@pass_app
def show_secret(app: AppContext, ref: str, as_json: bool) -> None:
    """Show a secret's metadata (never its password nor its sensitive fields).

    Sensitive custom fields are listed by name; `credvault checkout REF --field NAME`
    reveals one (logged).

    \b
    Example:
      credvault secret show acme/fw01-admin
    """
    info = app.session_vault().secrets.show(ref)
    if as_json:
        echo_json(info.to_json())
        return
    pairs: list[tuple[str, object]] = [
        ("secret", info.ref),
        ("kind", info.kind),
        ("version", info.version),
        ("username", info.username),
        ("url", info.url),
        ("host", info.host),
        ("note", info.note),
    ]
    pairs += [(f"field {key}", value) for key, value in sorted(info.fields.items())]
    pairs += [
        (f"field {key}", f"(sensitive: `credvault checkout {info.ref} --field {key}`)") for key in info.sensitive_fields
    ]
    pairs += [("created", info.created_at), ("updated", info.updated_at)]
    echo_pairs(pairs)


@secret.command("history")
@click.argument("ref", metavar="CLIENT/NAME")
@JSON
@pass_app
def history(app: AppContext, ref: str, as_json: bool) -> None:
    """List a secret's versions: each new value is a new version with a new data key.

    \b
    Example:
      credvault secret history acme/fw01-admin
    """
    rows = app.session_vault().secrets.history(ref)
    if as_json:
        echo_records(rows)
        return
    echo_table(
        ["version", "created", "by", "key version", "current"],
        [(v.version, v.created_at, v.created_by, v.key_version, v.current) for v in rows],
    )


COMMANDS = [secret]
