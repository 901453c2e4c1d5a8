"""The console-script entry point's fast path (cli/fast/) against the click command.

``parse`` must take exactly the command lines it can answer as the click command would
and hand every other one on; for the lines it takes, a real agent answers and the
output, error text and exit status must equal the click command's, byte for byte
(times to the minute aside), while the CLI process imports neither click nor
SQLAlchemy nor cryptography. Both runs go through the same agent (the click command
asks it too, cli/agentvault.py), on the same vault: on SQLite (``--db``) and through a
real team server (``short_workspace``: the admin's machine has pinned it, the agent holds
their keys and talks HTTPS to it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_workspace import ADMIN, Workspace, ok
from test_bad_input import PLANTED_NAME, PLANTED_USER, RAW_CONTROLS, _plant_metadata
from vault.cli.fast import Order, parse

from vault.service import agentclient

PASSWORD = "fw-Passw0rd-stdin"
REF = "acme/fw01-admin"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["checkout", REF, "-r", "T-1", "--show"], Order("checkout", ref=REF, reason="T-1", show=True)),
        (
            ["--db", "sqlite:///x.db", "--as", "bob", "checkout", "--json", REF, "--reason=T 2", "--for", "2h"],
            Order(
                "checkout", db="sqlite:///x.db", as_engineer="bob", ref=REF, reason="T 2", hold_for="2h", as_json=True
            ),
        ),
        (
            ["checkout", REF, "--field", "username", "--version", "3", "--show", "-r", "x"],
            Order("checkout", ref=REF, reason="x", field="username", version=3, show=True),
        ),
        (["checkout", REF, "--show"], Order("checkout", ref=REF, show=True)),  # the agent says a reason is needed
        (["checkout", REF, "-r", "x"], Order("checkout", ref=REF, reason="x")),  # the clipboard, copied here
        (["checkout", REF, "-r", "x", "--clear-after", "9"], Order("checkout", ref=REF, reason="x", clear_after=9)),
        (["whoami"], Order("whoami")),
        (["status"], Order("status")),
        (["status", "--json"], Order("status", as_json=True)),
        (["--as", "bob", "whoami", "--json"], Order("whoami", as_engineer="bob", as_json=True)),
        (
            ["--server", "https://vault.example:8443", "--as", "bob", "whoami"],
            Order("whoami", server="https://vault.example:8443", as_engineer="bob"),
        ),
        (["client", "list"], Order("client list")),
        (["secret", "list"], Order("secret list")),
        (["secret", "list", "--json", "acme"], Order("secret list", client="acme", as_json=True)),
        (["secret", "show", REF], Order("secret show", ref=REF)),
        (["audit", "log", "--limit", "20"], Order("audit log", limit=20)),
        (["audit", "log", "--client=acme", "--json"], Order("audit log", client="acme", as_json=True)),
        (["checkin", REF], Order("checkin", ref=REF)),
        (["checkin", REF, "--generate", "--length", "30"], Order("checkin", ref=REF, generate=True, length=30)),
        (["checkin", REF, "--new-password-stdin"], Order("checkin", ref=REF, new_password_stdin=True)),
        (
            ["secret", "add", REF, "--kind", "equipment", "--password-stdin", "--field", "a=1", "--field", "b=2"],
            Order("secret add", ref=REF, kind="equipment", password_stdin=True, fields={"a": "1", "b": "2"}),
        ),
        (
            ["secret", "add", REF, "--kind=other", "--generate", "--sensitive-field", "en=x", "--public-field", "k=v"],
            Order(
                "secret add",
                ref=REF,
                kind="other",
                generate=True,
                sensitive_fields={"en": "x"},
                public_fields={"k": "v"},
            ),
        ),
    ],
)
def test_parse_takes_what_it_can_answer(argv: list[str], expected: Order) -> None:
    assert parse(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["checkout"],  # a missing argument: click's usage error
        ["--passphrase-file", "p", "checkout", REF, "-r", "T-1", "--show"],
        ["checkout", REF, "-rT-1", "--show"],
        ["checkout", REF, "-r=T-1", "--show"],
        ["checkout", REF, "-r", "a", "-r", "b", "--show"],  # given twice
        ["checkout", REF, "--show", "--show"],
        ["checkout", REF, "other", "--show"],  # two arguments
        ["checkout", REF, "--version", "x", "--show"],
        ["checkout", REF, "--version", "٣", "--show"],  # a non-ASCII digit
        ["checkout", REF, "--version", "+3", "--show"],
        ["checkout", REF, "--clear-after", "4"],  # out of click's range
        ["checkout", REF, "--reason", "--show"],  # a value that looks like an option
        ["checkout", REF, "--show", "--help"],
        ["checkout", REF, "--show", "-h"],
        ["checkout", REF, "--show", "--"],
        ["--db", "x", "--db", "y", "checkout", REF, "--show"],
        ["--server", "https://x", "--server", "https://y", "whoami"],
        ["--db", "x", "--server", "https://y", "whoami"],  # click refuses both
        ["--server", "https://y", "--db", "x", "whoami"],
        ["--server", "whoami"],
        ["--version"],
        ["--trust-new-vault", "whoami"],
        ["--as", "checkout", REF, "--show"],
        ["checkout", REF, "--show", "-r", "x", "--unknown"],
        ["secret", "history", REF, "--all"],  # an option it does not know
        ["secret", "update", REF, "--generate"],
        ["secret", "show"],
        ["secret", "show", REF, "extra"],
        ["secret", "--json", "list"],
        ["client", "show", "acme"],
        ["client", "list", "extra"],
        ["status", "extra"],
        ["status", "--json", "--json"],
        ["whoami", "--json", "--json"],
        ["audit", "log", "--limit", "0"],
        ["audit", "log", "--since", "7d"],  # read by the click command
        ["audit", "verify"],
        ["checkin", REF, "--break"],
        ["checkin", REF, "--length", "x"],
        ["secret", "add", REF, "--kind", "rocket", "--generate"],
        ["secret", "add", REF, "--kind", "other", "--field", "novalue", "--generate"],
        ["secret", "add", REF, "--kind", "other", "--sensitive-field", "enable", "--generate"],  # a prompt
        ["secret", "add", REF, "--kind", "other", "--field", "=v", "--generate"],
        ["secret", "add", REF, "--kind", "other", "--kind", "service", "--generate"],
        ["checkout", "-", "--show"],
    ],
)
def test_parse_hands_everything_else_to_click(argv: list[str]) -> None:
    assert parse(argv) is None


# -- the same command lines, both ways, with a real agent -------------------------------------------

HEAVY = ("click", "sqlalchemy", "cryptography")
# Standard modules that cost an everyday command milliseconds of start-up (bench W10): the
# fast path of whoami, listings, show, checkout (--show or the clipboard) and checkin needs none.
SLOW_TO_IMPORT = ("subprocess", "dataclasses", "pathlib", "socket", "hashlib", "_hashlib", "typing", "contextlib")
RUN_HOOK = (  # the modules imported after start-up (the editable install's hook imports pathlib)
    "import sys, atexit; _before = set(sys.modules); atexit.register(lambda: print('MODULES', "
    f"*[m for m in {HEAVY + SLOW_TO_IMPORT!r} if m in sys.modules and m not in _before], file=sys.stderr)); "
)


@pytest.fixture
def served(short_workspace: Workspace, monkeypatch: pytest.MonkeyPatch, fake_keyring: object) -> Workspace:
    """acme/fw01-admin (username, fields), acme/evil and acme/fw01-admin's metadata planted
    with control characters; the admin's session in an agent started by `unlock` (stopped
    by ``short_workspace`` at the end)."""
    workspace = short_workspace
    workspace.init()
    ok(workspace.admin("client", "add", "acme", "--name", "Acme Ltd"))
    secret = (REF, "--kind", "equipment", "--username", "netadmin", "--password-stdin")
    fields = ("--field", "vlan=20", "--sensitive-field", "enable=en-Secret-1")
    ok(workspace.admin("secret", "add", *secret, *fields, input=PASSWORD + "\n"))
    ok(workspace.admin("secret", "add", "acme/evil", "--kind", "other", "--generate"))
    ok(workspace.admin("secret", "add", "acme/plain", "--kind", "service", "--generate", "--note", "x\ny"))
    vault = workspace.library()
    try:
        _plant_metadata(vault, "acme/evil", name=PLANTED_NAME)
        _plant_metadata(vault, "acme/plain", username=PLANTED_USER, note="a\x1b[2J\x07b\rc\nd")
    finally:
        vault.close()
    ok(workspace.admin("lock"))
    monkeypatch.delenv("CREDVAULT_UNLOCK")  # the default: `unlock` starts the agent
    unlocked = ok(workspace.admin("unlock", "--passphrase-file", workspace.passfiles[ADMIN]))
    assert "the agent holds the session" in unlocked.stdout
    for name, value in (workspace.admin_env() or {}).items():  # the CLI processes run on the admin's machine
        monkeypatch.setenv(name, value)
    return workspace


def _where(ws: Workspace) -> list[str]:
    """The global options of the admin's command lines: the database, or nothing through a team
    server (their machine's config names the pinned server)."""
    return [] if ws.admin_env() else ["--db", ws.url]


CLOCK = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?(\+00:00| UTC)")


def _run(
    entry: str,
    args: list[str],
    *,
    input: str | None = None,
    env: dict[str, str] | None = None,
    watch: tuple[str, ...] = HEAVY,
) -> tuple[int, str, str, tuple[str, ...]]:
    """(status, stdout, stderr, the modules of ``watch`` it imported) of one CLI process."""
    code = f"{RUN_HOOK}sys.argv = ['credvault', *{args!r}]; from {entry} import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, input=input, env={**os.environ, **(env or {})}
    )
    stderr, _, modules = proc.stderr.rpartition("MODULES")
    imported = tuple(name for name in modules.split() if name in watch)
    return proc.returncode, CLOCK.sub("TIME", proc.stdout), CLOCK.sub("TIME", stderr), imported


