"""Prepared statements (vault/storage/prepared.py) read and write exactly what
``Connection.execute`` does, raise the same exceptions, and are seen by the engine's
statement listeners. Every statement of the checkout path is compared, on both engines
(each runs on its driver: sqlite3, psycopg), against ``Connection.execute``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import event, exc, insert, select

from vault.authority import checkout_reads as reads
from vault.errors import StoreUnavailable
from vault.service import rows
from vault.storage import models as m
from vault.storage.prepared import Prepared, pipelined

REF, PW, REASON = "acme/fw01", "acme-pw-1", "T-1 prepared"


@pytest.fixture
def acme(team):  # type: ignore[no-untyped-def]
    """A client with a secret, an engineer holding a grant, and open checkouts by both."""
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add(REF, password=PW)
    alice = team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    alice.checkouts.checkout(REF, reason=REASON)
    team.admin.checkouts.checkout(REF, reason=REASON)
    with team.admin.store.transaction() as s:
        secret = s.scalars(select(m.Secret)).one()
        alice_id = s.scalar(select(m.Engineer.id).where(m.Engineer.name == "alice"))
    team.ids = {"secret": secret.id, "client": secret.client_id, "tag": secret.name_tag, "alice": alice_id}
    return team


def _same_as_execute(conn: Any, prepared: Prepared, values: dict[str, Any]) -> list[tuple[Any, ...]]:
    got = prepared.all(conn, values)
    assert got == [tuple(r) for r in conn.execute(prepared.statement, values)]
    return got


def test_every_read_of_the_checkout_path_returns_what_execute_returns(acme):
    """The checkout authority's prepared reads (vault/authority/checkout_reads.py) and the holds."""
    ids, now = acme.ids, acme.clock()
    with acme.admin.store.transaction() as s:
        slug_tag = s.scalar(select(m.Client.slug_tag))
    head = acme.admin.audit.head()
    with acme.admin.store.unit() as s:
        conn = rows.connection(s)
        sqlite = conn.dialect.name == "sqlite"
        for by_slug_tag in (True, False):
            values = {"me": ids["alice"], "tag": ids["tag"], "version": None, "now": now, "client": ids["client"]}
            if by_slug_tag:
                values["slug_tag"] = slug_tag
            found = _same_as_execute(conn, reads.TARGET[by_slug_tag, sqlite], values)
            assert len(found) >= 1 and ids["secret"] in found[0]
        caller = _same_as_execute(conn, reads.CALLER[sqlite], {"me": ids["alice"], "client": ids["client"]})
        assert len(caller) == 1 and "alice" in caller[0]
        holds = _same_as_execute(conn, rows.HOLDS, {"secret": ids["secret"], "now": now})
        assert len(holds) == 2
        for hold in map(rows.HoldRow._make, holds):
            assert hold.expires_at.tzinfo is not None and hold.expires_at > now  # a UTC time, as the ORM gives
            assert hold.exclusive is False  # a bool, not SQLite's 0
        assert _same_as_execute(conn, rows.HEAD_FOR_UPDATE, {}) == [head]
        assert _same_as_execute(conn, rows.HOLDS, {"secret": ids["secret"], "now": now + dt.timedelta(days=30)}) == []


def test_writes_store_what_execute_stores(acme):
    ids, now = acme.ids, acme.clock()
    start = now.replace(microsecond=123456)
    values = {
        "secret_id": ids["secret"],
        "client_id": ids["client"],
        "engineer_id": ids["alice"],
        "exclusive": True,
        "event_seq": 7,
        "started_at": start,
        "expires_at": start + dt.timedelta(hours=2),
    }
    with acme.admin.store.unit() as s:
        conn = rows.connection(s)
        before = set(s.scalars(select(m.Checkout.id)))
        rows.ADD_CHECKOUT.run(conn, values)
        conn.execute(insert(m.Checkout), values)
        new = [c for c in s.scalars(select(m.Checkout).order_by(m.Checkout.id)) if c.id not in before]
        assert len(new) == 2
        columns = [*rows.CHECKOUT_COLUMNS, "released_at", "released_by"]
        assert [getattr(new[0], c) for c in columns] == [getattr(new[1], c) for c in columns]
        assert new[0].started_at == start and new[0].exclusive is True
        # And the same bytes in the database, not only equal once read back through the ORM.
        raw = conn.exec_driver_sql(
            "SELECT started_at, expires_at, exclusive, released_at FROM checkouts "
            f"WHERE id IN ({new[0].id}, {new[1].id}) ORDER BY id"
        ).all()
        assert raw[0] == raw[1]
        rows.REPLACE.run_many(conn, [{"checkout": c.id, "at": now} for c in new])
        rows.TOUCH_AND_FLAG_SECRET.run(conn, {"secret": ids["secret"], "at": start})
    with acme.admin.store.transaction() as s:
        assert all(s.get(m.Checkout, c.id).released_at == now for c in new)  # type: ignore[union-attr]
        secret = s.get(m.Secret, ids["secret"])
        assert secret is not None and secret.must_change is True and secret.last_used_at == start


