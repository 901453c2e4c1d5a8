"""Shared fixtures: a vault on every engine, engineers, and a clock tests can move.

Storage and service tests take the ``db_url`` fixture, which runs them on SQLite and,
when a server is reachable, on PostgreSQL (``CREDVAULT_TEST_PG``, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres). Each PostgreSQL test gets a
fresh database cloned from a migrated template that this run creates and drops.
Without a server the PostgreSQL cases are skipped and everything else runs; with
CREDVAULT_REQUIRE_PG=1 (set by .ci/run when a server answers) they fail instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import time
import types
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

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
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

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
    except Exception as exc:  # any failure means "no server here"
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


class PgDatabases:
    """This process's clones of the migrated template, each reused from test to test.

    On PostgreSQL 15 and older a DROP DATABASE takes an immediate checkpoint of the whole
    cluster (1-3 s each; a clone per test made it the largest cost of the PostgreSQL cases).
    A database given back is instead reset to the template's state in one transaction
    (every table written truncated, every sequence used restarted), and only when
    nothing but rows changed: its schema fingerprint (tables, columns, constraints,
    indexes, triggers, functions, rules, policies, settings, ...) must still be the one it
    had as a fresh clone, ``alembic_version`` must hold the template's rows, and no
    prepared transaction may be left. Otherwise (a test planted a trigger, dropped a
    column, ...) it is dropped as before and the next test gets a new clone."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.admin = _pg_admin_engine()
        self.free: list[str] = []
        self.baseline: dict[str, tuple[str, list[str], list[str]]] = {}  # fingerprint, versions, tables

    def take(self) -> str:
        """A clone as fresh as a new one: from the free list, or a new one."""
        if self.free:
            name = self.free.pop()
        else:
            name = f"credvault_test_{uuid.uuid4().hex[:12]}"
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
            with self._engine(name).connect() as conn:
                tables = conn.scalars(text(_USER_TABLES)).all()
                versions = conn.scalars(text("SELECT version_num FROM alembic_version ORDER BY 1")).all()
                self.baseline[name] = (conn.scalar(text(_SCHEMA_FINGERPRINT)), list(versions), list(tables))
        return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    def give_back(self, url: str) -> None:
        """Reset the clone for the next test, or drop it if more than its rows changed."""
        name = make_url(url).database
        assert name in self.baseline
        with self.admin.connect() as conn:  # the test's sessions (its vaults are closed after this)
            conn.execute(text(_TERMINATE), {"name": name})
            deadline = time.monotonic() + 10
            while conn.scalar(text(_SESSIONS), {"name": name}) and time.monotonic() < deadline:
                time.sleep(0.01)
        if self._reset(name):
            self.free.append(name)
        else:
            self._drop(name)

    def _reset(self, name: str) -> bool:
        fingerprint, versions, tables = self.baseline[name]
        engine = self._engine(name)
        try:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                if (
                    conn.scalar(text(_SCHEMA_FINGERPRINT)) != fingerprint
                    or conn.scalars(text("SELECT version_num FROM alembic_version ORDER BY 1")).all() != versions
                    or conn.scalar(text("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()"))
                ):
                    return False
                written = conn.scalars(text(_WRITTEN_TABLES), {"tables": tables}).all()  # a fresh table has no page
                if written:
                    truncated = ", ".join(f'"{table}"' for table in written)
                    conn.execute(text(f"TRUNCATE {truncated} RESTART IDENTITY CASCADE"))
                for sequence in conn.scalars(text(_USED_SEQUENCES)).all():  # of a table left empty
                    conn.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
            return True
        except Exception as error:  # any failure: drop it, as before (and say why)
            warnings.warn(f"a test database could not be reset, it is dropped: {error}", stacklevel=1)
            return False
        finally:
            engine.dispose()

    def _engine(self, name: str):  # type: ignore[no-untyped-def]
        url = make_url(PG_URL).set(database=name)
        return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})

    def _drop(self, name: str) -> None:
        self.baseline.pop(name, None)
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        while self.free:
            self._drop(self.free.pop())
        self.admin.dispose()


