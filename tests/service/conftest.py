"""Helpers of the service tests.

* ``db`` — direct access to the tables of ``team``'s vault, as a reader or a writer of
  the database who is not an admin.
* ``reopen(vault)`` — a new Vault object for the same engineer and session store, so
  that no key cached by the old object hides what the database now says.
* ``shared`` — one vault per engine and test module: each test takes fresh names from
  it (``shared.name("acme")``), so tests do not see each other's clients or engineers,
  and moves its clock only inside ``with shared.later(minutes=11):``. Creating a
  database per test costs about half a second on PostgreSQL; sharing one keeps the
  suite within its time budget.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import agent_harness
import pytest
from served import ServedTeam, make_test_ca, served_team
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import Engine, make_url

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.service import agentclient
from vault.service.agent import Agent, bind
from vault.service.remote import RemoteVault
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m
from vault.storage.engine import Store

PG_URL = os.environ.get("CREDVAULT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REASON = "T-1 test"
ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
LONG_SESSION = dt.timedelta(hours=12)


def _reveal(vault: Vault, ref: str, field: str = "password", **kwargs: Any) -> str:
    """A library reveal with the reason the default client policy asks for."""
    return vault.checkouts.reveal(ref, field, reason=REASON, **kwargs)


@pytest.fixture
def reveal() -> Callable[..., str]:
    """``reveal(vault, "acme/fw01", field="password", version=None)``."""
    return _reveal


@dataclass
class Db:
    """Direct access to the vault's tables, bypassing every check of the service."""

    store: Store

    def run(self, *statements: Any) -> None:
        with self.store.transaction() as s:
            for statement in statements:
                s.execute(statement)

    def all(self, statement: Any) -> list[Any]:
        with self.store.transaction() as s:
            return list(s.execute(statement).all())

    def scalar(self, statement: Any) -> Any:
        with self.store.transaction() as s:
            return s.scalar(statement)

    def counts(self) -> dict[str, int]:
        """Rows per table, for every table in the database (not only the models')."""
        engine: Engine = self.store.engine
        with engine.connect() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(text(_quoted(engine, name)))).scalar() or 0)
                for name in sorted(inspect(engine).get_table_names())
            }

    def rows(self) -> list[tuple[str, dict[str, Any]]]:
        """(table, {column: value}) for every row of every table."""
        engine: Engine = self.store.engine
        out = []
        with engine.connect() as conn:
            for name in sorted(inspect(engine).get_table_names()):
                result = conn.execute(text(f"SELECT * FROM {_quoted(engine, name)}"))
                out.extend((name, dict(row._mapping)) for row in result)
        return out

    def engineer_id(self, name: str) -> int:
        return int(self.scalar(select(m.Engineer.id).where(m.Engineer.name == name)))

    def newest_client_id(self) -> int:
        return int(self.scalar(select(func.max(m.Client.id))))

    def secret_ids(self, client_id: int) -> list[int]:
        return [
            r[0] for r in self.all(select(m.Secret.id).where(m.Secret.client_id == client_id).order_by(m.Secret.id))
        ]


def _quoted(engine: Engine, name: str) -> str:
    return engine.dialect.identifier_preparer.quote(name)


@pytest.fixture
def db(team) -> Db:  # type: ignore[no-untyped-def]
    return Db(team.admin.store)


@pytest.fixture
def reopen() -> Iterator[Callable[[Vault], Vault]]:
    """A new Vault object for the same engineer, clock and session store: no cached keys.

    It shares the old object's database connection pool, which caches nothing of the vault.
    A ``RemoteVault`` made so is closed after the test (an open connection held the team
    server's shutdown for its 20 s grace at the end of a module).
    """
    remote: list[RemoteVault] = []

    def _reopen(vault: Vault) -> Vault:
        if isinstance(vault, RemoteVault):  # team3's HTTPS mode: the same pin, session store and clock
            keys = vault.keyholder
            again = RemoteVault(vault.pin, engineer=keys.name, sessions=keys.sessions, clock=keys.clock)
            remote.append(again)
            return again  # type: ignore[return-value]
        again = Vault(
            vault.store, engineer=vault.engineer_name, sessions=vault.sessions, clock=vault.clock, kdf_params=FLOOR
        )
        for part in ("server_key", "host_layer", "host_server"):  # on the server's host (team3): the key file too
            setattr(again.core, part, getattr(vault.core, part))
        return again

    yield _reopen
    for vault in remote:
        vault.close()


