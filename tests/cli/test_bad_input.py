"""Bad input at the command line (issue 12, item 17).

Every command argument and option that takes text or a number is given each class of
bad input: oversized, invalid UTF-8 (as Python receives undecodable argv bytes: lone
surrogates), NUL, terminal escapes, nested JSON, and numbers out of range. Each must
end as a clear error (``credvault: error:`` and a hint, exit 1; or click's own usage
error, exit 2), never "internal error", never a traceback, with no raw control
character in what is printed.

Then the other direction: names and metadata that a writer of the database planted
with ESC, CR and BEL are shown neutralised on every output path.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_workspace import ADMIN, ENGINEER, MemoryKeyring, Snapshots, Workspace, ok
from click.testing import Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from vault.cli import fast

from vault import Vault
from vault.crypto import blobs
from vault.service import agent, agentclient

PG_URL = os.environ.get("CREDVAULT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REF = "acme/fw01-admin"
SECRET = "fw-Passw0rd-stdin"
STATE_TABLES = ("clients", "secrets", "secret_versions", "grants", "engineers", "checkouts", "purge_receipts")
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\x00", "\x9b")

TEXT = {
    "oversized": "a" * 100_000,
    "invalid-utf8": "acme\udcff\udcfe",  # what undecodable argv bytes become (surrogateescape)
    "nul": "acme\x00x",
    "escape": "acme\x1b[2J\x07\r",
}
NESTED = "[" * 3000 + "]" * 3000  # also text, so it is bad only where a name, time or duration is expected
NUMBERS = {
    "huge": "9" * 30,
    "huge-negative": "-" + "9" * 30,
    "negative": "-1",
    "zero": "0",
    "digits": "1" + "0" * 5000,  # past Python's int-from-text limit
}
DURATIONS = {
    "huge": "9" * 30 + "w",
    "digits": "1" + "0" * 5000 + "s",
    "zero": "0m",
    "negative": "-1h",
    "nested-json": NESTED,
}
TIMES = {
    "huge-duration": "9" * 30 + "d",
    "far-year": "99999-01-01",
    "nested-json": NESTED,
}

# Command lines with one slot "{}" for bad text (names, slugs, refs, reasons, free text).
TEXT_SLOTS = [
    ("client", "add", "{}", "--name", "X"),
    ("client", "add", "newco", "--name", "{}"),
    ("client", "show", "{}"),
    ("grant", "{}", "acme"),
    ("grant", ENGINEER, "{}"),
    ("grant", ENGINEER, "acme", "--reason", "{}"),
    ("revoke", "{}", "acme"),
    ("revoke", ENGINEER, "{}"),
    ("grants", "--engineer", "{}"),
    ("grants", "--client", "{}"),
    ("secret", "add", "{}", "--kind", "other", "--generate"),
    ("secret", "add", "acme/new", "--kind", "other", "--generate", "--username", "{}"),
    ("secret", "add", "acme/new", "--kind", "other", "--generate", "--url", "{}"),
    ("secret", "add", "acme/new", "--kind", "other", "--generate", "--host", "{}"),
    ("secret", "add", "acme/new", "--kind", "other", "--generate", "--note", "{}"),
    ("secret", "add", "acme/new", "--kind", "other", "--generate", "--field", "vlan={}"),
    ("secret", "add", "acme/new", "--kind", "other", "--generate", "--field", "{}=1"),
    ("secret", "show", "{}"),
    ("secret", "list", "{}"),
    ("secret", "history", "{}"),
    ("secret", "update", "{}", "--username", "u"),
    ("secret", "update", REF, "--note", "{}"),
    ("secret", "update", REF, "--field", "vlan={}"),
    ("checkout", "{}", "--reason", "r", "--show"),
    ("checkout", REF, "--reason", "{}", "--show"),
    ("checkout", REF, "--reason", "r", "--field", "{}", "--show"),
    ("checkin", "{}"),
    ("checkin", "{}", "--break"),
    ("policy", "show", "{}"),
    ("policy", "set", "{}", "--exclusive"),
    ("engineer", "invite", "{}"),
    ("engineer", "confirm", "{}", "--fingerprint", "0000"),
    ("engineer", "confirm", ENGINEER, "--fingerprint", "{}"),
    ("audit", "log", "--client", "{}"),
    ("audit", "log", "--engineer", "{}"),
    ("report", "access", "{}"),
    ("report", "at-risk", "{}"),
    ("rotate", "client", "{}"),
    ("rotate", "engineer", "{}"),
    ("rotate", "secret", "{}"),
    ("remove", "{}", "--yes"),
    ("purge", "client", "{}", "--request", "DSR-1", "--yes"),
    ("purge", "client", "acme", "--request", "{}", "--yes"),
    ("purge", "secret", "{}", "--request", "DSR-1", "--yes"),
    ("purge", "secret", REF, "--request", "{}", "--yes"),
    ("purge", "subject", "{}", "--request", "DSR-1", "--yes"),
    ("subject", "find", "{}"),
    ("--as", "{}", "client", "list"),
    ("--db", "{}", "client", "list"),
    ("engineer", "enroll", "{}", "--code", "CV1-AAAA-AAAA"),
    ("engineer", "enroll", "bob", "--code", "{}"),
    ("subject", "report", "{}", "--out", "report.json"),
    ("unlock", "{}"),
    ("--as", "{}", "unlock"),
    ("--as", "{}", "agent", "start"),
    ("--as", "{}", "lock"),  # nothing to open: the name is only echoed and hashed into paths
    ("--as", "{}", "agent", "stop"),
    ("--as", "{}", "agent", "status"),
]
NAME_SLOTS = [  # where nested JSON is bad too: a name, slug or reference is expected
    ("client", "show", "{}"),
    ("grant", ENGINEER, "{}"),
    ("secret", "show", "{}"),
    ("checkout", "{}", "--reason", "r", "--show"),
    ("engineer", "invite", "{}"),
    ("--as", "{}", "client", "list"),
]
NUMBER_SLOTS = [
    ("checkout", REF, "--reason", "r", "--show", "--version", "{}"),
    ("checkin", REF, "--generate", "--length", "{}"),
    ("secret", "update", REF, "--generate", "--length", "{}"),
    ("rotate", "secret", REF, "--length", "{}"),
    ("policy", "set", "acme", "--stale-after", "{}"),  # 0 is valid here (it turns the flag off)
    ("settings", "--retention", "{}"),
    ("settings", "--cryptoperiod", "{}"),
    ("audit", "log", "--limit", "{}"),
    ("receipts", "verify", "{}"),
]
DURATION_SLOTS = [
    ("checkout", REF, "--reason", "r", "--show", "--for", "{}"),
    ("policy", "set", "acme", "--for", "{}"),
    ("engineer", "invite", "bob", "--valid-for", "{}"),
    ("unlock", "--ttl", "{}"),
    ("agent", "start", "--ttl", "{}"),
]
TIME_SLOTS = [
    ("grant", ENGINEER, "acme", "--until", "{}"),
    ("audit", "log", "--since", "{}"),
]


def populated(ws: Workspace) -> None:
    ws.init()
    ok(ws.admin("client", "add", "acme", "--name", "Acme Ltd"))
    secret = (REF, "--kind", "equipment", "--host", "10.0.0.1", "--username", "netadmin")
    ok(ws.admin("secret", "add", *secret, "--password-stdin", input=SECRET + "\n"))
    ws.enrol()


@pytest.fixture
def ready(snapshots: Snapshots, tmp_path: Path, fake_keyring: MemoryKeyring) -> Workspace:
    return snapshots.clone(populated, tmp_path, fake_keyring)


@pytest.fixture(scope="module")
def pg_snapshots(tmp_path_factory: pytest.TempPathFactory, pg_template: str | None) -> Iterator[Snapshots]:
    """One PostgreSQL vault for this module (cloned from the migrated template): every case
    is refused, so they can share it; each checks that nothing changed."""
    if pg_template is None:
        pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
    name = f"credvault_badinput_{uuid.uuid4().hex[:12]}"
    server = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield Snapshots(tmp_path_factory, url=make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture
def ready_pg(pg_snapshots: Snapshots, tmp_path: Path, fake_keyring: MemoryKeyring) -> Workspace:
    return pg_snapshots.clone(populated, tmp_path, fake_keyring)


def _fill(slot: tuple[str, ...], value: str) -> list[str]:
    return [part.replace("{}", value) for part in slot]


def _label(slot: tuple[str, ...]) -> str:
    return " ".join(slot)


def assert_refused_cleanly(result: Result) -> None:
    """A clear error: exit 1 with error and hint lines, or click's usage error (exit 2);
    never an internal error or a traceback, and no raw control character printed."""
    shown = result.output[:300]
    assert result.exit_code in (1, 2), f"exit {result.exit_code}: {shown!r}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "internal error" not in result.output, shown
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert "credvault: error: " in result.stderr, shown
        assert "\nhint: " in result.stderr, shown
    else:
        assert "Error: " in result.stderr, shown
    for control in RAW_CONTROLS:
        assert control not in result.output, f"raw {control!r} printed"
    assert len(result.output) < 5000, "the bad input was echoed back"


def _cases(slots: list[tuple[str, ...]], values: dict[str, str]) -> list[object]:
    return [
        pytest.param(slot, value, id=f"{_label(slot)[:60]}-{kind}")
        for slot in slots
        for kind, value in values.items()
        if not (kind == "zero" and "--stale-after" in slot)
    ]


@pytest.mark.parametrize(
    ("slot", "value"),
    _cases(TEXT_SLOTS, TEXT)
    + _cases(NAME_SLOTS, {"nested-json": NESTED})
    + _cases(NUMBER_SLOTS, NUMBERS)
    + _cases(DURATION_SLOTS, DURATIONS)
    + _cases(TIME_SLOTS, TIMES),
)
def test_bad_input_is_a_clear_error(ready: Workspace, slot: tuple[str, ...], value: str) -> None:
    before = _state(ready)
    assert_refused_cleanly(ready.admin(*_fill(slot, value)))
    assert _state(ready) == before, "a refused command changed the vault"


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("slot", "value"),
    _cases(TEXT_SLOTS, {k: TEXT[k] for k in ("nul", "invalid-utf8")}) + _cases(NUMBER_SLOTS, {"huge": NUMBERS["huge"]}),
)
def test_bad_input_is_a_clear_error_on_postgresql(ready_pg: Workspace, slot: tuple[str, ...], value: str) -> None:
    """PostgreSQL refuses NUL in text and integers past 64 bits itself (DataError): the
    vault must refuse them first, with the same clear error as on SQLite."""
    before = _state(ready_pg)
    assert_refused_cleanly(ready_pg.admin(*_fill(slot, value)))
    assert _state(ready_pg) == before, "a refused command changed the vault"


@pytest.mark.parametrize(
    "password",
    [b"a" * 100_000, b"pw\xff\xfe-not-utf8", b"pw\x00nul"],
    ids=["oversized", "invalid-utf8", "nul"],
)
def test_a_bad_password_on_standard_input_is_a_clear_error(ready: Workspace, password: bytes) -> None:
    before = _state(ready)
    result = ready.admin("secret", "add", "acme/new", "--kind", "other", "--password-stdin", input=password + b"\n")
    assert_refused_cleanly(result)
    assert _state(ready) == before


def _state(ws: Workspace) -> dict[str, int]:
    """Rows per table that a command could have changed (read directly, not through the CLI)."""
    engine = create_engine(ws.url)
    try:
        with engine.connect() as conn:
            return {
                table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()) for table in STATE_TABLES
            }
    finally:
        engine.dispose()


# -- names from the database are shown neutralised ------------------------------------------------

PLANTED_NAME = "ev\x1b[2Jil\x07\r"
PLANTED_USER = "net\x1b]0;owned\x07admin\r\x9b"
PLANTED_HOLDER = "al\x1b[2Jice\x07\r"
SUBJECT = "jane.planted@example.org"


def _plant_metadata(vault: Vault, ref: str, **changes: object) -> None:
    """Rewrite the metadata of ``ref``'s current version as an insider holding the client key
    would (an engineer with a grant and write access to the database): validation is skipped."""
    with vault.store.transaction() as s:
        client, secret, _slug = vault.secrets.secret(s, ref)
        row = vault.secrets.version(s, secret, None)
        opened = vault.secrets.open(s, client, secret, row)
        metadata = json.dumps({**opened.metadata, **changes}, sort_keys=True).encode("utf-8")
        key_version = blobs.blob_key_version(row.metadata_blob)
        row.metadata_blob = blobs.encrypt_secret_field(
            opened.data_key, key_version, metadata, client.id, secret.id, row.version, "metadata"
        )


@pytest.fixture
def planted(ready: Workspace) -> Workspace:
    """acme/fw01-admin's username, a secret's name and alice's name carry ESC, BEL and CR."""
    ok(ready.admin("grant", ENGINEER, "acme"))
    ok(ready.admin("secret", "add", "acme/evil", "--kind", "other", "--generate", "--username", SUBJECT))
    ok(ready.as_engineer(ENGINEER, "checkout", REF, "--reason", "T-1", "--show"))
    vault = ready.library()
    try:
        _plant_metadata(vault, REF, username=PLANTED_USER, note="line one\nline\x1b[2J\x07 two\r")
        _plant_metadata(vault, "acme/evil", name=PLANTED_NAME)
    finally:
        vault.close()
    engine = create_engine(ready.url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE secrets SET must_change = :t"), {"t": True})
        conn.execute(text("UPDATE engineers SET name = :n WHERE name = :o"), {"n": PLANTED_HOLDER, "o": ENGINEER})
    engine.dispose()
    return ready



@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("checkin", REF, "--break"),
        ("checkout", REF, "--field", "username", "--reason", "T-2", "--show"),
        ("checkout", REF, "--field", "note", "--reason", "T-2", "--show"),
        ("secret", "show", REF),
        ("secret", "list", "acme"),
        ("checkouts",),
        ("engineer", "list"),
        ("purge", "subject", SUBJECT, "--request", "DSR-17", "--yes"),
    ],
    ids=lambda args: " ".join(args[:4]),
)
def test_names_from_the_database_are_shown_neutralised(planted: Workspace, args: tuple[str, ...]) -> None:
    result = planted.admin(*args)
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    for control in RAW_CONTROLS:
        assert control not in result.output, f"raw {control!r} printed by {' '.join(args)}: {result.output!r}"
    assert "?" in result.output  # the planted text was shown, neutralised