_TERMINATE = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
_SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
_USER_TABLES = """
SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version' ORDER BY 1
"""
_WRITTEN_TABLES = """
SELECT relname FROM pg_class
WHERE relnamespace = 'public'::regnamespace AND relname = ANY(:tables) AND pg_relation_size(oid) > 0
"""
_USED_SEQUENCES = "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' AND last_value IS NOT NULL"
# Every schema object outside the system schemas, with its definition, as one digest.
_SCHEMA_FINGERPRINT = """
WITH user_ns AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND nspname NOT LIKE 'pg_temp_%' AND nspname NOT LIKE 'pg_toast_temp_%'
), rels AS (
    SELECT c.* FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace
), items(item) AS (
    SELECT 'n ' || nspname || ' ' || (SELECT nspowner::text || coalesce(nspacl::text, '')
                                       FROM pg_namespace WHERE oid = user_ns.oid) FROM user_ns
    UNION ALL
    SELECT concat_ws(' ', 'c', oid, relnamespace, relname, relkind, relowner, relacl, reloptions, relpersistence,
                     relrowsecurity, relforcerowsecurity, relreplident) FROM rels
    UNION ALL
    SELECT concat_ws(' ', 'a', a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                     a.attisdropped, a.attidentity, a.attgenerated, a.attcollation, a.attacl, a.attoptions,
                     pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN rels r ON r.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0
    UNION ALL
    SELECT concat_ws(' ', 'k', co.oid, co.conname, co.conrelid, pg_get_constraintdef(co.oid), co.convalidated,
                     co.condeferrable, co.condeferred)
    FROM pg_constraint co JOIN user_ns n ON n.oid = co.connamespace
    UNION ALL
    SELECT concat_ws(' ', 'i', i.indexrelid, pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready, i.indislive)
    FROM pg_index i JOIN rels r ON r.oid = i.indrelid
    UNION ALL
    SELECT concat_ws(' ', 't', t.oid, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid
    UNION ALL
    SELECT concat_ws(' ', 'r', w.oid, w.rulename, w.ev_enabled, pg_get_ruledef(w.oid))
    FROM pg_rewrite w JOIN rels r ON r.oid = w.ev_class
    UNION ALL
    SELECT concat_ws(' ', 'p', pol.oid, pol.polname, pol.polcmd, pol.polpermissive, pol.polroles,
                     pg_get_expr(pol.polqual, pol.polrelid), pg_get_expr(pol.polwithcheck, pol.polrelid))
    FROM pg_policy pol JOIN rels r ON r.oid = pol.polrelid
    UNION ALL
    SELECT concat_ws(' ', 's', s.seqrelid, s.seqtypid, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache,
                     s.seqcycle)
    FROM pg_sequence s JOIN rels r ON r.oid = s.seqrelid
    UNION ALL
    SELECT concat_ws(' ', 'f', p.oid, p.proname, p.proowner, p.proacl, p.prosecdef, p.proconfig, md5(p.prosrc))
    FROM pg_proc p JOIN user_ns n ON n.oid = p.pronamespace
    UNION ALL
    SELECT concat_ws(' ', 'y', ty.oid, ty.typname, ty.typtype, ty.typowner, ty.typacl)
    FROM pg_type ty JOIN user_ns n ON n.oid = ty.typnamespace
    UNION ALL
    SELECT concat_ws(' ', 'o', o.oid, o.oprname) FROM pg_operator o JOIN user_ns n ON n.oid = o.oprnamespace
    UNION ALL
    SELECT concat_ws(' ', 'x', x.oid, x.stxname) FROM pg_statistic_ext x JOIN user_ns n ON n.oid = x.stxnamespace
    UNION ALL
    SELECT concat_ws(' ', 'e', oid, extname, extversion) FROM pg_extension
    UNION ALL
    SELECT concat_ws(' ', 'v', oid, evtname, evtevent, evtenabled, evtfoid) FROM pg_event_trigger
    UNION ALL
    SELECT concat_ws(' ', 'd', setrole, setconfig) FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT concat_ws(' ', 'g', oid, defaclrole, defaclnamespace, defaclobjtype, defaclacl) FROM pg_default_acl
    UNION ALL
    SELECT concat_ws(' ', 'b', oid, pubname) FROM pg_publication
    UNION ALL
    SELECT 'l ' || count(*) FROM pg_largeobject_metadata
    UNION ALL
    SELECT concat_ws(' ', 'D', datconnlimit, datallowconn, datacl) FROM pg_database
    WHERE datname = current_database()
)
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM items
"""


