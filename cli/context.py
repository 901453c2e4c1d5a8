"""What every command shares: the global options, and a Vault opened on first use.

``AppContext`` is click's context object (``ctx.obj``). It resolves the database URL
and the acting engineer the way the library documents (option, then environment, then
the local config file, then the default), and opens ``vault.Vault`` only when a command
asks for it, so that ``--help`` and usage errors never import SQLAlchemy.

Sessions come from the OS keyring, except when the global ``--passphrase-file`` is
given: the command then unlocks for itself alone, in memory, and leaves no session
behind (the automation path; it needs no keyring).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from vault.errors import ConfigurationError, InvalidInput, Locked, StoreUnavailable
from vault.service import config

if TYPE_CHECKING:
    from vault import Vault
    from vault.service.records import Revealed
    from vault.service.sessions import SessionStore, UnlockedSession

SESSION_TTL_ENV = "CREDVAULT_SESSION_TTL"
SERVER_KEY_ENV = "CREDVAULT_SERVER_KEY_FILE"
INSECURE_DB_ENV = "CREDVAULT_INSECURE_DB"  # as vault.storage.engine.INSECURE_DB_ENV
ALLOW_READABLE_ENV = "CREDVAULT_ALLOW_READABLE"  # as vault.storage.engine.ALLOW_READABLE_ENV
DEFAULT_SESSION_TTL = "15m"


def strip_newline(text: str) -> str:
    """``text`` without one trailing newline (LF or CRLF); nothing else is stripped."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")


def interactive() -> bool:
    """Whether a person can answer a prompt (standard input and error are terminals)."""
    import sys

    return sys.stdin.isatty() and sys.stderr.isatty()


def read_private_file(path: Path, what: str = "passphrase file") -> str:
    """The text of a file holding a secret (a passphrase, an enrolment code, recovery
    shares), refused when other users may read it: what it holds would not be secret."""
    import stat

    try:
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
            raise InvalidInput(
                f"the {what} {path} can be read by other users (mode {info.st_mode & 0o777:o})",
                hint=f"run `chmod 600 {path}` (and change the secret it held if others could read it)",
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise InvalidInput(
            f"cannot read the {what}", hint="check the path, its permissions, and that it is UTF-8 text"
        ) from None
    return text


def read_passphrase_file(path: Path) -> str:
    """The file's text with one trailing newline removed (refused if others may read it)."""
    return strip_newline(read_private_file(path))


def ask_passphrase(path: Path | None, *, new: bool = False, prompt: str = "Passphrase") -> str:
    """From ``path`` if given, else a hidden prompt (asked twice when ``new``)."""
    if path is not None:
        return read_passphrase_file(path)
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=new, err=True))