def _both(ws: Workspace, args: list[str], **kw: object) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    argv = [*_where(ws), "--as", ADMIN, *args]
    fast = _run("vault.cli.fast", argv, **kw)  # type: ignore[arg-type]
    slow = _run("vault.cli.main", argv, **kw)  # type: ignore[arg-type]
    assert fast[3] == (), f"the fast path imported {fast[3]}"
    assert slow[3] == ("click",), f"the click command through the agent imported {slow[3]}"  # the agent's work
    return fast[:3], slow[:3]


READS = [
    ["whoami"],
    ["whoami", "--json"],
    ["status"],
    ["status", "--json"],
    ["client", "list"],
    ["client", "list", "--json"],
    ["secret", "list"],
    ["secret", "list", "acme"],
    ["secret", "list", "acme", "--json"],
    ["secret", "list", "nope"],
    ["secret", "show", REF],
    ["secret", "show", REF, "--json"],
    ["secret", "show", "acme/plain"],
    ["secret", "show", "acme/evil"],  # its stored name is no longer "evil"
    ["secret", "show", "acme/plain", "--json"],
    ["secret", "show", "acme/nope"],
    ["secret", "show", "Not A Ref"],
    ["audit", "log", "--limit", "20"],
    ["audit", "log", "--limit", "5", "--json"],
    ["audit", "log", "--limit", "3", "--client", "acme"],
    ["audit", "log", "--limit", "3", "--engineer", "nobody"],
    ["checkout", REF, "-r", "T-1", "--show"],
    ["checkout", REF, "--reason", "T-1", "--json"],
    ["checkout", REF, "-r", "T-1", "--show", "--for", "1h", "--field", "username"],
    ["checkout", REF, "-r", "T-1", "--json", "--version", "1"],
    ["checkout", REF, "-r", "T-1", "--show", "--field", "enable"],
    ["checkout", "acme/plain", "-r", "T-1", "--show", "--field", "note"],
    ["checkout", "acme/plain", "-r", "T-1", "--json", "--field", "username"],
    ["checkout", "acme/nope", "-r", "T-1", "--show"],
    ["checkout", REF, "--show"],
    ["checkout", REF, "-r", "T-1", "--show", "--for", "9y"],
    ["checkout", REF, "-r", "T-1", "--show", "--for", ""],
    ["checkout", REF, "-r", "T-1", "--show", "--version", "7"],
    ["checkout", "Not A Ref", "-r", "T-1", "--show"],
    ["checkin", "acme/nope"],
    ["checkouts"],
    ["checkouts", "--json"],
    ["secret", "history", REF],
    ["secret", "history", REF, "--json"],
    ["secret", "history", "acme/nope"],
    ["secret", "history", "Not A Ref"],
    ["secret", "add", REF, "--kind", "other", "--generate"],  # it exists: the same error both ways
    ["secret", "add", "acme/x", "--kind", "other", "--generate", "--length", "5"],
    ["secret", "add", "acme/x", "--kind", "other", "--generate", "--field", "no pe=1"],
]