@pytest.fixture(scope="session")
def pg_databases(pg_template: str | None) -> Iterator[PgDatabases | None]:
    """This process's reusable clones of the template (None without a server)."""
    if pg_template is None:
        yield None
        return
    databases = PgDatabases(pg_template)
    yield databases
    databases.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, made once per process; each test gets a copy of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "vault.db"
    store = storage.Store(f"sqlite:///{path}")
    storage.upgrade(store)
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:  # everything in the main file, nothing in the WAL
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the migrated template left pages in its WAL"
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path, sqlite_template, pg_databases) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty, migrated database URL on each engine."""
    yield from _empty_database(request.param, tmp_path, sqlite_template, pg_databases)


def _empty_database(
    engine: str, tmp_path: Path, sqlite_template: Path, pg_databases: PgDatabases | None
) -> Iterator[str]:
    if engine == "sqlite":
        path = tmp_path / "vault.db"
        shutil.copy(sqlite_template, path)  # the same bytes and mode (0600) as a file migrated here
        yield f"sqlite:///{path}"
        return
    if pg_databases is None:
        pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
    url = pg_databases.take()
    yield url
    pg_databases.give_back(url)


@pytest.fixture
def empty_databases(tmp_path, sqlite_template, pg_databases):  # type: ignore[no-untyped-def]
    """``take(engine)``: the URL of another new, empty, migrated database on ``engine`` ("sqlite" or
    "postgresql"; a restore's target), each given back after the test."""
    taken: list[str] = []

    def take(engine: str) -> str:
        if engine == "sqlite":
            path = tmp_path / f"empty-{len(taken)}.db"
            shutil.copy(sqlite_template, path)
            taken.append("")
            return f"sqlite:///{path}"
        if pg_databases is None:
            pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
        taken.append(pg_databases.take())
        return taken[-1]

    yield take
    for url in taken:
        if url:
            pg_databases.give_back(url)


@pytest.fixture
def db_store(db_url: str) -> Iterator[storage.Store]:
    """A ``Store`` on ``db_url`` (each engine), closed after the test; a test that needs a
    second server process opens another ``storage.Store(db_url)`` beside it."""
    store = storage.Store(db_url)
    yield store
    store.close()


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

    def unlocked(self, name: str) -> Vault:
        """A fresh Vault object for ``name`` (enrolled before), unlocked with their passphrase."""
        mine = self.open(name)
        mine.engineers.unlock(name, self.passphrases[name])
        return mine


@pytest.fixture
def team(db_url: str, clock: Clock) -> Iterator[Team]:
    admin, _ = Vault.create(db_url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    yield Team(db_url, admin, clock, {ADMIN: ADMIN_PASS})
    admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "https"])
def team3(request, tmp_path, sqlite_template, pg_databases, clock, monkeypatch):  # type: ignore[no-untyped-def]
    """``team`` in three modes: on SQLite, on PostgreSQL, and through a real team server on loopback
    TLS (``served.ServedTeam``: the engineers are ``RemoteVault``s with no database, the admin works
    on the server's host). A test that needs what only the local modes have says so with ``served.only_local``."""
    engine = "sqlite" if request.param == "https" else request.param
    for url in _empty_database(engine, tmp_path, sqlite_template, pg_databases):
        admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
        admin.engineers.unlock(ADMIN, ADMIN_PASS)
        if request.param != "https":
            yield Team(url, admin, clock, {ADMIN: ADMIN_PASS})
        else:
            from served import make_test_ca, served_team

            monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "engineer-home"))
            ca = make_test_ca(tmp_path)
            with served_team(url, admin, clock, {ADMIN: ADMIN_PASS}, ca, FAST_KDF) as served:
                yield served
        admin.close()


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


# -- a team built once per module, a fresh copy of its database for each test ---------------------------------


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory, sqlite_template, pg_databases) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """``db_url`` for a module-scoped fixture: one empty, migrated database per module and
    engine (the same test ids as ``db_url``)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("module-db") / "vault.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    if pg_databases is None:
        pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
    url = pg_databases.take()
    yield url
    pg_databases.give_back(url)


class DatabaseSnapshot:
    """Every row of a vault database at one moment, put back into a fresh database per test:
    on SQLite a copy of the file, on PostgreSQL the rows and sequences inserted into a
    reused clone of the template (``PgDatabases``) in one transaction."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        if url.startswith("sqlite"):
            self.file = folder / "snapshot.db"
            source = Path(make_url(url).database or "")
            with contextlib.closing(sqlite3.connect(source)) as conn:  # every page in the main file
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            shutil.copy(source, self.file)
            return
        self.meta = MetaData()
        engine = create_engine(url, poolclass=NullPool)
        try:
            self.meta.reflect(engine)  # the tables the migrations made
            with engine.connect() as conn:
                self.rows = {
                    t.name: [dict(r._mapping) for r in conn.execute(select(t))] for t in self.meta.sorted_tables
                }
                self.sequences = [
                    (name, *conn.execute(text(f'SELECT last_value, is_called FROM "{name}"')).one())
                    for name in conn.scalars(text("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"))
                ]
        finally:
            engine.dispose()

    def restore(self, tmp_path: Path, pg_databases: PgDatabases | None) -> tuple[str, Callable[[], None]]:
        """A new database holding the snapshot's rows: its URL and what to call when done."""
        if self.url.startswith("sqlite"):
            path = tmp_path / "vault.db"
            shutil.copy(self.file, path)  # the mode (0600) too
            return f"sqlite:///{path}", lambda: None
        assert pg_databases is not None
        url = pg_databases.take()
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL session_replication_role = replica"))  # rows in any order
                conn.execute(text("DELETE FROM alembic_version"))
                for table in self.meta.sorted_tables:
                    if self.rows[table.name]:
                        conn.execute(table.insert(), self.rows[table.name])
                for name, last, called in self.sequences:
                    conn.execute(
                        text("SELECT setval(:name, :last, :called)"),
                        {"name": f'"{name}"', "last": last, "called": called},
                    )
        finally:
            engine.dispose()
        return url, lambda: pg_databases.give_back(url)