@dataclass
class AppContext:
    """The global options of one invocation and the Vault it opens lazily."""

    db: str | None = None
    as_engineer: str | None = None
    server: str | None = None
    server_key: Path | None = None  # on the server's host: an admin's work recorded in format 3
    passphrase_file: Path | None = None
    key_file: Path | None = None  # a service identity's key file (vault/service/servicekeys.py)
    trust_new_vault: bool = False
    _vaults: list[Vault] = field(default_factory=list)

    # -- resolution ------------------------------------------------------------------

    def db_url(self) -> str:
        return config.resolve_db_url(self.db)

    def server_url(self) -> str | None:
        """The team server selected (``--server``, CREDVAULT_SERVER, the config file), if any;
        both ``--server`` and ``--db`` is refused."""
        if self.server and self.db:
            raise InvalidInput("give --server or --db, not both", hint="--server URL is the team server")
        return config.resolve_server(self.server, self.db)

    def target(self) -> str:
        """What the selected engineer's agent serves: the team server, else the database URL."""
        return self.server_url() or self.db_url()

    def check_target(self, target: str) -> None:
        """Refuse a target this machine has not pinned, before any passphrase is typed."""
        if target == self.server_url():
            from vault.service.serverpins import ServerPins

            ServerPins.load().get(target)
        else:
            self.open(url=target)

    def remote(self, engineer: str | None, sessions: SessionStore) -> Vault:
        """The engineer's vault through the selected (pinned) team server."""
        from vault.service.remote import RemoteVault
        from vault.service.serverpins import ServerPins

        server = self.server_url()
        assert server is not None
        vault = RemoteVault(ServerPins.load().get(server), engineer=engineer, sessions=sessions)
        self._vaults.append(cast("Vault", vault))
        return cast("Vault", vault)

    def engineer(self) -> str | None:
        return config.resolve_engineer(self.as_engineer)

    def require_engineer(self) -> str:
        """The selected engineer's name, checked: commands that open nothing with it (lock,
        agent stop/status) still echo it and hash it into paths."""
        from vault.service.validation import engineer_name

        name = self.engineer()
        if not name:
            raise Locked(
                "no engineer is selected on this machine",
                hint="pass --as NAME, set CREDVAULT_ENGINEER, or run `credvault unlock NAME`",
            )
        return engineer_name(name)

    def passphrase(self, local: Path | None = None, *, new: bool = False, prompt: str = "Passphrase") -> str:
        """A command's own --passphrase-file wins over the global one; else a prompt."""
        return ask_passphrase(local or self.passphrase_file, new=new, prompt=prompt)

    @staticmethod
    def session_ttl(text: str | None) -> dt.timedelta:
        from vault.service.validation import duration

        return duration(text or os.environ.get(SESSION_TTL_ENV) or DEFAULT_SESSION_TTL)

    # -- opening the vault ---------------------------------------------------------------

    def open(
        self, *, engineer: str | None = None, sessions: SessionStore | None = None, url: str | None = None
    ) -> Vault:
        """A Vault on the resolved database; closed when the command ends."""
        from vault import Vault

        if url is None and self.server_url() is not None:
            raise ConfigurationError(
                "this command is not served through a team server yet",
                hint="run it where the vault's database is, with --db URL (an admin's machine or the server's host)",
            )
        url = url or self.db_url()
        vault = Vault.open(url, engineer=engineer, sessions=sessions)
        self._vaults.append(vault)
        key_file = self.server_key or os.environ.get(SERVER_KEY_ENV)
        if key_file:  # on the team server's host: an admin's work in format 3, checkouts through the server's pipeline
            from vault.server.host import on_host
            from vault.server.keyfile import read_server_keys

            on_host(vault, read_server_keys(key_file))
        self.check_pin(url, vault)
        return vault

    def check_pin(self, url: str, vault: Vault, *, trust: bool = False) -> None:
        """Refuse a database whose vault is not the one this machine pinned for ``url``
        (or a new URL while others are pinned), unless --trust-new-vault (or ``trust``:
        the user just created or restored this vault). A database that holds no vault
        yet, or cannot be read, is left to the command, which fails on its own."""
        from vault.errors import StoreUnavailable, TamperedSchema

        try:
            try:
                vault_id = vault.vault_id().hex()
            except TamperedSchema:
                # The pin is still checked: the command then refuses the foreign objects
                # itself, or (status, audit verify) names them.
                with vault.store.inspecting():
                    vault_id = vault.vault_id().hex()
        except StoreUnavailable:
            return
        warning = config.VaultPins.load().check(url, vault_id, trust_new=trust or self.trust_new_vault)
        if warning:
            click.echo(f"credvault: warning: {warning}", err=True)

    def keyring_vault(self, engineer: str | None = None) -> Vault:
        """A Vault whose sessions live in the OS keyring (unlock, lock)."""
        from vault.service.sessions import KeyringSessionStore

        if self.server_url() is not None:
            return self.remote(engineer or self.engineer(), KeyringSessionStore())
        return self.open(engineer=engineer or self.engineer(), sessions=KeyringSessionStore())

    def session_vault(self) -> Vault:
        """A Vault acting as the selected engineer, unlocked or ready to use a session."""
        if self.key_file is not None:
            return self._service_vault(self.key_file)
        if self.passphrase_file is None:
            name = self.engineer()
            path = self._agent_path(name)
            if path is not None:  # the everyday calls go to the agent (cli/agentvault.py)
                from .agentvault import AgentVault

                return cast("Vault", AgentVault(path, lambda: self._beside_the_agent(name)))
            return self._keyring_session_vault(name)
        from vault.service.sessions import MemorySessionStore

        name = self.require_engineer()
        if self.server_url() is not None:
            vault = self.remote(name, MemorySessionStore())
        else:
            vault = self.open(engineer=name, sessions=MemorySessionStore())
        vault.engineers.unlock(
            name, read_passphrase_file(self.passphrase_file), remember=False, org_memory=config.OrgKeyMemory()
        )
        return vault

    def _service_vault(self, key_file: Path) -> Vault:
        """The service identity of ``key_file`` through its team server, unlocked for this command
        alone (no keyring, no agent, nothing kept)."""
        from vault.service.remote import RemoteVault
        from vault.service.serverpins import ServerPins
        from vault.service.servicekeys import ServiceKeyFile
        from vault.service.sessions import MemorySessionStore

        if self.db:
            raise InvalidInput(
                "a key file acts through a team server, not --db", hint="drop --db, or give --server URL"
            )
        found = ServiceKeyFile.load(key_file)
        if self.passphrase_file is not None or (self.as_engineer and self.as_engineer != found.record.name):
            raise InvalidInput(
                "give --key-file alone: it names its service identity and needs no passphrase",
                hint="drop --as and --passphrase-file",
            )
        server = self.server_url() or found.server
        vault = RemoteVault(ServerPins.load().get(server), engineer=found.record.name, sessions=MemorySessionStore())
        self._vaults.append(cast("Vault", vault))
        vault.engineers.unlock_key_file(key_file)
        return cast("Vault", vault)

    def _keyring_session_vault(self, name: str | None) -> Vault:
        from vault.service.sessions import KeyringSessionStore

        sessions = AgentAwareSessions(KeyringSessionStore(), self, name)
        if self.server_url() is not None:
            return self.remote(name, sessions)
        return self.open(engineer=name, sessions=sessions)

    def _beside_the_agent(self, name: str | None) -> Vault:
        """A Vault for a call the agent does not serve: the keyring's session if there is
        one, else (at a terminal) the passphrase asked once for this command alone; the
        agent lends no key. Not at a terminal: ``Locked``, saying what to do."""
        vault = self._keyring_session_vault(name)
        if not name or not interactive():
            return vault
        try:
            vault.engineers.whoami()  # a usable session in this process? (no audit event)
        except (Locked, ConfigurationError):
            from vault.service.sessions import MemorySessionStore

            passphrase = ask_passphrase(None, prompt=f"Passphrase for {name} (this command runs outside the agent)")
            if self.server_url() is not None:
                vault = self.remote(name, MemorySessionStore())
            else:
                vault = self.open(engineer=name, sessions=MemorySessionStore())
            vault.engineers.unlock(name, passphrase, remember=False, org_memory=config.OrgKeyMemory())
        return vault

    def _agent_path(self, name: str | None) -> str | None:
        """The socket of the selected engineer's running agent, or None."""
        from vault.service import agentclient

        if not name:
            return None
        try:
            path = agentclient.socket_path(self.target(), name)
            agentclient.request(path, {"op": "ping"}, timeout=agentclient.CONNECT_TIMEOUT)
        except (agentclient.AgentAbsent, ConfigurationError, StoreUnavailable):
            return None
        return path

    def agent_checkout(
        self, ref: str, *, reason: str | None, field: str, version: int | None, hold_for: str | None
    ) -> Revealed | None:
        """The checkout done by the selected engineer's running agent, or None if none runs.

        Only when no --passphrase-file asks this command to unlock for itself. The agent
        runs the same audited ``Vault.checkout``; its errors are raised here as they are.
        """
        name = self.engineer()
        if self.passphrase_file is not None or self.key_file is not None or not name:
            return None
        from vault.service import agentclient
        from vault.service.records import Revealed

        answer = agentclient.checkout(
            self.target(), name, ref=ref, reason=reason, field=field, version=version, hold_for=hold_for or None
        )
        if answer is None:
            return None
        expires = answer.get("expires_at")
        return Revealed(
            ref=str(answer["ref"]),
            field=str(answer["field"]),
            version=int(answer["version"]),
            value=str(answer["value"]),
            expires_at=dt.datetime.fromisoformat(expires) if isinstance(expires, str) else None,
            must_change=answer.get("must_change") is True,
        )

    def close(self) -> None:
        while self._vaults:
            self._vaults.pop().close()