@pytest.mark.parametrize("args", READS, ids=[" ".join(a) for a in READS])
def test_fast_path_answers_as_the_click_command(served: Workspace, args: list[str]) -> None:
    fast, slow = _both(served, args)
    assert fast == slow
    status, out, err = fast
    if status == 0:
        assert out
    else:
        assert err.startswith("credvault: error: ") and "\nhint: " in err
        assert PASSWORD not in out + err
    for control in RAW_CONTROLS:
        assert control not in out + err, f"raw {control!r} printed"


def test_control_characters_from_storage_are_neutralised(served: Workspace) -> None:
    """acme/evil's planted name, acme/plain's username and note reach the screen as '?'."""
    expected = {
        ("secret", "list", "acme"): ("ev?[2Jil??", "net?]0;owned?admin??"),
        ("secret", "show", "acme/plain"): (
            "username:  net?]0;owned?admin\n",
            "note:      a?[2J?b\n",
            "\n           d\n",
        ),
        ("checkout", "acme/plain", "-r", "T-9", "--show", "--field", "note"): ("a?[2J?b?c\nd\n",),
    }
    for args, shown in expected.items():
        (status, out, err), slow = _both(served, list(args))
        assert status == 0 and (status, out, err) == slow
        for text in shown:
            assert text in out, out
        for control in RAW_CONTROLS:
            assert control not in out + err