def test_show_warns_when_a_value_holds_control_characters(planted: Workspace) -> None:
    result = ok(planted.admin("checkout", REF, "--field", "username", "--reason", "T-3", "--show"))
    assert result.stdout.splitlines()[0] == "net?]0;owned?admin??"
    assert "--json" in result.stderr  # where the exact value can be had
    exact = json.loads(ok(planted.admin("checkout", REF, "--field", "username", "--reason", "T-3", "--json")).stdout)
    assert exact["value"] == PLANTED_USER


FAST_TEXT_SLOTS = [
    ("checkout", "{}", "--reason", "r", "--show"),
    ("checkout", REF, "--reason", "{}", "--show"),
    ("checkout", REF, "--reason", "r", "--field", "{}", "--json"),
    ("--as", "{}", "checkout", REF, "--reason", "r", "--show"),
]
FAST_CASES = (
    _cases(FAST_TEXT_SLOTS, TEXT)
    + _cases(FAST_TEXT_SLOTS[:1], {"nested-json": NESTED})
    + _cases([("checkout", REF, "--reason", "r", "--for", "{}", "--show")], DURATIONS)
    + _cases([("checkout", REF, "--reason", "r", "--version", "{}", "--show")], NUMBERS)
)


@pytest.fixture
def agent_of_admin(ready: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, agent.Agent]]:
    """The admin's agent, serving in a thread on the socket cli/fast.py looks for."""
    with tempfile.TemporaryDirectory(prefix="cvbad") as short:  # a socket path must fit in 100 bytes
        monkeypatch.setenv("CREDVAULT_HOME", short)
        vault = ready.library()
        path = Path(agentclient.socket_path(ready.url, ADMIN))
        server = agent.Agent(vault, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5), lambda: dt.datetime.now(dt.UTC))
        listener = agent.bind(path)
        thread = threading.Thread(target=server.serve, args=(listener,), daemon=True)
        thread.start()
        yield path, server
        server.running = False
        thread.join(timeout=5)
        listener.close()
        vault.close()


@pytest.mark.parametrize(("slot", "value"), FAST_CASES)
def test_the_fast_path_and_the_agent_refuse_bad_input_cleanly(
    ready: Workspace,
    agent_of_admin: tuple[Path, agent.Agent],
    slot: tuple[str, ...],
    value: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """cli/fast.py reads a checkout line with the standard library alone and sends it to the
    running agent: bad input is refused there (or handed to the click CLI), never a traceback."""
    path, server = agent_of_admin
    before = _state(ready)
    args = _fill(slot, value)
    order = fast.parse(["--db", ready.url, *([] if slot[0] == "--as" else ["--as", ADMIN]), *args])
    status = fast.via_agent(order) if order is not None else None
    if order is not None and slot[0] != "--as":
        assert status is not None, "the running agent was not asked"
    if status is None:  # handed to the click CLI: the same contract
        assert_refused_cleanly(ready.admin(*args))
    else:
        out, err = capsys.readouterr()
        assert status == 1, out
        assert err.startswith("credvault: error: ") and "\nhint: " in err, err
        assert "internal error" not in err
        for control in RAW_CONTROLS:
            assert control not in out + err
    assert server.running and agentclient.request(path, {"op": "ping"})["ok"] is True
    assert _state(ready) == before