class TeamSnapshot:
    """A team (``team``'s admin, and whatever ``build`` adds) built once, and its database
    restored for each test: ``with built.restore(tmp_path, pg_databases) as team``. The
    team's clock is the one it was built at; its admin is a fresh Vault object, locked
    (``team.unlocked(name)`` opens and unlocks anyone). Every Vault the build opened is
    closed before the snapshot is taken."""

    def __init__(self, url: str, folder: Path, build: Callable[[Team], object]) -> None:
        clock = Clock()
        opened: list[Vault] = []
        original = Vault.__init__

        def recording(vault: Vault, *args: object, **kwargs: object) -> None:
            original(vault, *args, **kwargs)  # type: ignore[arg-type]
            opened.append(vault)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Vault, "__init__", recording)
            admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
            admin.engineers.unlock(ADMIN, ADMIN_PASS)
            team = Team(url, admin, clock, {ADMIN: ADMIN_PASS})
            try:
                self.facts = build(team)
            finally:
                for vault in opened:
                    vault.close()
        self.now, self.passphrases = clock.now, dict(team.passphrases)
        self.snapshot = DatabaseSnapshot(url, folder)

    @contextlib.contextmanager
    def restore(self, tmp_path: Path, pg_databases: PgDatabases | None) -> Iterator[Team]:
        url, done = self.snapshot.restore(tmp_path, pg_databases)
        clock = Clock()
        clock.now = self.now
        team = Team(
            url, Vault.open(url, engineer=ADMIN, clock=clock, kdf_params=FAST_KDF), clock, dict(self.passphrases)
        )
        try:
            yield team
        finally:
            team.admin.close()
            done()


@pytest.fixture(scope="module")
def build_team(
    module_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Callable[[Team], object]], TeamSnapshot]:
    """``build_team(build)``: a ``TeamSnapshot`` of ``build(team)`` on this module's database."""
    return lambda build: TeamSnapshot(module_db_url, tmp_path_factory.mktemp("snapshot"), build)


# -- a team whose log holds a little of everything, built once per module and engine ----------------

AUDIT_REASON = "T-audit-authority reason marker"


@dataclass
class AuditWorld(Team):
    """``Team`` with alice (granted acme, who revealed and checked out fw01) and bob (no grant)."""

    alice: Vault | None = None
    bob: Vault | None = None


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def audit_world(request: pytest.FixtureRequest, tmp_path_factory, pg_template) -> Iterator[AuditWorld]:  # type: ignore[no-untyped-def]
    """For the audit log's authority and keyholder tests, which read it and do not change what
    was built (a test that appends says so); expensive (three engineers' keys): once per module."""
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('audit-world') / 'vault.db'}"
        store = storage.Store(url)
        storage.upgrade(store)
        store.close()
    else:
        if pg_template is None:
            pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
        url, drop = _fresh_pg(pg_template)
    clock = Clock()
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    world = AuditWorld(url, admin, clock, {ADMIN: ADMIN_PASS})
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("globex", "Globex")
    admin.secrets.add("acme/fw01", password="pw-1", note="rack 4")
    admin.secrets.add("globex/sw01", password="pw-2")
    world.alice, world.bob = world.engineer("alice"), world.engineer("bob")
    admin.grants.grant("alice", "acme")
    admin.grants.grant("bob", "globex")
    world.alice.checkouts.reveal("acme/fw01", reason=AUDIT_REASON)
    world.alice.checkouts.checkout("acme/fw01", reason=AUDIT_REASON)
    world.alice.checkouts.checkin("acme/fw01")
    world.bob.checkouts.reveal("globex/sw01", reason=AUDIT_REASON)
    world.bob.clients.list()
    admin.secrets.show("globex/sw01")
    yield world
    for vault in (world.alice, world.bob, admin):
        vault.close()
    if drop is not None:
        drop()
