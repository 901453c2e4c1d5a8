"""What CLI tests share: a runner, the error contract, an in-memory keyring, and a
workspace that makes a vault through the CLI and looks at it through the library.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import keyring
import keyring.errors
import pytest
from click.testing import CliRunner, Result
from memory_keyring import MemoryKeyring
from vault.cli.main import cli

from vault import Vault
from vault.service.sessions import MemorySessionStore

ADMIN, ADMIN_PASS = "root", "correct horse ✓ admin"
ENGINEER, ENGINEER_PASS = "alice", "alice's own passphrase"
CODE = re.compile(r"CV1-[A-Z0-9-]+")
FINGERPRINT = re.compile(r"\b[0-9a-f]{4}(?: [0-9a-f]{4}){7}\b")


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Invoke `credvault ARGS...` in this process."""
    return CliRunner().invoke(cli, list(args), input=input, env=env)


def ok(result: Result) -> Result:
    """Assert that a command succeeded, showing its output if not."""
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def assert_clean_error(result: Result, *never: str, code: int = 1) -> None:
    """The error contract: exit code, error and hint lines, no traceback, nothing secret."""
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.startswith("credvault: error: ") or "\ncredvault: error: " in result.stderr, result.stderr
    assert "\nhint: " in result.stderr, result.stderr
    assert "Traceback" not in result.output
    for secret in never:
        assert secret not in result.output


@dataclass
class Workspace:
    """A vault made through the CLI, and the passphrase files of its people."""

    url: str
    tmp: Path
    passfiles: dict[str, str] = field(default_factory=dict)
    passphrases: dict[str, str] = field(default_factory=dict)

    def passfile(self, name: str, passphrase: str) -> str:
        path = self.tmp / f"{name}.pass"
        path.write_text(passphrase + "\n", encoding="utf-8")
        path.chmod(0o600)  # a passphrase file others may read is refused
        self.passfiles[name], self.passphrases[name] = str(path), passphrase
        return str(path)

    def home(self, name: str) -> dict[str, str]:
        """The environment of `name`'s own machine (their own config directory)."""
        return {"CREDVAULT_HOME": str(self.tmp / f"home-{name}")}

    def admin(self, *args: str, input: str | None = None) -> Result:
        return run("--db", self.url, "--as", ADMIN, *args, input=input)

    def host(self, *args: str, input: str | None = None) -> Result:
        """The admin where the database is (through a team server: its host, with the server key file)."""
        return self.admin(*args, input=input)

    def as_engineer(self, name: str, *args: str, input: str | None = None) -> Result:
        return run(*args, input=input, env=self.home(name))

    def reach(self, name: str) -> tuple[str, ...]:
        """What ``name`` passes on their machine to reach the vault before they hold a key (``engineer
        enroll``): the database here; nothing through a team server (their pin, made by this call)."""
        return ("--db", self.url)

    def init(self) -> Result:
        result = ok(
            run("--db", self.url, "init", "--admin", ADMIN, "--passphrase-file", self.passfile(ADMIN, ADMIN_PASS))
        )
        ok(self.admin("unlock", "--passphrase-file", self.passfiles[ADMIN]))
        return result

    def enrol(self, name: str = ENGINEER, passphrase: str = ENGINEER_PASS) -> str:
        """Invite, enrol (on their machine), confirm and unlock an engineer; returns the fingerprint."""
        code = CODE.search(ok(self.admin("engineer", "invite", name)).stdout)
        assert code is not None
        enrolled = ok(
            self.as_engineer(
                name,
                *self.reach(name),
                "engineer",
                "enroll",
                name,
                "--passphrase-file",
                self.passfile(name, passphrase),
                input=code.group(0) + "\n",  # typed at the prompt: never in argv
            )
        )
        fingerprint = FINGERPRINT.search(enrolled.stdout)
        assert fingerprint is not None
        ok(self.admin("engineer", "confirm", name, "--fingerprint", fingerprint.group(0)))
        ok(self.as_engineer(name, "unlock", "--passphrase-file", self.passfiles[name]))
        return fingerprint.group(0)

    @property
    def target(self) -> str:
        """What an engineer's agent serves here (its socket is keyed by it): the database URL."""
        return self.url

    def agent_socket(self, name: str = ADMIN) -> str:
        """The socket path of ``name``'s agent on their machine (``agentclient.socket_path``): the
        admin's is the test's CREDVAULT_HOME, an engineer's their own home."""
        from vault.service import agentclient

        if name == ADMIN:
            return agentclient.socket_path(self.target, name)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CREDVAULT_HOME", self.home(name)["CREDVAULT_HOME"])
            return agentclient.socket_path(self.target, name)

    def admin_env(self) -> dict[str, str] | None:
        """The environment ``admin`` runs in: the test's own (CREDVAULT_HOME is the admin's machine)."""
        return None

    def elsewhere(self) -> tuple[str, ...]:
        """Global options naming the same vault with another spelling (another agent socket)."""
        folder, _, file = self.url.rpartition("/")
        return ("--db", f"{folder}/./{file}")

    def copied(self) -> None:
        """The workspace's files are in place (a snapshot's copy): nothing to do here (a served one serves them)."""

    def close(self) -> None:
        """The workspace's files are to be copied: nothing holds them here (a served one stops serving)."""

    def open(self, name: str | None = ADMIN, clock: Callable[[], dt.datetime] | None = None) -> Vault:
        """The library on the vault's database as ``name``, locked (``clock``: the wall's if None)."""
        if clock is None:
            return Vault.open(self.url, engineer=name, sessions=MemorySessionStore())
        return Vault.open(self.url, engineer=name, sessions=MemorySessionStore(), clock=clock)

    def library(self, name: str = ADMIN) -> Vault:
        """The library's view of the vault as `name`, unlocked with their passphrase."""
        vault = self.open(name)
        vault.engineers.unlock(name, self.passphrases[name])
        return vault

    def admin_home(self) -> Path:
        """The admin's config folder (what their machine remembers: audit heads, pins)."""
        return self.tmp / "home"  # conftest's isolated_home: where `init` ran

    @contextlib.contextmanager
    def at_admins_machine(self) -> Iterator[Path]:
        """``CREDVAULT_HOME`` is the admin's config folder inside (``AuditMemory.load`` reads theirs)."""
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CREDVAULT_HOME", str(self.admin_home()))
            yield self.admin_home()

    def session_text(self, backend: MemoryKeyring, name: str) -> tuple[tuple[str, str], dict[str, object]]:
        """The keyring entry holding `name`'s unlocked session, and its JSON."""
        for key, text in backend.items.items():
            if key[1].endswith(f"/{name}"):
                return key, json.loads(text)
        raise AssertionError(f"no session for {name}")