# -- one vault per engine and module ------------------------------------------------------


@dataclass
class Shared:
    """A vault with an unlocked admin; tests take unique names and move the clock only with ``later``."""

    url: str
    admin: Vault
    db: Db
    now: dt.datetime
    passphrases: dict[str, str] = field(default_factory=dict)
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def clock(self) -> dt.datetime:
        return self.now

    @contextlib.contextmanager
    def later(self, **delta: float) -> Iterator[None]:
        """Move the clock forward for the block, then back, so later tests see the usual time.

        Sessions of the shared vault last 12 hours; move it further only around calls
        that need no admin session.
        """
        saved = self.now
        self.now = saved + dt.timedelta(**delta)
        try:
            yield
        finally:
            self.now = saved

    def name(self, base: str) -> str:
        """A name no other test of this module uses: ``acme`` → ``acme-7``."""
        return f"{base}-{next(self._counter)}"

    def open(self, name: str | None = None) -> Vault:
        """A fresh, locked Vault object for ``name`` (on the admin's connection pool)."""
        return Vault(self.admin.store, engineer=name, clock=self.clock, kdf_params=FLOOR, sessions=MemorySessionStore())

    def engineer(self, base: str, *, role: str = "engineer") -> Vault:
        """Invite, enrol, confirm and unlock a new engineer named ``base-N``."""
        name = self.name(base)
        passphrase = f"pass of {name}"
        code = self.admin.engineers.invite(name, role=role)
        mine = self.open(name)
        self.admin.engineers.confirm(name, mine.engineers.enroll(name, code, passphrase))
        mine.engineers.unlock(name, passphrase, ttl=LONG_SESSION)
        self.passphrases[name] = passphrase
        return mine

    def client(self, base: str = "acme", display: str = "Acme Ltd") -> str:
        slug = self.name(base)
        self.admin.clients.add(slug, display)
        return slug


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared(request: pytest.FixtureRequest, tmp_path_factory, pg_template) -> Iterator[Shared]:  # type: ignore[no-untyped-def]
    yield from _local_shared(request.param, tmp_path_factory, pg_template)


def _local_shared(engine: str, tmp_path_factory: pytest.TempPathFactory, pg_template: str | None) -> Iterator[Shared]:
    drop: Callable[[], None] | None = None
    if engine == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('shared') / 'vault.db'}"
    else:
        if pg_template is None:
            pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
        url, drop = _clone_pg(pg_template)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=lambda: now, kdf_params=FLOOR)
    env = Shared(url, admin, Db(admin.store), now)
    admin.clock = env.clock
    admin.engineers.unlock(ADMIN, ADMIN_PASS, ttl=LONG_SESSION)
    env.passphrases[ADMIN] = ADMIN_PASS
    yield env
    admin.close()
    if drop is not None:
        drop()