def test_listeners_see_each_statement_and_an_empty_batch_sends_nothing(acme):
    seen: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        seen.append((statement, parameters))

    event.listen(acme.admin.store.engine, "before_cursor_execute", keep)
    try:
        with acme.admin.store.unit() as s:
            conn = rows.connection(s)
            seen.clear()
            rows.RELEASE.run_many(conn, [])
            assert seen == []
            rows.TOUCH_SECRET.run(conn, {"secret": acme.ids["secret"], "at": acme.clock()})
    finally:
        event.remove(acme.admin.store.engine, "before_cursor_execute", keep)
    touched = [(sql, p) for sql, p in seen if sql.lstrip().upper().startswith("UPDATE SECRETS")]
    assert len(touched) == 1
    parameters = touched[0][1]
    values = parameters.values() if isinstance(parameters, dict) else parameters
    assert acme.ids["secret"] in list(values)


def test_a_missing_parameter_is_refused_before_anything_is_sent(acme):
    with acme.admin.store.unit() as s:
        conn = rows.connection(s)
        with pytest.raises(exc.SQLAlchemyError, match=r"(?i)a value is required for bind parameter 'now'"):
            rows.HOLDS.all(conn, {"secret": acme.ids["secret"]})


def test_a_driver_error_is_sqlalchemys_exception_and_the_store_maps_it(acme):
    values = {c: 1 for c in rows.CHECKOUT_COLUMNS} | {"secret_id": 999_999, "exclusive": False}
    values |= {"started_at": acme.clock(), "expires_at": acme.clock()}
    with pytest.raises(exc.IntegrityError), acme.admin.store.engine.begin() as conn:  # no such secret: the FK
        rows.ADD_CHECKOUT.run(conn, values)
    with pytest.raises(StoreUnavailable) as caught, acme.admin.store.unit() as s:
        rows.ADD_CHECKOUT.run(rows.connection(s), values)
    assert "999999" not in str(caught.value) and caught.value.__cause__ is None
    with acme.admin.store.transaction() as s:  # nothing was written
        assert s.scalar(select(m.Checkout.id).where(m.Checkout.secret_id == 999_999)) is None


def test_a_statement_whose_text_depends_on_its_values_is_refused_on_first_use(acme):
    """An IN list is compiled per call; a statement compiled once cannot take one (SQLite and
    psycopg both run on the driver)."""
    in_list = Prepared(select(m.Secret.id).where(m.Secret.id.in_([acme.ids["secret"], -1])))
    with acme.admin.store.unit() as s:
        conn = rows.connection(s)
        with pytest.raises(ValueError, match="expanding"):
            in_list.all(conn)


def test_a_lost_server_connection_is_invalidated_as_execute_would(acme):
    """PostgreSQL: the server ends the connection mid-unit; the statement on the driver fails as
    ``Connection.execute`` would (mapped, the connection and the pool invalidated), and the next
    unit works on a fresh connection."""
    store = acme.admin.store
    if store.engine.dialect.name == "sqlite":
        pytest.skip("a server connection is PostgreSQL's")
    with store.engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with store.engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        with pytest.raises(exc.DBAPIError) as caught:
            reads.NAME.all(conn, {"id": acme.ids["alice"]})
        assert caught.value.connection_invalidated and conn.invalidated
    with pytest.raises(StoreUnavailable), store.unit() as s:
        conn = rows.connection(s)
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with store.engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        reads.NAME.all(conn, {"id": acme.ids["alice"]})
    with store.unit() as s:
        assert reads.NAME.all(rows.connection(s), {"id": acme.ids["alice"]}) == [("alice",)]


# -- pipelined: several statements (and the commit) in one round trip on psycopg -----------------