# -- vaults built once per module and copied into each test (building one takes about a second) --


class Snapshots:
    """Workspaces built once per module by a recipe, then copied (files, config, keyring).

    With ``url`` (a server database), every copy shares that one database: only the
    homes and the keyring are copied.
    """

    def __init__(
        self,
        factory: pytest.TempPathFactory,
        url: str | None = None,
        make: Callable[[str, Path], Workspace] = Workspace,
    ) -> None:
        self.factory = factory
        self.url = url
        self.make = make  # the workspace's kind (served_workspace.served_snapshots: through a team server)
        self.built: dict[str, tuple[Path, dict[tuple[str, str], str], dict[str, str]]] = {}

    def clone(self, recipe: Callable[[Workspace], None], tmp: Path, backend: MemoryKeyring) -> Workspace:
        if recipe.__name__ not in self.built:
            self.built[recipe.__name__] = self._build(recipe)
        base, items, passphrases = self.built[recipe.__name__]
        for entry in base.iterdir():
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, tmp / entry.name)
        ws = self.make(self.url or f"sqlite:///{tmp / 'vault.db'}", tmp)
        for name, passphrase in passphrases.items():
            ws.passfile(name, passphrase)
        for path in tmp.glob("home*/config.json"):
            path.write_text(json.dumps({**json.loads(path.read_text()), "db_url": ws.url}), encoding="utf-8")
        for path in tmp.glob("home*/pins.json"):  # the vault pinned at the built URL: now at the copy's
            text = path.read_text(encoding="utf-8").replace(str(base / "vault.db"), str(tmp / "vault.db"))
            path.write_text(text, encoding="utf-8")
        backend.items.update(items)
        ws.copied()
        return ws

    def _build(self, recipe: Callable[[Workspace], None]) -> tuple[Path, dict[tuple[str, str], str], dict[str, str]]:
        base = self.factory.mktemp(recipe.__name__)
        backend, previous = MemoryKeyring(), keyring.get_keyring()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CREDVAULT_HOME", str(base / "home"))
            keyring.set_keyring(backend)
            ws = self.make(self.url or f"sqlite:///{base / 'vault.db'}", base)
            try:
                recipe(ws)
            finally:
                keyring.set_keyring(previous)
                ws.close()
        return base, dict(backend.items), dict(ws.passphrases)