def test_checkout_then_checkin_both_ways(served: Workspace) -> None:
    results = []
    for entry in ("vault.cli.fast", "vault.cli.main"):
        argv = [*_where(served), "--as", ADMIN]
        taken = _run(entry, [*argv, "checkout", REF, "-r", "T-5", "--show"])
        given = _run(entry, [*argv, "checkin", REF])
        again = _run(entry, [*argv, "checkin", REF])  # nothing held now: an error
        assert (taken[3] == ()) == (entry == "vault.cli.fast") == (given[3] == ()) == (again[3] == ())
        results.append((taken[:3], given[:3], again[:3]))
    assert results[0] == results[1]
    assert results[0][1] == (0, f"Checked in {REF}.\n", "")
    assert results[0][2][0] == 1


def test_checkin_with_a_new_password_from_stdin_both_ways(served: Workspace) -> None:
    argv = [*_where(served), "--as", ADMIN]
    outputs = []
    for number, entry in enumerate(("vault.cli.fast", "vault.cli.main")):
        ok_out = _run(entry, [*argv, "checkout", REF, "-r", "T-6", "--show"])
        assert ok_out[0] == 0
        new = f"new-Passw0rd-{number}"
        given = _run(entry, [*argv, "checkin", REF, "--new-password-stdin"], input=new + "\n")
        outputs.append(given[:3])
        shown = _run("vault.cli.fast", [*argv, "checkout", REF, "-r", "T-7", "--json", "--for", "1m"])
        assert json.loads(shown[1])["value"] == new
        assert _run("vault.cli.fast", [*argv, "checkin", REF])[0] == 0
    assert outputs[0] == outputs[1] == (0, f"Checked in {REF} and stored a new password.\n", "")


def test_secret_add_both_ways(served: Workspace) -> None:
    """The same `secret add` lines add acme/fast-N with the fast path and acme/click-N with
    click: the outputs match once the names are swapped, and so do the stored secrets."""
    lines = [
        (["--kind", "equipment", "--password-stdin", "--username", "u1", "--field", "vlan=7"], "stdin-Pw-1\n"),
        (["--kind", "service", "--generate", "--url", "https://x.example", "--sensitive-field", "otp=123456"], None),
        (["--kind", "other", "--generate", "--length", "40", "--public-field", "pin-hint=blue", "--note", "n"], None),
        (["--kind", "other", "--password-stdin", "--host", "bad host\x07"], "pw\n"),  # the library refuses it
    ]
    for number, (options, given) in enumerate(lines):
        argv = [*_where(served), "--as", ADMIN, "secret", "add"]
        fast = _run("vault.cli.fast", [*argv, f"acme/fast-{number}", *options], input=given)
        slow = _run("vault.cli.main", [*argv, f"acme/click-{number}", *options], input=given)
        assert fast[3] == () and "click" in slow[3]
        assert fast[:3] == tuple(x.replace("click-", "fast-") if isinstance(x, str) else x for x in slow[:3])
        if fast[0] == 0:
            shown = [
                _run("vault.cli.fast", [*_where(served), "--as", ADMIN, "secret", "show", ref, "--json"])[1]
                for ref in (f"acme/fast-{number}", f"acme/click-{number}")
            ]
            first, second = (json.loads(text) for text in shown)
            for record in (first, second):
                del record["name"], record["created_at"], record["updated_at"]
            assert first == second
    assert "stdin-Pw-1" not in str(lines[0][0])  # the value was never in argv


