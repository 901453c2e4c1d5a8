"""`credvault unlock` starts the agent by default, with no OS keyring; `lock` ends it.

The keyring here is keyring's own "fail" backend (what a headless Linux machine has):
the session can only live in the agent. The in-process commands the agent does not
serve say how to get a session they can use, and `unlock --keyring` keeps today's
keyring session where one exists. Each test runs on SQLite and through a real team server
(``short_workspace``), where the agent holds the admin's keys and talks HTTPS to it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.errors
import pytest
from cli_workspace import ADMIN, ADMIN_PASS, Workspace, assert_clean_error, ok
from keyring.backend import KeyringBackend
from keyring.backends import fail

from vault.service import agentclient


@pytest.fixture
def headless(short_workspace: Workspace, monkeypatch: pytest.MonkeyPatch, fake_keyring: object) -> Iterator[Workspace]:
    """A vault with acme (made with the in-memory keyring), then no keyring at all."""
    workspace = short_workspace  # a socket path must fit in 100 bytes
    workspace.init()
    ok(workspace.admin("client", "add", "acme", "--name", "Acme Ltd"))
    ok(workspace.admin("lock"))
    monkeypatch.delenv("CREDVAULT_UNLOCK")
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        yield workspace
    finally:
        keyring.set_keyring(previous)  # short_workspace stops the agent


def _pid(ws: Workspace) -> int | None:
    try:
        return int(agentclient.request(ws.agent_socket(ADMIN), {"op": "ping"})["pid"])
    except agentclient.AgentAbsent:
        return None


def _wait_gone(pid: int) -> None:
    for _ in range(100):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"agent {pid} still runs")


def test_unlock_without_any_keyring_starts_the_agent_and_lock_ends_it(headless: Workspace) -> None:
    ws = headless
    assert_clean_error(ws.admin("unlock", "--keyring", "--passphrase-file", ws.passfiles[ADMIN]), ADMIN_PASS)
    assert _pid(ws) is None  # a refused keyring unlock starts nothing
    unlocked = ok(ws.admin("unlock", "--ttl", "10m", "--passphrase-file", ws.passfiles[ADMIN]))
    assert unlocked.stdout.startswith(f"Unlocked {ADMIN} (admin) until ") and ADMIN_PASS not in unlocked.output
    pid = _pid(ws)
    assert pid is not None
    assert f"engineer:       {ADMIN}" in ok(ws.admin("whoami")).stdout  # the click command, through the agent
    assert "acme" in ok(ws.admin("client", "list")).stdout
    refused = ws.admin("audit", "export")  # not served (it streams): needs the keys here
    assert_clean_error(refused, ADMIN_PASS)
    assert "the agent holds the session" in refused.stderr and "unlock --keyring" in refused.stderr
    again = ok(ws.admin("unlock", "--passphrase-file", ws.passfiles[ADMIN]))  # a new unlock replaces the agent
    assert "Unlocked" in again.stdout
    new_pid = _pid(ws)
    assert new_pid is not None and new_pid != pid
    _wait_gone(pid)
    locked = ok(ws.admin("lock"))
    assert locked.stdout == f"Stopped the agent for {ADMIN}.\n"
    _wait_gone(new_pid)
    assert _pid(ws) is None
    assert_clean_error(ws.admin("whoami"))
    assert ok(ws.admin("lock")).stdout == f"{ADMIN} had no unlocked session here.\n"


def test_a_wrong_passphrase_keeps_no_agent(headless: Workspace) -> None:
    wrong = Path(headless.tmp) / "wrong.pass"
    wrong.write_text("not it\n", encoding="utf-8")
    wrong.chmod(0o600)
    assert_clean_error(headless.admin("unlock", "--passphrase-file", str(wrong)))
    assert _pid(headless) is None


def test_unlock_again_with_a_wrong_passphrase_leaves_the_running_agent(headless: Workspace) -> None:
    """A typo at a second `unlock` must not end the session the first one started: the new
    passphrase is verified (the new agent unlocks) before the old agent is stopped."""
    ws = headless
    ok(ws.admin("unlock", "--ttl", "10m", "--passphrase-file", ws.passfiles[ADMIN]))
    pid = _pid(ws)
    assert pid is not None
    wrong = Path(ws.tmp) / "wrong.pass"
    wrong.write_text("not it\n", encoding="utf-8")
    wrong.chmod(0o600)
    refused = ws.admin("unlock", "--passphrase-file", str(wrong))
    assert_clean_error(refused, "not it")
    assert _pid(ws) == pid  # the same agent still serves
    assert f"engineer:       {ADMIN}" in ok(ws.admin("whoami")).stdout
    ok(ws.admin("unlock", "--passphrase-file", ws.passfiles[ADMIN]))  # a right one still replaces it
    new_pid = _pid(ws)
    assert new_pid is not None and new_pid != pid
    _wait_gone(pid)


def test_the_unlock_mode_comes_from_the_environment(headless: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDVAULT_UNLOCK", "keyring")
    assert_clean_error(headless.admin("unlock", "--passphrase-file", headless.passfiles[ADMIN]))  # no keyring here
    assert _pid(headless) is None
    ok(headless.admin("unlock", "--agent", "--passphrase-file", headless.passfiles[ADMIN]))  # the flag wins
    assert _pid(headless) is not None
    monkeypatch.setenv("CREDVAULT_UNLOCK", "tmpfs")
    bad = headless.admin("unlock", "--passphrase-file", headless.passfiles[ADMIN])
    assert_clean_error(bad)
    assert "CREDVAULT_UNLOCK must be agent or keyring" in bad.stderr


def test_at_a_terminal_a_command_the_agent_does_not_serve_asks_the_passphrase(
    headless: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent lends no key: `audit export` (not served: it streams) asks the passphrase
    once for itself."""
    from vault.cli import context

    ws = headless
    ok(ws.admin("unlock", "--passphrase-file", ws.passfiles[ADMIN]))
    monkeypatch.setattr(context, "interactive", lambda: True)
    wrong = ws.admin("audit", "export", input="not the passphrase\n")
    assert_clean_error(wrong, "not the passphrase")
    exported = ok(ws.admin("audit", "export", input=ADMIN_PASS + "\n"))
    assert "Passphrase for root (this command runs outside the agent)" in exported.stderr
    assert ADMIN_PASS not in exported.output
    assert '"action": "vault-init"' in exported.stdout
    added = ok(ws.admin("client", "add", "globex", "--name", "Globex"))  # served by the agent: no prompt
    assert "Passphrase" not in added.output
    assert "globex" in ok(ws.admin("client", "list")).stdout
    monkeypatch.setattr(context, "interactive", lambda: False)
    assert_clean_error(ws.admin("audit", "export", input=ADMIN_PASS + "\n"))


