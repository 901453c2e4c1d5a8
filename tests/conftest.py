"""Shared fixtures: a vault on every engine, engineers, and a clock tests can move.

Storage and service tests take the ``db_url`` fixture, which runs them on SQLite and,
when a server is reachable, on PostgreSQL (``CREDVAULT_TEST_PG``, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres). Each PostgreSQL test gets a
fresh database cloned from a migrated template that this run creates and drops.
Without a server the PostgreSQL cases are skipped and everything else runs; with
CREDVAULT_REQUIRE_PG=1 (set by .ci/run when a server answers) they fail instead.
"""

from __future__ import annotations

import datetime as dt
import os
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.service.sessions import MemorySessionStore
from vault.storage import engine as storage

# `credvault unlock` starts an agent by default; the suite written for the keyring session
# keeps testing that mode (`unlock --keyring`). The agent's tests (tests/cli/test_fast.py,
# test_agent_cli.py, test_unlock_agent.py) delete this to test the default.
os.environ["CREDVAULT_UNLOCK"] = "keyring"
PG_URL = os.environ.get("CREDVAULT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
FAST_KDF = FLOOR  # the floor is still OWASP's minimum; tests use it for speed


@pytest.fixture(autouse=True)
def _close_vaults_opened_by_the_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every Vault a test opened and left open: each holds database connections,
    and a long run of a worker otherwise passes 1,024 open descriptors (where a bug that
    only shows there, ``select()`` on a descriptor past 1023, failed CI but not a short run)."""
    opened: list[Vault] = []
    original = Vault.__init__

    def recording(self: Vault, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        opened.append(self)

    monkeypatch.setattr(Vault, "__init__", recording)
    yield
    for vault in opened:
        vault.close()


class Clock:
    """A clock tests can move: ``clock.advance(hours=3)``."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += dt.timedelta(**kwargs)


def _pg_admin_engine():  # type: ignore[no-untyped-def]
    return create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A migrated template database on the PostgreSQL server, or None without a server."""
    try:
        admin = _pg_admin_engine()
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        if os.environ.get("CREDVAULT_REQUIRE_PG") == "1":
            pytest.fail(f"CREDVAULT_REQUIRE_PG=1 but PostgreSQL at {PG_URL} is unreachable: {type(exc).__name__}")
        yield None
        return
    name = f"credvault_tpl_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    store = storage.Store(url)
    storage.upgrade(store)
    store.close()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _fresh_pg(template: str) -> tuple[str, Callable[[], None]]:
    name = f"credvault_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path, pg_template) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty, migrated database URL on each engine."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'vault.db'}"
        store = storage.Store(url)
        storage.upgrade(store)
        store.close()
        yield url
        return
    if pg_template is None:
        pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
    url, drop = _fresh_pg(pg_template)
    yield url
    drop()


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'vault.db'}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@dataclass
class Team:
    """A vault with an unlocked admin, and a way to add unlocked engineers."""

    url: str
    admin: Vault
    clock: Clock
    passphrases: dict[str, str]

    def open(self, name: str | None = None) -> Vault:
        """A fresh, locked Vault object (its own caches) for ``name``."""
        return Vault.open(self.url, engineer=name, clock=self.clock, kdf_params=FAST_KDF, sessions=MemorySessionStore())

    def engineer(self, name: str, *, role: str = "engineer", passphrase: str | None = None) -> Vault:
        """Invite, enrol, confirm and unlock an engineer; returns their Vault."""
        passphrase = passphrase or f"pass of {name}"
        code = self.admin.engineers.invite(name, role=role)
        mine = self.open(name)
        fingerprint = mine.engineers.enroll(name, code, passphrase)
        self.admin.engineers.confirm(name, fingerprint)
        mine.engineers.unlock(name, passphrase)
        self.passphrases[name] = passphrase
        return mine


@pytest.fixture
def team(db_url: str, clock: Clock) -> Iterator[Team]:
    admin, _ = Vault.create(db_url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    yield Team(db_url, admin, clock, {ADMIN: ADMIN_PASS})
    admin.close()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory, pg_template) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """``db_url``, made once per test module: for a scene its tests read and do not change."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('module') / 'vault.db'}"
        store = storage.Store(url)
        storage.upgrade(store)
        store.close()
        yield url
        return
    if pg_template is None:
        pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
    url, drop = _fresh_pg(pg_template)
    yield url
    drop()


@pytest.fixture(scope="module")
def module_team(module_db_url: str) -> Iterator[Team]:
    """``team`` made once per test module (its own clock); every Vault it opened is closed after."""
    clock = Clock()
    opened: list[Vault] = []
    original = Team.open

    def recording(self: Team, name: str | None = None) -> Vault:
        vault = original(self, name)
        opened.append(vault)
        return vault

    admin, _ = Vault.create(module_db_url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    team = Team(module_db_url, admin, clock, {ADMIN: ADMIN_PASS})
    team.open = types.MethodType(recording, team)  # type: ignore[method-assign]
    yield team
    for vault in (admin, *opened):
        vault.close()
