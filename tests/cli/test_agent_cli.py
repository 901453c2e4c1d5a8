"""`credvault agent start | status | stop`, and checkouts through a real agent process.

The agent is a real background process (`python -m vault.service.agent`); the session
keyring of these tests is empty, so a checkout that succeeds without --passphrase-file
can only have gone through the agent. What was recorded is checked through the library.
Each test runs on SQLite and through a real team server (``short_workspace``): there the
agent holds the admin's keys and talks HTTPS to the server, and its socket is keyed by the
server's URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from cli_workspace import ADMIN, ADMIN_PASS, ENGINEER, Workspace, assert_clean_error, ok, run
from served_workspace import ServedWorkspace
from sqlalchemy import func, select

from vault.service import agentclient
from vault.storage import models as m

PASSWORD = "fw-Passw0rd-stdin"


@pytest.fixture
def vault_ws(short_workspace: Workspace, fake_keyring: object) -> Workspace:
    """acme/fw01-admin, the admin's keyring session dropped (any agent is stopped at the end)."""
    workspace = short_workspace
    workspace.init()
    ok(workspace.admin("client", "add", "acme", "--name", "Acme Ltd"))
    ok(
        workspace.admin(
            "secret", "add", "acme/fw01-admin", "--kind", "equipment", "--password-stdin", input=PASSWORD + "\n"
        )
    )
    ok(workspace.admin("lock"))
    return workspace


def _checkouts(ws: Workspace) -> int:
    vault = ws.library(ADMIN)
    try:
        with vault.store.transaction() as s:
            query = select(func.count()).select_from(m.AuditEvent).where(m.AuditEvent.action == "checkout")
            return int(s.scalar(query))
    finally:
        vault.close()


def test_start_checkout_status_stop(vault_ws: Workspace) -> None:
    ws = vault_ws
    # Without an agent and without a keyring session, a checkout is refused (locked).
    assert_clean_error(ws.admin("checkout", "acme/fw01-admin", "-r", "T-1", "--show"), PASSWORD)
    started = ok(ws.admin("agent", "start", "--ttl", "10m", "--passphrase-file", ws.passfiles[ADMIN]))
    assert "Started the agent for root until" in started.stdout
    assert ADMIN_PASS not in started.output
    path = Path(ws.agent_socket(ADMIN))
    assert path.exists() and oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)
    before = _checkouts(ws)
    shown = ok(ws.admin("checkout", "acme/fw01-admin", "-r", "T-1", "--show"))
    assert shown.stdout == PASSWORD + "\n"
    as_json = json.loads(ok(ws.admin("checkout", "acme/fw01-admin", "-r", "T-2", "--json", "--for", "1h")).stdout)
    assert as_json["value"] == PASSWORD and as_json["version"] == 1 and as_json["expires_at"]
    assert _checkouts(ws) == before + 2  # each one on record, like any checkout
    status = json.loads(ok(ws.admin("agent", "status", "--json")).stdout)
    assert status["running"] is True and status["engineer"] == ADMIN
    again = ok(ws.admin("agent", "start", "--passphrase-file", ws.passfiles[ADMIN]))
    assert "already running" in again.stdout
    assert "Stopped the agent for root." in ok(ws.admin("agent", "stop")).stdout
    assert "No agent runs for root." in ok(ws.admin("agent", "status")).stdout
    assert_clean_error(ws.admin("checkout", "acme/fw01-admin", "-r", "T-3", "--show"), PASSWORD)
    assert _checkouts(ws) == before + 2


