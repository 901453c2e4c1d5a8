"""Fixtures for CLI tests: an isolated home, an in-memory keyring, fast Argon2, a vault.

Every test gets its own CREDVAULT_HOME (so no real config or data directory is
touched), a keyring backend that lives in memory (so `unlock` works without an OS
keyring), and the Argon2 floor instead of the default parameters (the floor is still
OWASP's minimum; only the speed differs). Commands run through click's CliRunner;
what they stored is then checked through the library, not by parsing their output.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
import served_workspace
from cli_workspace import ADMIN, Snapshots, Workspace, ok
from memory_keyring import MemoryKeyring
from served_workspace import CliServer, ServedWorkspace

import vault.crypto.keyrecord as keyrecord
from vault.errors import ConfigurationError
from vault.service import agentclient


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CREDVAULT_HOME", str(home))
    for name in ("CREDVAULT_DB", "CREDVAULT_ENGINEER", "CREDVAULT_SESSION_TTL", "CREDVAULT_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(keyrecord, "DEFAULT_PARAMS", keyrecord.FLOOR)
    return home


@pytest.fixture(autouse=True)
def fake_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """An empty workspace on SQLite (nothing initialised yet)."""
    return Workspace(url=f"sqlite:///{tmp_path / 'vault.db'}", tmp=tmp_path)


def _populate(workspace: Workspace) -> Workspace:
    workspace.init()
    ok(workspace.admin("client", "add", "acme", "--name", "Acme Ltd"))
    secret = ("acme/fw01-admin", "--kind", "equipment", "--host", "10.0.0.1", "--username", "netadmin")
    ok(workspace.admin("secret", "add", *secret, "--password-stdin", input="fw-Passw0rd-stdin\n"))
    workspace.enrol()
    return workspace


@pytest.fixture
def ready(workspace: Workspace) -> Workspace:
    """A vault with an unlocked admin, client acme with one secret, and alice (no grant)."""
    return _populate(workspace)


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    """A team server on loopback TLS for this module, serving one test's vault at a time (served_workspace.py)."""
    with served_workspace.cli_server(tmp_path_factory.mktemp("cli-server")) as server:
        yield server


@pytest.fixture(scope="module")
def served_snapshots(tmp_path_factory: pytest.TempPathFactory, cli_server: CliServer) -> Snapshots:
    """Workspaces through ``cli_server``, built once per module and recipe, then copied per test."""
    return served_workspace.served_snapshots(tmp_path_factory, cli_server)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "https"])
def workspace_any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    """An empty workspace (nothing initialised yet) on SQLite, on PostgreSQL, and through a real team
    server (its ``init`` makes the server key and serves the vault from the module's ``cli_server``)."""
    if request.param == "https":
        server: CliServer = request.getfixturevalue("cli_server")
        return served_workspace.ServedWorkspace(f"sqlite:///{tmp_path / 'vault.db'}", tmp_path, server=server)
    return Workspace(url=request.getfixturevalue("empty_databases")(request.param), tmp=tmp_path)


@pytest.fixture(params=["sqlite", "https"])
def ready_or_served(request: pytest.FixtureRequest, tmp_path: Path, fake_keyring: MemoryKeyring) -> Workspace:
    """``ready`` on SQLite, and through a real team server (``ready_any_engine`` without PostgreSQL)."""
    if request.param == "https":
        snapshots: Snapshots = request.getfixturevalue("served_snapshots")
        return snapshots.clone(_populate, tmp_path, fake_keyring)
    return _populate(Workspace(url=f"sqlite:///{tmp_path / 'vault.db'}", tmp=tmp_path))


@pytest.fixture(scope="module", params=["sqlite", "https"])
def snapshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Snapshots:
    """A module's workspaces built once per recipe and copied per test (``Snapshots``): on SQLite, and
    through a real team server (``served_snapshots``). A test that needs what a server never serves
    says so with ``served.only_local``; a command not served yet: ``only_local(ws, "not served yet: ...")``."""
    if request.param == "https":
        served: Snapshots = request.getfixturevalue("served_snapshots")
        return served
    return Snapshots(tmp_path_factory)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "https"])
def ready_any_engine(request: pytest.FixtureRequest, tmp_path: Path, fake_keyring: MemoryKeyring) -> Workspace:
    """The same as ``ready``, on SQLite, on PostgreSQL, and through a real team server on loopback TLS
    (``served_workspace.ServedWorkspace``: the admin and alice with no database; a test that needs
    what a server never serves says so with ``served.only_local``)."""
    if request.param == "https":
        snapshots: Snapshots = request.getfixturevalue("served_snapshots")
        return snapshots.clone(_populate, tmp_path, fake_keyring)
    url = request.getfixturevalue("empty_databases")(request.param)
    return _populate(Workspace(url=url, tmp=tmp_path))


@pytest.fixture(params=["sqlite", "https"])
def short_workspace(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """An empty workspace in a folder with a short path, on SQLite and through a real team server
    (``cli_server``): an agent's socket lives in its home's ``run/`` folder and its path must fit in
    100 bytes, which a pytest ``tmp_path`` does not leave room for. ``CREDVAULT_HOME`` is short too
    (the embedded mode's machine). The admin's agent, if one still runs, is stopped at the end."""
    with tempfile.TemporaryDirectory(prefix="cva") as folder:
        tmp = Path(folder)
        monkeypatch.setenv("CREDVAULT_HOME", str(tmp / "home"))
        url = f"sqlite:///{tmp / 'vault.db'}"
        if request.param == "https":
            ws: Workspace = ServedWorkspace(url, tmp, server=request.getfixturevalue("cli_server"))
        else:
            ws = Workspace(url=url, tmp=tmp)
        try:
            yield ws
        finally:
            for name in [ADMIN, *ws.passfiles]:
                with contextlib.suppress(agentclient.AgentAbsent, ConfigurationError):
                    agentclient.request(ws.agent_socket(name), {"op": "stop"})
            ws.close()
