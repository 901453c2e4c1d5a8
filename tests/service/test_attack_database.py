"""Attacks through the database itself (issue 12, items 10, 18 and 19).

The insider is a writer of the database (an engineer with the team URL, a DBA): he adds
a trigger, a rule, a view or a table of his own, edits the audit anchor, holds a lock on
the audit head, or the schema is too narrow for a large purge. The honest admin then
uses the public ``Vault`` API; each attack must end in a clear error from
``vault.errors`` and nothing revealed, sealed, purged or hidden.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, insert, select, text, update
from sqlalchemy.engine import Engine

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import InvalidInput, StoreBusy, TamperedSchema, VaultError
from vault.storage import engine as storage
from vault.storage import models as m

REF, PW = "acme/fw01", "acme-pw-1"
ADMIN = "root-admin"
Team = Any  # tests/conftest.py's Team: a vault with an unlocked admin

postgres_only = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def attacker(team: Team) -> Iterator[Engine]:
    """A plain connection of the database's owner: no credvault check in the way."""
    engine = create_engine(team.url)
    yield engine
    engine.dispose()


def _sql(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def _scalar(engine: Engine, statement: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(statement).scalar()


def _fresh(team: Team) -> Vault:
    """The honest admin in a new process: a new store on the same database, the same session."""
    return Vault(
        storage.Store(team.url),
        engineer=ADMIN,
        sessions=team.admin.sessions,
        clock=team.clock,
        kdf_params=FLOOR,
    )


def _scene(team: Team) -> None:
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add(REF, password=PW, username="fw-admin")


def _head(engine: Engine) -> tuple[int, bytes]:
    with engine.connect() as conn:
        row = conn.execute(select(m.AuditHead.seq, m.AuditHead.hash)).one()
        return int(row[0]), bytes(row[1])


def _refused(error: VaultError, *names: str) -> None:
    assert isinstance(error, TamperedSchema)
    for name in names:
        assert name in str(error)
    assert PW not in str(error) and PW not in error.hint


# -- item 10: objects credvault did not create ---------------------------------------------------------

BLIND_REVEALS_PG = (
    """CREATE FUNCTION blind_reveal() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM audit_events WHERE seq = NEW.seq;
      UPDATE audit_head SET seq = NEW.seq - 1, hash = NEW.prev_hash WHERE id = 1 AND seq = NEW.seq;
      RETURN NULL;
    END $$""",
    """CREATE CONSTRAINT TRIGGER blind_reveals AFTER INSERT ON audit_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.action IN ('reveal', 'checkout')) EXECUTE FUNCTION blind_reveal()""",
)


@postgres_only
def test_pg_constraint_trigger_deleting_reveal_events_at_commit_is_refused(team: Team, attacker: Engine) -> None:
    _scene(team)
    _sql(attacker, *BLIND_REVEALS_PG)
    before = _head(attacker)
    admin = _fresh(team)
    with pytest.raises(TamperedSchema) as caught:
        admin.checkouts.checkout(REF, reason="T-1 incident")
    _refused(caught.value, "blind_reveals", "audit_events")
    assert _head(attacker) == before
    assert _scalar(attacker, select(func.count()).select_from(m.Checkout)) == 0


@postgres_only
def test_pg_archive_trigger_on_client_key_seals_is_refused_and_nothing_is_purged(team: Team, attacker: Engine) -> None:
    _scene(team)
    _sql(
        attacker,
        "CREATE SCHEMA keep",
        "CREATE TABLE keep.seals AS SELECT * FROM client_key_seals WHERE false",
        """CREATE FUNCTION keep.archive() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO keep.seals SELECT OLD.*; RETURN OLD; END $$""",
        "CREATE TRIGGER archive_seals BEFORE DELETE ON client_key_seals FOR EACH ROW EXECUTE FUNCTION keep.archive()",
    )
    admin = _fresh(team)
    with pytest.raises(TamperedSchema) as caught:
        admin.purge.client("acme", request="GDPR-1")
    _refused(caught.value, "archive_seals", "client_key_seals")
    assert _scalar(attacker, text("SELECT count(*) FROM keep.seals")) == 0
    assert _scalar(attacker, select(func.count()).select_from(m.Client)) == 1


@sqlite_only
def test_sqlite_trigger_hiding_reveals_is_refused(team: Team, attacker: Engine) -> None:
    _scene(team)
    _sql(
        attacker,
        """CREATE TRIGGER blind_reveals AFTER UPDATE OF seq ON audit_head
        WHEN (SELECT action FROM audit_events WHERE seq = NEW.seq) IN ('reveal', 'checkout')
        BEGIN
          UPDATE audit_head SET seq = NEW.seq - 1,
            hash = (SELECT prev_hash FROM audit_events WHERE seq = NEW.seq) WHERE id = 1;
          DELETE FROM audit_events WHERE seq = NEW.seq;
        END""",
    )
    before = _head(attacker)
    admin = _fresh(team)
    with pytest.raises(TamperedSchema) as caught:
        admin.checkouts.reveal(REF, reason="T-1 incident")
    _refused(caught.value, "blind_reveals", "audit_head")
    assert _head(attacker) == before


@sqlite_only
def test_sqlite_a_trigger_added_while_a_vault_is_open_is_refused_at_its_next_unit_of_work(
    team: Team, attacker: Engine
) -> None:
    _scene(team)
    assert team.admin.checkouts.reveal(REF, reason="T-1") == PW  # checked and open, as the agent would be
    _sql(attacker, "CREATE TRIGGER quiet AFTER INSERT ON audit_events BEGIN SELECT 1; END")
    before = _head(attacker)
    with pytest.raises(TamperedSchema) as caught:
        team.admin.checkouts.reveal(REF, reason="T-2")
    _refused(caught.value, "quiet", "audit_events")
    assert _head(attacker) == before


@pytest.mark.parametrize(
    "kind, statement, name",
    [
        ("view", "CREATE VIEW quiet_log AS SELECT seq, action FROM audit_events", "quiet_log"),
        ("table", "CREATE TABLE seal_copies (client_id integer, blob bytea)", "seal_copies"),
    ],
)
def test_a_view_or_an_extra_table_is_refused(
    team: Team, attacker: Engine, kind: str, statement: str, name: str
) -> None:
    _scene(team)
    if storage.is_sqlite(attacker):
        statement = statement.replace("bytea", "blob")
    _sql(attacker, statement)
    before = _head(attacker)
    admin = _fresh(team)
    with pytest.raises(TamperedSchema) as caught:
        admin.checkouts.reveal(REF, reason="T-1 incident")
    _refused(caught.value, kind, name)
    assert _head(attacker) == before


PG_OBJECTS = {
    "rule": (
        ["CREATE RULE keep_seals AS ON DELETE TO client_key_seals DO INSTEAD NOTHING"],
        "rule 'keep_seals' on client_key_seals",
    ),
    "row-level security": (
        [
            "ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY",
            "CREATE POLICY hide_reveals ON audit_events USING (action NOT IN ('reveal', 'checkout'))",
        ],
        "policy 'hide_reveals' on audit_events",
    ),
    "check calling a function": (
        [
            "CREATE SCHEMA spy",
            "CREATE TABLE spy.copies (blob bytea)",
            """CREATE FUNCTION spy.keep(b bytea) RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO spy.copies VALUES (b); RETURN true; END $$""",
            "ALTER TABLE client_key_seals ADD CONSTRAINT keep_copy CHECK (spy.keep(blob))",
        ],
        "call of function 'keep' on client_key_seals",
    ),
    "event trigger": (
        [
            "CREATE FUNCTION on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$",
            "CREATE EVENT TRIGGER on_ddl ON ddl_command_start EXECUTE FUNCTION on_ddl()",
        ],
        "event trigger 'on_ddl'",
    ),
    "publication": (["CREATE PUBLICATION copy_seals FOR TABLE client_key_seals"], "publication 'copy_seals'"),
    "shadowing schema": (  # the user's own schema comes first on the default search path
        ["CREATE SCHEMA postgres", "CREATE TABLE postgres.audit_events (LIKE public.audit_events INCLUDING ALL)"],
        "shadowed table 'audit_events' in schema 'public'",
    ),
}


@postgres_only
@pytest.mark.parametrize("case", sorted(PG_OBJECTS))
def test_pg_rules_policies_functions_event_triggers_publications_and_shadows_are_refused(
    team: Team, attacker: Engine, case: str
) -> None:
    _scene(team)
    statements, expected = PG_OBJECTS[case]
    _sql(attacker, *statements)
    before = _head(attacker)
    admin = _fresh(team)
    with pytest.raises(TamperedSchema) as caught:
        admin.checkouts.reveal(REF, reason="T-1 incident")
    _refused(caught.value, expected)
    assert _head(attacker) == before


def test_a_vault_without_foreign_objects_opens_and_reports_none(team: Team) -> None:
    _scene(team)
    admin = _fresh(team)
    assert admin.checkouts.reveal(REF, reason="T-1") == PW
    assert admin.reports.status().schema_problems == []
    assert admin.store.foreign_objects() == []


def test_inspecting_one_database_neither_unguards_another_nor_reads_its_catalog_twice(
    team: Team, tmp_path: Path
) -> None:
    other, _ = Vault.create(f"sqlite:///{tmp_path / 'other.db'}", admin=ADMIN, passphrase="pass", kdf_params=FLOOR)
    other.close()
    intruder = create_engine(other.store.url)
    _sql(intruder, "CREATE VIEW quiet_log AS SELECT seq, action FROM audit_events")
    intruder.dispose()
    store = storage.Store(other.store.url)

    def read() -> int:
        with store.transaction() as s:
            return int(s.scalar(select(func.count()).select_from(m.AuditEvent)))

    try:
        with team.admin.store.inspecting() as found:
            assert found == []
            with pytest.raises(TamperedSchema) as caught:  # before the fix: read as if inspected
                read()
            _refused(caught.value, "quiet_log")
            with store.inspecting() as theirs, store.inspecting() as again:
                assert theirs == again == ["view 'quiet_log'"]
                assert read() > 0
        with pytest.raises(TamperedSchema):
            read()
    finally:
        store.close()


def test_status_audit_verify_and_receipts_verify_name_the_foreign_objects(team: Team, attacker: Engine) -> None:
    _scene(team)
    team.admin.clients.add("globex", "Globex")
    receipt = team.admin.purge.client("globex", request="GDPR-2")
    _sql(attacker, "CREATE VIEW quiet_log AS SELECT seq, action FROM audit_events")
    admin = _fresh(team)
    status = admin.reports.status()
    assert any("quiet_log" in problem for problem in status.schema_problems)
    assert any("quiet_log" in warning for warning in status.warnings)
    result = admin.audit.verify()
    assert not result.ok and result.problem is not None and "quiet_log" in result.problem
    check = admin.purge.verify_receipt(receipt.id)
    assert not check.ok and any("quiet_log" in problem for problem in check.problems)
    with pytest.raises(TamperedSchema):  # and everything else is refused
        admin.clients.list()


def test_an_anchor_edited_behind_its_hash_is_caught_by_the_incremental_verify(team: Team, attacker: Engine) -> None:
    _scene(team)
    team.admin.checkouts.reveal(REF, reason="T-1 incident")
    since = team.admin.audit.head()
    team.admin.secrets.show(REF)
    with attacker.begin() as conn:  # the anchor (a reveal) now names another action; its hash is kept
        conn.execute(update(m.AuditEvent).where(m.AuditEvent.seq == since[0]).values(action="secret-list"))
    result = _fresh(team).audit.verify(since=since)
    assert (result.ok, result.first_bad_seq) == (False, since[0])


def test_an_anchor_that_no_longer_links_to_the_event_before_it_is_caught(team: Team, attacker: Engine) -> None:
    _scene(team)
    team.admin.checkouts.reveal(REF, reason="T-1 incident")
    since = team.admin.audit.head()
    team.admin.secrets.show(REF)
    with attacker.begin() as conn:  # the event before the anchor was replaced (its hash with it)
        conn.execute(update(m.AuditEvent).where(m.AuditEvent.seq == since[0] - 1).values(hash=bytes(32)))
    result = _fresh(team).audit.verify(since=since)
    assert (result.ok, result.first_bad_seq) == (False, since[0])


# -- item 18: a purge as large as a client gets --------------------------------------------------------


def _bigco(team: Team, attacker: Engine, n: int = 600) -> None:
    """A client with ``n`` secrets whose ids have six digits, as in a vault in use for years."""
    if not storage.is_sqlite(attacker):
        _sql(attacker, "SELECT setval(pg_get_serial_sequence('secrets', 'id'), 100000)")
    team.admin.clients.add("bigco", "Big Co")
    for i in range(n):
        team.admin.secrets.add(f"bigco/host-{i:04d}", password=f"pw-{i}", username="jane.doe@example.com")


def test_purging_a_client_with_600_secrets_gives_a_receipt_that_verifies(team: Team, attacker: Engine) -> None:
    _bigco(team, attacker)
    receipt = team.admin.purge.client("bigco", request="GDPR-600")
    assert len(receipt.secret_ids) == 600
    check = team.admin.purge.verify_receipt(receipt.id)
    assert check.ok, check.problems
    assert team.admin.audit.verify().ok


def test_purging_a_subject_in_600_secrets_gives_a_receipt_that_verifies(team: Team, attacker: Engine) -> None:
    _bigco(team, attacker)
    (receipt,) = team.admin.subjects.purge("jane.doe@example.com", request="GDPR-601")
    assert len(receipt.secret_ids) == 600 and len(receipt.fingerprints) == 600  # 21,600 characters of them
    assert team.admin.purge.verify_receipt(receipt.id).ok
    assert team.admin.audit.verify().ok


@pytest.mark.parametrize(
    "values",
    [
        {"name": "x" * 65},  # longer than the column (PostgreSQL: StringDataRightTruncation)
        {"key_generation": 2**40},  # out of range (PostgreSQL: NumericValueOutOfRange)
        {"key_generation": 2**70},  # out of range for any integer column (SQLite: OverflowError)
        {"name": "nul\x00byte"},  # PostgreSQL text cannot hold NUL
    ],
)
def test_a_value_the_database_cannot_hold_is_invalid_input(team: Team, values: dict[str, Any]) -> None:
    store = storage.Store(team.url)
    try:
        row = {"name": "mallory", "role": "engineer", "status": "active", "key_generation": 1}
        row |= {"created_at": dt.datetime.now(dt.UTC)} | values
        try:
            with store.transaction() as s:
                s.execute(insert(m.Engineer).values(**row))
        except InvalidInput as error:
            assert "nothing was changed" in str(error)
        else:  # SQLite stores long text and NUL as given: then nothing was refused
            assert storage.is_sqlite(store.engine) and values.get("key_generation", 0) < 2**63
    finally:
        store.close()


# -- item 19: a lock held by another session -------------------------------------------------------------


def _hold_head(team: Team, held: threading.Event, release: threading.Event) -> None:
    engine = create_engine(team.url)
    try:
        with engine.connect() as conn:
            if storage.is_sqlite(engine):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.execute(select(m.AuditHead).with_for_update())
            held.set()
            release.wait(60)
            conn.rollback()
    finally:
        engine.dispose()


def test_a_checkout_fails_in_time_while_another_session_holds_the_audit_head(
    team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scene(team)
    monkeypatch.setenv("CREDVAULT_LOCK_TIMEOUT", "1")
    admin = _fresh(team)
    admin.vault_id()
    before = team.admin.audit.head()
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_head, args=(team, held, release))
    holder.start()
    outcome: dict[str, Any] = {}

    def checkout() -> None:
        started = time.monotonic()
        try:
            outcome["value"] = admin.checkouts.checkout(REF, reason="T-1 incident").value
        except VaultError as error:
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - started

    try:
        assert held.wait(20)
        worker = threading.Thread(target=checkout)
        worker.start()
        worker.join(15)
        finished = not worker.is_alive()
    finally:
        release.set()
        holder.join(30)
    worker.join(30)
    assert finished, "the checkout waited for the lock for more than 15 s"
    assert "value" not in outcome
    error = outcome["error"]
    assert isinstance(error, StoreBusy)
    assert "locked by another session" in str(error) and error.hint
    assert outcome["seconds"] < 10
    assert team.admin.audit.head() == before
    assert team.admin.checkouts.list() == []