def test_errors_through_the_agent_follow_the_error_contract(vault_ws: Workspace) -> None:
    ws = vault_ws
    ok(ws.admin("agent", "start", "--passphrase-file", ws.passfiles[ADMIN]))
    missing = ws.admin("checkout", "acme/nope", "-r", "T-1", "--show")
    assert_clean_error(missing, PASSWORD)
    assert "no secret 'acme/nope'" in missing.stderr
    no_reason = ws.admin("checkout", "acme/fw01-admin", "--show")
    assert_clean_error(no_reason, PASSWORD)
    assert "requires a reason" in no_reason.stderr
    bad_length = ws.admin("checkout", "acme/fw01-admin", "-r", "x", "--show", "--for", "9y")
    assert_clean_error(bad_length, PASSWORD)
    assert _checkouts(ws) == 0


def test_wrong_passphrase_starts_nothing(vault_ws: Workspace) -> None:
    ws = vault_ws
    wrong = ws.tmp / "wrong.pass"
    wrong.write_text("not the passphrase\n", encoding="utf-8")
    result = ws.admin("agent", "start", "--passphrase-file", str(wrong))
    assert_clean_error(result, ADMIN_PASS)
    assert "No agent runs" in ok(ws.admin("agent", "status")).stdout
    assert not os.path.exists(ws.agent_socket(ADMIN))


def test_lock_stops_the_agent(vault_ws: Workspace) -> None:
    ws = vault_ws
    ok(ws.admin("agent", "start", "--passphrase-file", ws.passfiles[ADMIN]))
    pid = _agent_pid(ws)
    locked = ok(ws.admin("lock"))
    assert "Stopped the agent for root." in locked.stdout
    assert_clean_error(ws.admin("checkout", "acme/fw01-admin", "-r", "T-1", "--show"), PASSWORD)
    _wait_gone(pid)


def test_lock_stops_an_agent_started_with_another_spelling_of_the_url(vault_ws: Workspace) -> None:
    ws = vault_ws
    ok(ws.admin("agent", "start", "--passphrase-file", ws.passfiles[ADMIN]))
    pid = _agent_pid(ws)
    locked = ok(run(*ws.elsewhere(), "--as", ADMIN, "lock", env=ws.admin_env()))  # another URL, another socket
    assert "Stopped the agent for root." in locked.stdout
    _wait_gone(pid)


def test_a_killed_agent_leaves_the_cli_working(vault_ws: Workspace) -> None:
    """SIGKILL leaves a stale socket file: the CLI falls back and a new agent replaces it."""
    ws = vault_ws
    ok(ws.admin("agent", "start", "--passphrase-file", ws.passfiles[ADMIN]))
    pid = _agent_pid(ws)
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    assert os.path.exists(ws.agent_socket(ADMIN))  # stale
    # No agent and no keyring session: the ordinary clean "locked" error, not a socket error.
    assert_clean_error(ws.admin("checkout", "acme/fw01-admin", "-r", "T-1", "--show"), PASSWORD)
    # With --passphrase-file the command unlocks for itself and never asks the agent.
    own = ok(ws.admin("--passphrase-file", ws.passfiles[ADMIN], "checkout", "acme/fw01-admin", "-r", "T-1", "--show"))
    assert own.stdout == PASSWORD + "\n"
    ok(ws.admin("agent", "start", "--passphrase-file", ws.passfiles[ADMIN]))
    assert ok(ws.admin("checkout", "acme/fw01-admin", "-r", "T-2", "--show")).stdout == PASSWORD + "\n"


def _agent_pid(ws: Workspace) -> int:
    return int(agentclient.request(ws.agent_socket(ADMIN), {"op": "ping"})["pid"])


def _wait_gone(pid: int) -> None:
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):  # reap it: the agent is our child until it ends
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    raise AssertionError(f"agent {pid} still runs")