def test_the_clipboard_copy_happens_in_the_cli_process(served: Workspace, tmp_path: Path) -> None:
    outputs = []
    for entry in ("vault.cli.fast", "vault.cli.main"):
        board = tmp_path / f"{entry}.clip"
        argv = [*_where(served), "--as", ADMIN, "checkout", REF, "-r", "T-8", "--clear-after", "5"]
        result = _run(entry, argv, env={"CREDVAULT_CLIPBOARD_FILE": str(board)})
        assert (result[3] == ()) == (entry == "vault.cli.fast")
        assert board.read_text(encoding="utf-8") == PASSWORD
        outputs.append(result[:3])
    assert outputs[0] == outputs[1]
    assert "it is cleared in 5 s" in outputs[0][2] and PASSWORD not in outputs[0][1] + outputs[0][2]


def test_the_everyday_commands_import_nothing_slow_to_start(served: Workspace, tmp_path: Path) -> None:
    """W10's commands through the agent import none of SLOW_TO_IMPORT (nor HEAVY)."""
    argv = [*_where(served), "--as", ADMIN]
    clip = {"CREDVAULT_CLIPBOARD_FILE": str(tmp_path / "clip")}
    lines: list[tuple[list[str], dict[str, str], str | None]] = [
        (["whoami"], {}, None),
        (["client", "list"], {}, None),
        (["secret", "list", "acme"], {}, None),
        (["secret", "show", REF], {}, None),
        (["checkout", REF, "-r", "T-9", "--show"], {}, None),
        (["checkout", REF, "-r", "T-9", "--clear-after", "5"], clip, None),
        (["audit", "log", "--limit", "20"], {}, None),
        (["checkin", REF], {}, None),
        (["secret", "add", "acme/light", "--kind", "other", "--password-stdin"], {}, "light-Pw-1\n"),
    ]
    for args, env, given in lines:
        status, _out, err, imported = _run(
            "vault.cli.fast", [*argv, *args], env=env, input=given, watch=HEAVY + SLOW_TO_IMPORT
        )
        assert (status, imported) == (0, ()), (args, err)
    assert (tmp_path / "clip").read_text(encoding="utf-8") == PASSWORD


def test_without_an_agent_the_click_command_answers(short_workspace: Workspace, fake_keyring: object) -> None:
    workspace = short_workspace
    workspace.init()
    ok(workspace.admin("lock"))
    for args in (["checkout", REF, "-r", "T-1", "--show"], ["whoami"], ["secret", "list"]):
        argv = [*_where(workspace), "--as", ADMIN, *args]
        code, out, err, modules = _run("vault.cli.fast", argv, env=workspace.admin_env())
        assert "click" in modules and code == 1 and out == ""
        assert err.startswith("credvault: error: ") and "locked" in err


@pytest.mark.parametrize("entry", ["vault.cli.fast", "vault.cli.main"])
def test_a_reader_that_leaves_early_gets_no_traceback(served: Workspace, entry: str) -> None:
    """`credvault audit log | head -0`: the reader has gone before the first line is written
    (the read end is closed at once, so the race of a reader leaving mid-output cannot pass
    by luck); both paths end quietly with status 1, as click does."""
    argv = [*_where(served), "--as", ADMIN, "audit", "log"]
    code = f"import sys; sys.argv = ['credvault', *{argv!r}]; from {entry} import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader leaves before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 1, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@contextlib.contextmanager
def _old_agent(path: str) -> Iterator[None]:
    """An agent of an earlier release: it answers ping and refuses every other request as unknown."""
    import socket
    import threading

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    listener.settimeout(0.2)
    running = True

    def loop() -> None:
        while running:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                op = json.loads(conn.makefile("rb").readline())["op"]
                if op == "ping":
                    answer: dict[str, object] = {"ok": True, "engineer": "bob", "pid": 1, "expires_at": "x"}
                else:
                    answer = {"ok": False, "error": "InvalidInput", "message": f"unknown agent request '{op}'"}
                conn.sendall(json.dumps(answer).encode() + b"\n")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        running = False
        thread.join(timeout=5)
        listener.close()