def _pipeline_on(conn: Any) -> bool:
    """Whether the connection's driver is in pipeline mode now (psycopg; never on SQLite)."""
    driver = conn.connection.driver_connection
    pgconn = getattr(driver, "pgconn", None)
    return pgconn is not None and bool(pgconn.pipeline_status)


def test_pipelined_steps_return_what_each_returns_alone(acme):
    ids, now = acme.ids, acme.clock()
    steps = [
        (rows.HEAD_FOR_UPDATE, {}),
        (rows.HOLDS, {"secret": ids["secret"], "now": now}),
        (rows.TOUCH_SECRET, {"secret": ids["secret"], "at": now}),
        (reads.NAME, {"id": ids["alice"]}),
    ]
    with acme.admin.store.unit() as s:
        conn = rows.connection(s)
        alone = [prepared.returned(conn, values) for prepared, values in steps]
        together = pipelined(conn, steps)
    assert together == alone
    assert together[2] == [] and together[3] == [("alice",)] and len(together[1]) == 2


def test_pipelined_writes_commit_with_the_unit(acme):
    ids, now = acme.ids, acme.clock()
    start = now.replace(microsecond=654321)
    hold = {c: ids[c.removesuffix("_id")] for c in ("secret_id", "client_id")} | {"engineer_id": ids["alice"]}
    hold |= {"exclusive": False, "event_seq": 3, "started_at": start, "expires_at": start + dt.timedelta(hours=1)}
    store = acme.admin.store
    with store.unit() as s:
        conn = rows.connection(s)
        steps = [(rows.TOUCH_SECRET, {"secret": ids["secret"], "at": start}), (rows.ADD_CHECKOUT, hold)]
        touched, added = pipelined(conn, steps)
        assert touched == [] and len(added) <= 1  # an INSERT returns its id where the dialect does
        assert conn.in_transaction()  # the unit commits
    with store.transaction() as s:  # another unit sees both writes
        secret = s.get(m.Secret, ids["secret"])
        assert secret is not None and secret.last_used_at == start
        assert s.scalar(select(m.Checkout.id).where(m.Checkout.started_at == start)) is not None


def test_on_postgresql_the_steps_travel_in_one_pipeline(acme):
    """The claim the team server's checkout relies on (its head lock held for fewer round trips):
    every step is sent in pipeline mode on psycopg; on SQLite, one by one."""
    modes: list[bool] = []

    def keep(conn: Any, *_args: Any) -> None:
        modes.append(_pipeline_on(conn))

    store = acme.admin.store
    event.listen(store.engine, "before_cursor_execute", keep)
    try:
        with store.unit() as s:
            conn = rows.connection(s)
            modes.clear()
            pipelined(conn, [(rows.HEAD_FOR_UPDATE, {}), (reads.NAME, {"id": acme.ids["alice"]})])
            steps = list(modes)
            modes.clear()
            rows.HEAD_FOR_UPDATE.all(conn, {})
    finally:
        event.remove(store.engine, "before_cursor_execute", keep)
    pipelining = store.engine.dialect.name != "sqlite"
    assert steps == [pipelining, pipelining] and modes == [False]


def test_a_failing_step_fails_the_pipeline_and_the_unit_writes_nothing(acme):
    ids, now = acme.ids, acme.clock()
    store = acme.admin.store
    with store.transaction() as s:
        before = s.get(m.Secret, ids["secret"]).last_used_at  # type: ignore[union-attr]
    bad = {c: 1 for c in rows.CHECKOUT_COLUMNS} | {"secret_id": 999_999, "exclusive": False}
    bad |= {"started_at": now, "expires_at": now}
    touch = (rows.TOUCH_SECRET, {"secret": ids["secret"], "at": now + dt.timedelta(days=1)})
    with pytest.raises(StoreUnavailable) as caught, store.unit() as s:
        pipelined(rows.connection(s), [touch, (rows.ADD_CHECKOUT, bad)])
    assert "999999" not in str(caught.value)
    with store.transaction() as s:  # the touch before the failing step was rolled back with it
        assert s.get(m.Secret, ids["secret"]).last_used_at == before  # type: ignore[union-attr]
        assert s.scalar(select(m.Checkout.id).where(m.Checkout.secret_id == 999_999)) is None
    with store.unit() as s:  # and the pooled connection works on
        assert reads.NAME.all(rows.connection(s), {"id": ids["alice"]}) == [("alice",)]
