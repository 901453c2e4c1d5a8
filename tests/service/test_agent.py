"""The agent (vault/service/agent.py): what it answers, to whom, and for how long.

The server runs in a thread of the test process on a real Unix socket; the vault is a
real one (SQLite and PostgreSQL through the ``db_url`` fixture). The start-up path in a
separate process is covered by tests/cli/test_agent_cli.py.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from vault import Vault
from vault.errors import ConfigurationError, InvalidInput, Locked, NotFound, StoreUnavailable
from vault.service import agent, agentclient
from vault.storage import models as m

ADMIN = "root-admin"  # as tests/conftest.py
PASSWORD = "agent-Secret-pw ✓"


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short CREDVAULT_HOME (a socket path must fit in 100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="cvag") as tmp:
        monkeypatch.setenv("CREDVAULT_HOME", tmp)
        yield Path(tmp)


@pytest.fixture
def admin(team: Any) -> Vault:
    vault: Vault = team.admin
    vault.add_client("agentco", "Agent Co")
    vault.add_secret("agentco/fw", password=PASSWORD, username="root")
    return vault


def _events(vault: Vault, action: str) -> int:
    with vault.store.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(m.AuditEvent).where(m.AuditEvent.action == action)))


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def served(admin: Vault, home: Path) -> Iterator[tuple[agent.Agent, Path, Clock]]:
    clock = Clock()
    path = Path(agentclient.socket_path(admin.store.url, ADMIN))
    server = agent.Agent(admin, clock() + dt.timedelta(minutes=5), clock)
    listener = agent.bind(path)
    thread = threading.Thread(target=server.serve, args=(listener,), daemon=True)
    thread.start()
    yield server, path, clock
    server.running = False
    thread.join(timeout=5)
    listener.close()
    assert not thread.is_alive()


def test_checkout_through_the_socket_is_audited(served: tuple[agent.Agent, Path, Clock], admin: Vault) -> None:
    _server, path, _clock = served
    before = _events(admin, "checkout")
    answer = agentclient.request(path, {"op": "checkout", "ref": "agentco/fw", "reason": "T-1", "field": "password"})
    assert answer["value"] == PASSWORD and answer["version"] == 1 and answer["expires_at"]
    assert _events(admin, "checkout") == before + 1
    reveal = agentclient.request(
        path, {"op": "checkout", "ref": "agentco/fw", "reason": "T-2", "field": "username", "hold": False}
    )
    assert reveal["value"] == "root" and reveal["expires_at"] is None
    assert _events(admin, "reveal") >= 1


def test_errors_come_back_as_the_library_s_errors(served: tuple[agent.Agent, Path, Clock], admin: Vault) -> None:
    _server, path, _clock = served
    with pytest.raises(NotFound, match="no secret 'agentco/nope'"):
        agentclient.request(path, {"op": "checkout", "ref": "agentco/nope", "reason": "T-1", "field": "password"})
    with pytest.raises(InvalidInput, match="requires a reason"):
        agentclient.request(path, {"op": "checkout", "ref": "agentco/fw", "field": "password"})
    with pytest.raises(InvalidInput, match="bad duration"):
        order = {"op": "checkout", "ref": "agentco/fw", "reason": "x", "field": "password", "hold_for": "9y"}
        agentclient.request(path, order)
    with pytest.raises(InvalidInput, match="unknown agent request"):
        agentclient.request(path, {"op": "export-keys"})
    with pytest.raises(InvalidInput, match="has no ref"):
        agentclient.request(path, {"op": "checkout", "ref": 7, "field": "password"})
    assert _events(admin, "checkout") == 0  # nothing was revealed by any of them


def test_a_bug_in_the_agent_is_reported_without_its_text(admin: Vault) -> None:
    class Broken:
        engineer_name = ADMIN

        def checkout(self, *_args: object, **_kwargs: object) -> None:
            raise RuntimeError(PASSWORD)  # an unexpected exception quoting a secret

    server = agent.Agent(Broken(), dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1), Clock())
    answer = server.answer({"op": "checkout", "ref": "agentco/fw", "field": "password"})
    assert answer == {"ok": False, "error": "VaultError", "message": "internal error in the agent (RuntimeError)"}
    assert PASSWORD not in repr(answer)


def test_the_agent_ends_at_its_expiry_and_removes_nothing_it_should_keep(
    admin: Vault, home: Path
) -> None:
    clock = Clock()
    path = Path(agentclient.socket_path(admin.store.url, ADMIN))
    server = agent.Agent(admin, clock() + dt.timedelta(seconds=30), clock)
    listener = agent.bind(path)
    thread = threading.Thread(target=server.serve, args=(listener,), daemon=True)
    thread.start()
    assert agentclient.request(path, {"op": "ping"})["engineer"] == ADMIN
    clock.now += dt.timedelta(seconds=31)
    thread.join(timeout=5)
    assert not thread.is_alive(), "the agent still serves after its session expired"
    listener.close()
    with pytest.raises(agentclient.AgentAbsent):
        agentclient.request(path, {"op": "ping"})


def test_a_locked_session_stops_the_agent(served: tuple[agent.Agent, Path, Clock], admin: Vault) -> None:
    server, path, _clock = served
    admin.lock()  # the vault object forgets its keys: the next request fails with Locked
    with pytest.raises(Locked):
        agentclient.request(path, {"op": "checkout", "ref": "agentco/fw", "reason": "T-1", "field": "password"})
    assert server.running is False


def test_stop_request_ends_the_loop(served: tuple[agent.Agent, Path, Clock]) -> None:
    server, path, _clock = served
    assert agentclient.request(path, {"op": "stop"}) == {"ok": True}
    assert server.running is False


def test_a_second_agent_on_the_same_socket_is_refused(served: tuple[agent.Agent, Path, Clock]) -> None:
    _server, path, _clock = served
    with pytest.raises(Exception, match="already running"):
        agent.bind(path)


def test_a_stale_socket_file_is_replaced(home: Path, admin: Vault) -> None:
    path = Path(agentclient.socket_path(admin.store.url, ADMIN))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(path))
    stale.close()  # the file stays, nobody listens
    listener = agent.bind(path)
    try:
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    finally:
        listener.close()


def test_the_socket_directory_must_be_private(home: Path) -> None:
    run = home / "run"
    run.mkdir(mode=0o755)
    run.chmod(0o755)
    with pytest.raises(ConfigurationError, match="not a private directory"):
        agentclient.runtime_dir()
    run.chmod(0o700)
    assert Path(agentclient.runtime_dir()) == run


def test_a_socket_path_that_cannot_fit_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / ("x" * 90)))
    with pytest.raises(ConfigurationError, match="too long"):
        agentclient.socket_path("sqlite:///v.db", "alice")


def test_an_absent_agent_is_absent(home: Path) -> None:
    with pytest.raises(agentclient.AgentAbsent):
        agentclient.request(home / "nobody.sock", {"op": "ping"})


def test_a_silent_peer_is_no_agent(home: Path) -> None:
    path = home / "mute.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.fspath(path))
    listener.listen(1)

    def close_at_once() -> None:
        conn, _ = listener.accept()
        conn.close()

    thread = threading.Thread(target=close_at_once, daemon=True)
    thread.start()
    try:
        with pytest.raises((agentclient.AgentAbsent, StoreUnavailable)):  # EOF, or a reset while sending
            agentclient.request(path, {"op": "ping"})
    finally:
        thread.join(timeout=5)
        listener.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_gets_no_answer(served: tuple[agent.Agent, Path, Clock], admin: Vault) -> None:
    """Even if the directory and socket were opened up, a peer of another uid is refused."""
    _server, path, _clock = served
    for folder in (path.parent, path.parent.parent):
        folder.chmod(0o755)
    path.chmod(0o666)
    before = _events(admin, "checkout")
    pid = os.fork()
    if pid == 0:  # the child: become nobody, ask for the password
        code = 3
        try:
            os.setuid(65534)
            agentclient.request(path, {"op": "checkout", "ref": "agentco/fw", "reason": "T-1", "field": "password"})
            code = 1  # an answer came back
        except (agentclient.AgentAbsent, StoreUnavailable):
            code = 0  # the agent closed the connection without a word
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    for folder in (path.parent, path.parent.parent):
        folder.chmod(0o700)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _events(admin, "checkout") == before