def test_an_agent_that_does_not_know_the_request_is_no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: an agent of the previous release answered "unknown agent request
    'status'" and the command failed; it must go on as if no agent ran (click, in-process)."""
    from vault.cli.agentvault import AgentVault
    from vault.cli.fast.serve import serve

    with tempfile.TemporaryDirectory(prefix="cvold") as home:
        monkeypatch.setenv("CREDVAULT_HOME", home)
        path = agentclient.socket_path("sqlite:///old.db", "bob")
        with _old_agent(path):
            assert serve(Order("status", db="sqlite:///old.db", as_engineer="bob")) is None  # click answers

            class Engineers:
                def whoami(self) -> str:
                    return "in-process"

            class InProcess:
                engineers = Engineers()

            assert AgentVault(path, lambda: InProcess()).engineers.whoami() == "in-process"


def test_audit_log_of_more_than_a_block_both_ways(served: Workspace) -> None:
    """Found in review: the click command prints the audit log in blocks of 500 rows (the
    columns widen part-way) and the fast path padded the whole table at once: above 500 rows
    the bytes differed. A wider cell after the first block shows the difference."""
    from vault.cli.fast.printing import BLOCK

    path = served.agent_socket(ADMIN)
    for i in range(BLOCK + 20):
        agentclient.request(
            path, {"op": "checkout", "ref": "acme/plain", "field": "username", "hold": False, "reason": f"T-{i}"}
        )
    wide = "w" * 60  # a client's slug: an admin's log through a server names a secret `(secret #id)`
    ok(served.admin("--passphrase-file", served.passfiles[ADMIN], "client", "add", wide, "--name", "Wide"))
    agentclient.request(path, {"op": "secret-add", "ref": f"{wide}/x", "password": "pw-Wide-1", "kind": "other"})
    fast, slow = _both(served, ["audit", "log"])
    assert fast == slow
    lines = fast[1].splitlines()
    assert len(lines) > BLOCK + 20 and f"{wide}/" in lines[-1]
    assert len(lines[BLOCK]) < len(lines[-1])  # the second block's columns are wider


def test_the_server_named_on_the_command_line_is_the_agents(served: Workspace) -> None:
    """``--server URL`` names the agent's vault as ``--db URL`` does: the fast path answers. (Found
    in session 16: the fast path did not know ``--server`` and left every such line to click.)
    CREDVAULT_DB is set, so that the config's ``server`` is not what finds the agent."""
    if not served.admin_env():
        pytest.skip("embedded: every other test of this module names the database with --db")
    url, elsewhere = served.target, {"CREDVAULT_DB": f"sqlite:///{served.tmp / 'other.db'}"}
    for args in (["whoami"], ["checkout", REF, "-r", "T-1", "--show"], ["secret", "list", "acme"]):
        fast = _run("vault.cli.fast", ["--server", url, "--as", ADMIN, *args], env=elsewhere)
        slow = _run("vault.cli.main", ["--server", url, "--as", ADMIN, *args], env=elsewhere)
        assert fast[:3] == slow[:3] and fast[0] == 0, fast
        assert fast[3] == (), f"the fast path imported {fast[3]}"
    by_environment = {**elsewhere, "CREDVAULT_SERVER": url}  # CREDVAULT_SERVER before CREDVAULT_DB
    fast = _run("vault.cli.fast", ["--as", ADMIN, "checkout", REF, "-r", "T-2", "--show"], env=by_environment)
    assert (fast[0], fast[1], fast[3]) == (0, PASSWORD + "\n", ())


CALLED = [
    ["client", "show", "acme"],
    ["grants", "--json"],
    ["engineer", "list"],
    ["policy", "show", "acme"],
    ["audit", "checkpoint"],
    ["audit", "verify"],
]


@pytest.mark.parametrize("args", CALLED, ids=[" ".join(a) for a in CALLED])
def test_a_command_the_agent_makes_by_call_imports_neither_sqlalchemy_nor_cryptography(
    served: Workspace, args: list[str]
) -> None:
    """The click command's call goes to the agent (``agent_calls``), its answer comes back as
    the library's records: the command's process imports click alone of the heavy modules."""
    status, out, err, imported = _run("vault.cli.main", [*_where(served), "--as", ADMIN, *args])
    assert status == 0 and out, err
    assert imported == ("click",), f"{args} imported {imported}"