class _RefusingKeyring(KeyringBackend):
    """A keyring that is there but refuses to keep anything (a locked collection)."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError("the collection is locked")

    def delete_password(self, service: str, username: str) -> None:
        raise keyring.errors.PasswordDeleteError("the collection is locked")


def test_a_keyring_that_refuses_the_session_leaves_the_agent_and_says_so(headless: Workspace) -> None:
    # Found in review: unlock said it failed (exit 1) while the agent it had started served on.
    ws = headless
    keyring.set_keyring(_RefusingKeyring())
    unlocked = ok(ws.admin("unlock", "--ttl", "10m", "--passphrase-file", ws.passfiles[ADMIN]))
    assert "the agent holds the session" in unlocked.stdout and "the OS keyring did not keep it" in unlocked.stdout
    assert ADMIN_PASS not in unlocked.output
    assert _pid(ws) is not None
    assert f"engineer:       {ADMIN}" in ok(ws.admin("whoami")).stdout
    ok(ws.admin("lock"))
    assert _pid(ws) is None


def test_unlock_starts_the_agent_from_a_process_holding_many_descriptors(headless: Workspace) -> None:
    """A process with a descriptor past 1023 (a long test run, a busy host application):
    `select()` cannot watch it and raised ValueError; the agent must start all the same."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if max(soft, 0) < 1100 and (hard == resource.RLIM_INFINITY or hard >= 1100):
        resource.setrlimit(resource.RLIMIT_NOFILE, (1100, hard))
    elif soft < 1100:
        pytest.skip("this process may not open 1,100 descriptors")
    held: list[int] = []
    try:
        while not held or held[-1] < 1030:
            held.append(os.open(os.devnull, os.O_RDONLY))
        ok(headless.admin("unlock", "--passphrase-file", headless.passfiles[ADMIN]))
    finally:
        for fd in held:
            os.close(fd)
        if soft < 1100:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert _pid(headless) is not None


