"""The console-script entry point's fast path (cli/fast.py) against the click command.

``parse`` must take exactly the command lines it can answer as the click command would
and hand every other one on; for the lines it takes, a real agent answers and the
output, error text and exit status must equal the click command's, byte for byte
(times to the minute aside), while importing no click.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
from cli_workspace import ADMIN, Workspace, ok
from vault.cli.fast import Checkout, parse

from vault.service import agentclient

PASSWORD = "fw-Passw0rd-stdin"
REF = "acme/fw01-admin"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["checkout", REF, "-r", "T-1", "--show"], Checkout(ref=REF, reason="T-1", show=True)),
        (
            ["--db", "sqlite:///x.db", "--as", "bob", "checkout", "--json", REF, "--reason=T 2", "--for", "2h"],
            Checkout(db="sqlite:///x.db", as_engineer="bob", ref=REF, reason="T 2", hold_for="2h", as_json=True),
        ),
        (
            ["checkout", REF, "--field", "username", "--version", "3", "--show", "-r", "x"],
            Checkout(ref=REF, reason="x", field="username", version=3, show=True),
        ),
        (["checkout", REF, "--show"], Checkout(ref=REF, show=True)),  # the agent says a reason is needed
    ],
)
def test_parse_takes_what_it_can_answer(argv: list[str], expected: Checkout) -> None:
    assert parse(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["checkout"],  # a missing argument: click's usage error
        ["checkout", REF, "-r", "T-1"],  # the clipboard: click's command does it
        ["checkout", REF, "-r", "T-1", "--show", "--clear-after", "9"],
        ["--passphrase-file", "p", "checkout", REF, "-r", "T-1", "--show"],
        ["checkout", REF, "-rT-1", "--show"],
        ["checkout", REF, "-r", "a", "-r", "b", "--show"],  # given twice
        ["checkout", REF, "--show", "--show"],
        ["checkout", REF, "other", "--show"],  # two arguments
        ["checkout", REF, "--version", "x", "--show"],
        ["checkout", REF, "--version", "٣", "--show"],  # a non-ASCII digit
        ["checkout", REF, "--reason", "--show"],  # a value that looks like an option
        ["checkout", REF, "--show", "--help"],
        ["checkout", REF, "--show", "--"],
        ["--db", "x", "--db", "y", "checkout", REF, "--show"],
        ["--version"],
        ["secret", "show", REF],
        ["checkin", REF],
        ["checkout", REF, "--show", "-r", "x", "--unknown"],
        ["--as", "checkout", REF, "--show"],
    ],
)
def test_parse_hands_everything_else_to_click(argv: list[str]) -> None:
    assert parse(argv) is None


# -- the same command lines, both ways, with a real agent -------------------------------------------

RUN_FAST = "import sys, atexit; atexit.register(lambda: print('CLICK', 'click' in sys.modules, file=sys.stderr)); "


@pytest.fixture
def served(workspace: Workspace, monkeypatch: pytest.MonkeyPatch, fake_keyring: object) -> Iterator[Workspace]:
    with tempfile.TemporaryDirectory(prefix="cvfast") as home:
        monkeypatch.setenv("CREDVAULT_HOME", home)
        workspace.init()
        ok(workspace.admin("client", "add", "acme", "--name", "Acme Ltd"))
        secret = (REF, "--kind", "equipment", "--username", "netadmin", "--password-stdin")
        ok(workspace.admin("secret", "add", *secret, input=PASSWORD + "\n"))
        ok(workspace.admin("lock"))
        ok(workspace.admin("agent", "start", "--passphrase-file", workspace.passfiles[ADMIN]))
        try:
            yield workspace
        finally:
            with contextlib.suppress(agentclient.AgentAbsent):
                agentclient.request(agentclient.socket_path(workspace.url, ADMIN), {"op": "stop"})


def _run(entry: str, args: list[str]) -> tuple[int, str, str, bool]:
    code = f"{RUN_FAST}sys.argv = ['credvault', *{args!r}]; from {entry} import main; main()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    stderr, _, flag = proc.stderr.rpartition("CLICK ")
    clock = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d\.\d+)?(\+00:00| UTC)")
    return proc.returncode, clock.sub("TIME", proc.stdout), clock.sub("TIME", stderr), flag.strip() == "True"


LINES = [
    ["checkout", REF, "-r", "T-1", "--show"],
    ["checkout", REF, "--reason", "T-1", "--json"],
    ["checkout", REF, "-r", "T-1", "--show", "--for", "1h", "--field", "username"],
    ["checkout", REF, "-r", "T-1", "--json", "--version", "1"],
    ["checkout", "acme/nope", "-r", "T-1", "--show"],
    ["checkout", REF, "--show"],
    ["checkout", REF, "-r", "T-1", "--show", "--for", "9y"],
    ["checkout", REF, "-r", "T-1", "--show", "--version", "7"],
    ["checkout", "Not A Ref", "-r", "T-1", "--show"],
]


@pytest.mark.parametrize("args", LINES, ids=[" ".join(a[1:]) for a in LINES])
def test_fast_path_answers_as_the_click_command(served: Workspace, args: list[str]) -> None:
    argv = ["--db", served.url, "--as", ADMIN, *args]
    fast = _run("vault.cli.fast", argv)
    slow = _run("vault.cli.main", argv)
    assert fast[3] is False, "the fast path imported click"
    assert slow[3] is True
    assert fast[:3] == slow[:3]
    if fast[0] == 0:
        assert PASSWORD in fast[1] or "netadmin" in fast[1]
    else:
        assert fast[2].startswith("credvault: error: ") and "\nhint: " in fast[2]
        assert PASSWORD not in fast[1] + fast[2]


def test_without_an_agent_the_click_command_answers(workspace: Workspace, fake_keyring: object) -> None:
    workspace.init()
    ok(workspace.admin("lock"))
    argv = ["--db", workspace.url, "--as", ADMIN, "checkout", REF, "-r", "T-1", "--show"]
    code, out, err, imported_click = _run("vault.cli.fast", argv)
    assert imported_click and code == 1 and out == ""
    assert err.startswith("credvault: error: ") and "locked" in err