@dataclass
class ServedShared(Shared):
    """``Shared`` through a team server (``served.ServedTeam``): the admin on the server's host, each
    engineer a ``RemoteVault`` enrolled through the server. One server per module, on its clock."""

    served_team: ServedTeam | None = None

    served = True

    @property
    def server(self) -> ServedTeam:
        assert self.served_team is not None
        return self.served_team

    @property
    def server_store(self) -> Store:
        return self.server.server_store

    @contextlib.contextmanager
    def later(self, **delta: float) -> Iterator[None]:
        """Move the clock forward, and leave it there: a served vault's events keep requests signed
        on the clock, which the chain holds to within ``EVENT_WINDOW`` of the event's time, and an
        event is never dated before the one before it (the server refuses to append on a clock set
        back: ``serverjournal``). The admin is unlocked again for the tests that follow."""
        self.now = self.now + dt.timedelta(**delta)
        try:
            yield
        finally:
            self.admin.engineers.unlock(ADMIN, ADMIN_PASS, ttl=LONG_SESSION)

    def open(self, name: str | None = None) -> Vault:
        """A fresh, locked ``RemoteVault`` for ``name`` (its own caches and session store)."""
        return self.server.open(name)  # type: ignore[return-value]

    def engineer(self, base: str, *, role: str = "engineer") -> Vault:
        """Invite (on the host), enrol through the server, confirm, unlock: ``base-N``'s ``RemoteVault``."""
        name = self.name(base)
        passphrase = f"pass of {name}"
        code = self.admin.engineers.invite(name, role=role)
        self.admin.engineers.confirm(name, self.open(name).engineers.enroll(name, code, passphrase))
        mine = self.open(name)
        mine.engineers.unlock(name, passphrase, ttl=LONG_SESSION)
        self.passphrases[name] = passphrase
        self.server.passphrases[name] = passphrase
        return mine


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "https"])
def shared3(request: pytest.FixtureRequest, tmp_path_factory, pg_template) -> Iterator[Shared]:  # type: ignore[no-untyped-def]
    """``shared`` in three modes: SQLite, PostgreSQL, then through one team server per module on
    loopback TLS over SQLite (``ServedShared``). A module opts in with ``def shared(shared3)``; a
    case that needs what only the local modes have says so with ``served.only_local``."""
    if request.param != "https":
        yield from _local_shared(request.param, tmp_path_factory, pg_template)
        return
    folder = tmp_path_factory.mktemp("shared-served")
    url = f"sqlite:///{folder / 'vault.db'}"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=lambda: now, kdf_params=FLOOR)
    env = ServedShared(url, admin, Db(admin.store), now)
    admin.clock = env.clock
    admin.engineers.unlock(ADMIN, ADMIN_PASS, ttl=LONG_SESSION)
    env.passphrases[ADMIN] = ADMIN_PASS
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDVAULT_HOME", str(folder / "engineer-home"))
        with served_team(url, admin, env.clock, {ADMIN: ADMIN_PASS}, make_test_ca(folder), FLOOR) as team:
            env.served_team = team
            yield env
    admin.close()


def _clone_pg(template: str) -> tuple[str, Callable[[], None]]:
    name = f"credvault_shared_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False), drop


# -- the agent (tests/service/test_agent.py, test_agent_calls.py) ---------------------------------


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short CREDVAULT_HOME (a socket path must fit in 100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="cvag") as tmp:
        monkeypatch.setenv("CREDVAULT_HOME", tmp)
        yield Path(tmp)


@pytest.fixture
def admin(team: Any) -> Vault:
    """``team``'s admin, with client agentco and its secret fw (``agent_harness.PASSWORD``)."""
    vault: Vault = team.admin
    vault.clients.add("agentco", "Agent Co")
    vault.secrets.add("agentco/fw", password=agent_harness.PASSWORD, username="root")
    return vault


@pytest.fixture
def served(admin: Vault, home: Path) -> Iterator[tuple[Agent, Path, agent_harness.Clock]]:
    """An agent for ``admin``, serving in a thread on a real Unix socket: (agent, socket, clock)."""
    clock = agent_harness.Clock()
    path = Path(agentclient.socket_path(admin.store.url, ADMIN))
    server = Agent(admin, clock() + dt.timedelta(minutes=5), clock)
    listener = bind(path)
    thread = threading.Thread(target=server.serve, args=(listener,), daemon=True)
    thread.start()
    yield server, path, clock
    server.running = False
    thread.join(timeout=5)
    listener.close()
    assert not thread.is_alive()