def test_an_engineer_removed_while_their_agent_runs_gets_nothing_more(short_workspace: Workspace) -> None:
    """alice's agent holds her session when an admin removes her: her next checkout through it is a
    clean refusal that reveals nothing and records no checkout. Through a server the refusal is the
    server's one answer to an unknown key, ``Unauthenticated`` (a ``Locked``: the agent ends). Found
    in session 16: the CLI then printed the bare wire code (``credvault: error: unknown-key``, the
    hint "no usable key is known for this keyid"); it now says what it means to her."""
    ws = short_workspace
    ws.init()
    ok(ws.admin("client", "add", "acme", "--name", "Acme Ltd"))
    ok(ws.admin("secret", "add", "acme/fw01-admin", "--kind", "equipment", "--password-stdin", input=PASSWORD + "\n"))
    ws.enrol()
    ok(ws.admin("grant", ENGINEER, "acme"))
    ok(ws.as_engineer(ENGINEER, "lock"))
    ok(ws.as_engineer(ENGINEER, "agent", "start", "--passphrase-file", ws.passfiles[ENGINEER]))
    assert ok(ws.as_engineer(ENGINEER, "checkout", "acme/fw01-admin", "-r", "T-1", "--show")).stdout == PASSWORD + "\n"
    ok(ws.admin("engineer", "remove", ENGINEER, "--yes"))
    before = _checkouts(ws)
    refused = ws.as_engineer(ENGINEER, "checkout", "acme/fw01-admin", "-r", "T-2", "--show")
    assert_clean_error(refused, PASSWORD)
    assert _checkouts(ws) == before
    if ws.admin_env():  # through the server
        assert "the server accepts no key of yours (unknown-key)" in refused.stderr, refused.stderr
        assert "an admin may have removed, disabled or re-keyed your account" in refused.stderr
        assert _ping(ws.agent_socket(ENGINEER)) is None  # Locked: the agent ended with her session
    else:
        assert "the account of 'alice' is disabled" in refused.stderr, refused.stderr


def _ping(path: str) -> dict[str, object] | None:
    for _ in range(100):  # the agent closes its socket as it answers its last request
        try:
            agentclient.request(path, {"op": "ping"}, timeout=agentclient.CONNECT_TIMEOUT)
        except agentclient.AgentAbsent:
            return None
        time.sleep(0.05)
    return {"running": True}


def test_a_server_that_stops_answering_is_named_before_the_cli_stops_waiting(vault_ws: Workspace) -> None:
    """The team server hangs (or the network drops its packets) while the agent runs. Found in
    session 16: a checkout's two calls took up to 3 × 10 s each (read timeout, two retries), the
    CLI gave up on the agent after 30 s and said "the credvault agent did not answer; run
    `credvault agent stop`" about a healthy agent, and the next command said it again while the
    agent still waited. Now the agent gives the server SERVER_BUDGET (25 s) per request and
    answers with the server's failure; once the server answers again, so does the agent."""
    import asyncio

    from vault.service.agent import SERVER_BUDGET

    ws = vault_ws
    if not isinstance(ws, ServedWorkspace) or ws.server is None:
        pytest.skip("embedded: the agent opens the database itself; there is no server to stop answering")
    ok(ws.admin("agent", "start", "--passphrase-file", ws.passfiles[ADMIN]))
    assert ok(ws.admin("checkout", "acme/fw01-admin", "-r", "T-1", "--show")).stdout == PASSWORD + "\n"
    server = ws.server
    serving = server.app

    async def hung(scope: dict[str, object], receive: object, send: object) -> None:
        await asyncio.sleep(3 * agentclient.REPLY_TIMEOUT)

    server.app = hung
    try:
        started = time.monotonic()
        refused = ws.admin("checkout", "acme/fw01-admin", "-r", "T-2", "--show")
        waited = time.monotonic() - started
    finally:
        server.app = serving
    assert_clean_error(refused, PASSWORD)
    assert "the credvault agent did not answer" not in refused.stderr, refused.stderr
    assert "the server" in refused.stderr and "agent stop" not in refused.stderr, refused.stderr
    assert SERVER_BUDGET - 1 <= waited < agentclient.REPLY_TIMEOUT, waited
    assert ok(ws.admin("checkout", "acme/fw01-admin", "-r", "T-3", "--show")).stdout == PASSWORD + "\n"
