"""`credvault demo`: a short, real workflow of the library behind the CLI.

It creates a temporary SQLite vault with the default Argon2id parameters, plays an
admin and an engineer (each with their own in-memory session), adds a client and
three secrets, lets the engineer check one password out with a reason and check it in
with a new value, verifies the signed access log, and then reads the raw bytes
of the database file and its write-ahead log to show that none of the plaintext is
in them. Every value is a demo value, which is why this command may print one.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.service import passwords

from .errors import CommandFailed

if TYPE_CHECKING:
    from vault import Vault

ADMIN, ENGINEER = "dana", "eli"
CLIENT, CLIENT_NAME = "northwind", "Northwind Traders (demo) Ltd"
DB_NAME = "demo-vault.db"


@dataclass(frozen=True)
class DemoSecret:
    name: str
    kind: str
    username: str
    password: str
    host: str | None = None
    url: str | None = None
    note: str | None = None

    @property
    def ref(self) -> str:
        return f"{CLIENT}/{self.name}"


def _secrets() -> list[DemoSecret]:
    return [
        DemoSecret(
            "core-fw01-admin",
            "equipment",
            "nwfw-operator",
            passwords.generate_password(),
            host="10.20.30.1",
            note="Rack B, top shelf; console cable in the drawer",
        ),
        DemoSecret(
            "backup-portal",
            "service",
            "svc-backup-nw",
            "Demo-Backup-Passw0rd!",
            url="https://backup.northwind-demo.example/login",
        ),
        DemoSecret(
            "lobby-printer",
            "other",
            "lobbyprint-op",
            passwords.generate_password(16),
            host="printer-lobby.nw-demo.internal",
            note="Toner code 7781-DEMO",
        ),
    ]


def _plaintexts(secrets: list[DemoSecret]) -> list[tuple[str, str, bool]]:
    """(label, value, is_password) for everything that must not be stored in clear."""
    out = [("client slug", CLIENT, False), ("client name", CLIENT_NAME, False)]
    for s in secrets:
        out.append((f"{s.name}: name", s.name, False))
        out.append((f"{s.name}: username", s.username, False))
        out += [
            (f"{s.name}: {label}", value, False)
            for label, value in (("host", s.host), ("url", s.url), ("note", s.note))
            if value
        ]
        out.append((f"{s.name}: password", s.password, True))
    unique: dict[str, tuple[str, str, bool]] = {}
    for label, value, is_password in out:  # a secret listed twice (a new version) adds only its new values
        unique.setdefault(
            value, (label + (" (new)" if any(label == u[0] for u in unique.values()) else ""), value, is_password)
        )
    return list(unique.values())


def _step(number: int, text: str) -> None:
    click.echo(f"{number}. {text}")


def _workflow(url: str, secrets: list[DemoSecret], opened: list[Vault]) -> None:
    from vault import Vault
    from vault.service.sessions import MemorySessionStore

    admin_pass, engineer_pass = "demo admin passphrase", "demo engineer passphrase"
    admin, result = Vault.create(url, admin=ADMIN, passphrase=admin_pass, sessions=MemorySessionStore())
    opened.append(admin)
    admin.engineers.unlock(ADMIN, admin_pass)
    _step(1, f"init: admin {ADMIN} (fingerprint {result.admin_fingerprint}), org fingerprint {result.org_fingerprint}")

    code = admin.engineers.invite(ENGINEER)
    engineer = Vault.open(url, engineer=ENGINEER, sessions=MemorySessionStore())
    opened.append(engineer)
    fingerprint = engineer.engineers.enroll(ENGINEER, code, engineer_pass)
    if admin.engineers.pending_fingerprint(ENGINEER) != fingerprint:
        raise CommandFailed(
            "the enrolled fingerprint differs from the one the admin sees", hint="this is a bug: please report it"
        )
    admin.engineers.confirm(ENGINEER, fingerprint)
    engineer.engineers.unlock(ENGINEER, engineer_pass)
    _step(2, f"invite {ENGINEER} -> enrol (fingerprint {fingerprint}) -> admin compares it and confirms")

    admin.clients.add(CLIENT, CLIENT_NAME)
    for s in secrets:
        admin.secrets.add(
            s.ref, password=s.password, kind=s.kind, username=s.username, url=s.url, host=s.host, note=s.note
        )
    _step(
        3,
        f"admin adds client {CLIENT} ({CLIENT_NAME}) and {len(secrets)} secrets: " + ", ".join(s.name for s in secrets),
    )

    admin.grants.grant(ENGINEER, CLIENT, until=dt.datetime.now(dt.UTC) + dt.timedelta(hours=8))
    _step(4, f"admin grants {ENGINEER} access to {CLIENT} for 8 hours")

    shown = secrets[0]
    revealed = engineer.checkouts.checkout(shown.ref, reason="T-1001 demo: reset the VPN")
    if revealed.value != shown.password:
        raise CommandFailed("the revealed password differs from the one stored", hint="this is a bug: please report it")
    _step(5, f"{ENGINEER} checks out {shown.ref} with reason 'T-1001': {revealed.value}   (a demo value)")
    new_password = passwords.generate_password()
    engineer.checkouts.checkin(shown.ref, new_password=new_password)
    secrets.append(DemoSecret(shown.name, shown.kind, shown.username, new_password, shown.host, shown.url, shown.note))
    version = engineer.secrets.show(shown.ref).version
    _step(6, f"{ENGINEER} checks it in and stores a new generated password (version {version})")

    report = admin.reports.access(ENGINEER)
    verified = admin.audit.verify()
    if not verified.ok:
        raise CommandFailed(
            f"the audit log does not verify: {verified.problem}", hint="this is a bug: please report it"
        )
    _step(
        7,
        f"the access log: {verified.checked} signed, hash-chained events verify; "
        f"{ENGINEER} revealed {len(report)} value(s), changed since: {', '.join(str(r.changed_since) for r in report)}",
    )


def _scan(db_file: Path, secrets: list[DemoSecret]) -> list[str]:
    """Labels of the plaintexts found in the database file or its WAL (empty: none)."""
    files = [path for path in (db_file, Path(f"{db_file}-wal")) if path.exists()]
    raw = b"".join(path.read_bytes() for path in files)
    sizes = ", ".join(f"{path.name} ({path.stat().st_size:,} bytes)" for path in files)
    checks = _plaintexts(secrets)
    _step(8, f"byte scan of {sizes} for {len(checks)} plaintexts:")
    found = []
    for label, value, is_password in checks:
        hit = value.encode("utf-8") in raw
        shown = "(password)" if is_password else repr(value)
        click.echo(f"   {'FOUND' if hit else 'absent':6}  {label:28} {shown}")
        if hit:
            found.append(label)
    return found


@click.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Keep the demo vault in DIR instead of deleting it.",
)
def demo(keep: Path | None) -> None:
    """Run a short real workflow on a temporary vault and scan its file for plaintext.

    Uses the library directly (the same code the other commands call), with the
    default Argon2id parameters. Exits 1 if any plaintext is found in the database.

    \b
    Example:
      credvault demo
      credvault demo --keep ./demo-vault
    """
    started = time.monotonic()
    workdir = keep if keep is not None else Path(tempfile.mkdtemp(prefix="credvault-demo-"))
    db_file = workdir / DB_NAME
    if keep is not None:
        if db_file.exists():
            raise CommandFailed(f"{db_file} already exists", hint="pass an empty or new directory to --keep")
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    secrets = _secrets()
    click.echo(f"credvault demo: a temporary SQLite vault at {db_file}")
    opened: list[Vault] = []
    try:
        _workflow(f"sqlite:///{db_file}", secrets, opened)
        found = _scan(db_file, secrets)  # read while the vault is open, so that the WAL is still there
    finally:
        for vault in opened:
            vault.close()
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    if found:
        raise CommandFailed(
            "plaintext found in the database files: " + ", ".join(found), hint="this is a bug: please report it"
        )
    click.echo(f"Result: no plaintext found in the database or its WAL ({elapsed:.1f} s).")
    if keep is not None:
        click.echo(f"The demo database is kept in {workdir} for you to inspect.")


COMMANDS = [demo]