def test_a_vault_folder_where_unlock_runs_is_not_imported_into_the_agent(
    headless: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m` puts the working directory first on sys.path: a `vault` folder where the
    engineer runs `unlock` (a source checkout, or one an attacker left there) would be
    imported into the process that holds the keys. The agent starts without it."""
    planted = tmp_path / "here" / "vault"
    planted.mkdir(parents=True)
    marker = tmp_path / "imported"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('planted code ran')\n")
    monkeypatch.chdir(planted.parent)
    ok(headless.admin("unlock", "--passphrase-file", headless.passfiles[ADMIN]))
    assert not marker.exists(), "the agent imported the vault package of the working directory"
    answer = agentclient.request(headless.agent_socket(ADMIN), {"op": "status"})
    assert answer["ok"] and answer["result"]["clients"] == 1


def test_unlock_after_unlock_leaves_exactly_one_agent_on_the_path(headless: Workspace) -> None:
    """Found in review: the old agent removed the socket path a second time as it ended,
    usually after the new agent had bound it; the new session sat in an agent nobody could
    reach and `lock` could not stop. Five unlocks in a row: after each, the new agent
    answers on the path, the one before has ended, and `lock` ends the last one."""
    ws = headless
    path = ws.agent_socket(ADMIN)
    earlier: list[int] = []
    for _ in range(5):
        ok(ws.admin("unlock", "--ttl", "10m", "--passphrase-file", ws.passfiles[ADMIN]))
        for pid in earlier:
            _wait_gone(pid)  # the old agent has ended (and had its chance to remove the path)
        pid = _pid(ws)
        assert pid is not None, "no agent answers on the socket path after unlock"
        assert pid not in earlier
        assert [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".sock")] == [os.path.basename(path)]
        earlier.append(pid)
    assert ok(ws.admin("lock")).stdout == f"Stopped the agent for {ADMIN}.\n"
    _wait_gone(earlier[-1])
    assert _pid(ws) is None and not os.path.exists(path)


def test_with_no_keyring_every_command_the_agent_can_make_goes_through_it(headless: Workspace) -> None:
    """Headless (no keyring: a command that needs the session here is refused), the admin's
    everyday and admin commands run through the agent (``agent_calls``) and print what the same
    command prints in-process (``--passphrase-file``); the writes are checked through the library."""
    ws = headless
    here = ("--passphrase-file", ws.passfiles[ADMIN])  # in-process, its own unlock
    ok(ws.admin("unlock", "--passphrase-file", ws.passfiles[ADMIN]))
    ok(ws.admin("secret", "add", "acme/fw", "--kind", "other", "--username", "root", "--password-stdin", input="pw-one\n"))
    for args in (
        ("secret", "update", "acme/fw", "--host", "10.0.0.5", "--password-stdin"),
        ("secret", "rotate", "acme/fw", "--length", "30"),
        ("policy", "set", "acme", "--exclusive", "--for", "45m"),
        ("settings", "--retention", "5"),
        ("client", "add", "globex", "--name", "Globex"),
        ("rotate", "client", "acme"),
        ("checkout", "acme/fw", "-r", "T-1", "--show"),
    ):
        done = ok(ws.admin(*args, input="pw-two\n"))
        assert "Passphrase" not in done.output and "agent holds the session" not in done.output, args
    ws.enrol("bob")  # the admin's invite and confirm (its shown plan compared) through the agent
    confirmed = ws.admin("engineer", "confirm", "bob", "--fingerprint", "0000")
    assert_clean_error(confirmed)
    assert "Passphrase" not in confirmed.output and "agent holds the session" not in confirmed.output
    ok(ws.admin("grant", "bob", "acme"))
    for args in (
        ("checkouts",),
        ("client", "show", "acme"),
        ("secret", "history", "acme/fw"),
        ("grants",),
        ("policy", "show", "acme", "--json"),
        ("engineer", "list"),
        ("receipts",),
        ("subject", "find", "root", "--json"),
    ):
        assert ok(ws.admin(*args)).stdout == ok(ws.admin(*here, *args)).stdout, args
    verified = ok(ws.admin("audit", "verify"))
    assert "verif" in verified.stdout
    assert ok(ws.admin("audit", "checkpoint")).stdout.startswith("credvault-checkpoint:")
    library = ws.library(ADMIN)
    secret = library.secrets.show("acme/fw")
    assert (secret.version, secret.host, secret.username) == (3, "10.0.0.5", "root")
    assert len(library.checkouts.reveal("acme/fw", reason="T-2")) == 30
    policy = library.policies.get("acme")
    assert policy.exclusive and policy.checkout_minutes == 45
    assert [(c.slug, c.key_version) for c in library.clients.list()] == [("acme", 2), ("globex", 1)]
    assert {e.name: e.status for e in library.engineers.list()}["bob"] == "active"
    assert [(g.client, g.state) for g in library.grants.list(engineer="bob")] == [("acme", "active")]
    assert [c.secret for c in library.checkouts.list()] == ["fw"]