class AgentAwareSessions:
    """The keyring's sessions, saying what to do when the session is in an agent instead.

    The agent lends no key: a command the fast path (cli/fast/) does not serve through
    it runs in this process and needs the session here (``unlock --keyring``) or its
    own unlock (``--passphrase-file``)."""

    def __init__(self, inner: SessionStore, app: AppContext, name: str | None) -> None:
        self.inner, self.app, self.name = inner, app, name

    def put(self, session: UnlockedSession) -> None:
        self.inner.put(session)

    def delete(self, vault_id: bytes, name: str) -> bool:
        return self.inner.delete(vault_id, name)

    def get(self, vault_id: bytes, name: str) -> str | None:
        try:
            text = self.inner.get(vault_id, name)
        except ConfigurationError:
            if not self._agent_runs(name):
                raise
            text = None
        if text is None and self._agent_runs(name):
            raise Locked(
                f"the agent holds the session of {name!r}, and this command runs in this process",
                hint="the agent serves the everyday commands; for this one run it at a terminal (it asks the "
                "passphrase), run `credvault unlock --keyring`, or pass --passphrase-file PATH",
            )
        return text

    def _agent_runs(self, name: str) -> bool:
        from .agent import agent_running

        return agent_running(self.app, name)


pass_app = click.make_pass_decorator(AppContext)
