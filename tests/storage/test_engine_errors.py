"""Driver errors become StoreUnavailable / ConfigurationError, without driver text."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import pytest
from sqlalchemy import func, select

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import AuditUnavailable, ConfigurationError, StoreUnavailable, VaultError
from vault.service.sessions import MemorySessionStore
from vault.storage import engine as storage
from vault.storage import models as m

UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/credvault"
DRIVER_WORDS = (
    "Traceback",
    "psycopg.",
    "sqlite3",
    "Error:",
    "errno",
    "Background on this error",
    "sqlalche.me",
    "[SQL:",
    "port 1 failed",
)


def assert_clean(error: VaultError) -> None:
    """No driver message, SQL or traceback in the message or hint; the driver error is not chained."""
    for text in (str(error), error.hint):
        for word in DRIVER_WORDS:
            assert word.lower() not in text.lower(), f"driver text {word!r} leaked into {text!r}"
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__, "the driver exception must not be shown as context"


def _entry_points(url: str):  # type: ignore[no-untyped-def]
    yield "Vault.create", lambda: Vault.create(url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    yield "unlock", lambda: Vault.open(url).engineers.unlock("root-admin", "pass")
    yield "upgrade", lambda: storage.upgrade(storage.Store(url))
    yield "current_revision", lambda: storage.current_revision(storage.Store(url))


def test_an_unreachable_postgresql_server_raises_store_unavailable():
    for what, call in _entry_points(UNREACHABLE_PG):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert time.monotonic() - started < 5, f"{what} did not fail fast on a refused connection"
        assert_clean(caught.value)


def test_an_sqlite_path_in_an_impossible_place_raises_store_unavailable(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    impossible = [
        "sqlite:////proc/nonexistent/x.db",  # a folder that cannot be created
        f"sqlite:///{tmp_path / 'a-file' / 'x.db'}",  # its parent is a file
        f"sqlite:///{tmp_path}",  # the path is a folder
    ]
    for url in impossible:
        for what, call in _entry_points(url):
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert_clean(caught.value)
            assert what and not (tmp_path / "a-file").is_dir()


@pytest.mark.parametrize("url", ["not a url", "://", "mysql://user@host/db", "oracle+cx_oracle://h/db"])
def test_a_malformed_or_unsupported_url_raises_configuration_error(url):
    with pytest.raises(ConfigurationError) as caught:
        Vault.open(url)
    assert_clean(caught.value)


def test_a_url_with_a_non_numeric_port_raises_configuration_error():
    with pytest.raises(ConfigurationError) as caught:
        Vault.open("postgresql+psycopg://postgres@127.0.0.1:notaport/db")
    assert_clean(caught.value)


@pytest.fixture
def vault_file(tmp_path):  # type: ignore[no-untyped-def]
    """A vault with a client, the admin's session, and the path of its file."""
    path = tmp_path / "vault.db"
    sessions = MemorySessionStore()
    admin, _ = Vault.create(
        f"sqlite:///{path}", admin="root-admin", passphrase="pass", kdf_params=FLOOR, sessions=sessions
    )
    admin.engineers.unlock("root-admin", "pass")
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password="pw-1")
    admin.close()
    return path, sessions


def _counts(url: str) -> dict[str, int]:
    store = storage.Store(url)
    try:
        with store.transaction() as s:
            return {
                name: int(s.scalar(select(func.count()).select_from(t)) or 0)
                for name, t in m.Base.metadata.tables.items()
            }
    finally:
        store.close()


def test_writes_to_a_read_only_sqlite_database_raise_store_unavailable_and_change_nothing(
    vault_file, tmp_path, monkeypatch
):
    path, sessions = vault_file
    monkeypatch.chdir(tmp_path)
    before = _counts(f"sqlite:///{path}")
    readonly = Vault.open(f"sqlite:///file:{path}?mode=ro&uri=true", engineer="root-admin", sessions=sessions)
    try:
        writes = [
            lambda: readonly.clients.add("globex", "Globex"),
            lambda: readonly.secrets.add("acme/fw02", password="pw-2"),
            lambda: readonly.secrets.update("acme/fw01", password="pw-3"),
            lambda: readonly.engineers.invite("alice"),
        ]
        for write in writes:
            with pytest.raises(StoreUnavailable) as caught:
                write()
            assert "read-only" in str(caught.value)
            assert_clean(caught.value)
    finally:
        readonly.close()
    assert _counts(f"sqlite:///{path}") == before
    writer = Vault.open(f"sqlite:///{path}", engineer="root-admin", sessions=sessions)
    try:
        assert writer.checkouts.reveal("acme/fw01", reason="T-1") == "pw-1"
    finally:
        writer.close()


def test_opening_an_sqlite_uri_url_creates_nothing_in_the_working_directory(vault_file, tmp_path, monkeypatch):
    path, _ = vault_file
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    Vault.open(f"sqlite:///file:{path}?mode=ro&uri=true").close()
    assert list(Path(cwd).iterdir()) == []


def test_a_read_only_sqlite_database_serves_what_needs_no_audit_event_and_reveals_nothing(
    vault_file, tmp_path, monkeypatch
):
    """Reading the log, verifying it and listing grants write nothing, so they work; a
    checkout, a reveal and an unlock are on the record, so they are refused, fail closed."""
    path, sessions = vault_file
    monkeypatch.chdir(tmp_path)
    before = _counts(f"sqlite:///{path}")
    readonly = Vault.open(f"sqlite:///file:{path}?mode=ro&uri=true", engineer="root-admin", sessions=sessions)
    try:
        seq, _hash = readonly.audit.head()
        assert seq > 0
        result = readonly.audit.verify()
        assert result.ok and result.head_seq == seq, result.problem
        assert [e.seq for e in readonly.audit.log()] == list(range(1, seq + 1))
        assert readonly.grants.list() == []
        assert readonly.engineers.whoami().engineer == "root-admin"
        for reveal in (
            lambda: readonly.checkouts.checkout("acme/fw01", reason="T-1"),
            lambda: readonly.checkouts.reveal("acme/fw01", reason="T-1"),
        ):
            with pytest.raises(AuditUnavailable) as caught:
                reveal()
            assert "read-only" in str(caught.value) and "nothing was revealed" in str(caught.value)
            assert_clean(caught.value)
            error = caught.value
            shown = [str(error), error.hint, repr(error), *traceback.format_exception(error)]
            assert not any("pw-1" in text for text in shown), "the value is in the exception"
        with pytest.raises(StoreUnavailable) as refused:
            readonly.engineers.unlock("root-admin", "pass")
        assert "read-only" in str(refused.value)
        assert_clean(refused.value)
    finally:
        readonly.close()
    assert _counts(f"sqlite:///{path}") == before


def test_a_driver_error_on_the_verifiers_own_cursor_raises_store_unavailable(team, monkeypatch):
    """``auditchain.check_range`` reads events on a DB-API cursor of its own (the anchor of
    a root rotation's signers), below SQLAlchemy: the driver's raw exception is mapped too,
    not shown as a failed bug. ``audit verify`` reads its pages through the audit chain's
    authority (vault/authority/audit_verify.py): a driver error there is mapped alike."""
    from vault.authority import audit_verify
    from vault.keyholder import auditchain

    monkeypatch.setattr(auditchain, "_sql", lambda _dialect, _statement: "SELECT * FROM no_such_table_here")
    with pytest.raises(StoreUnavailable) as caught, team.admin.store.read() as s:
        connection = s.connection()
        auditchain.check_range(connection.connection, connection.dialect, b"\x00" * 16, {}, 1, 1)
    assert_clean(caught.value)
    assert "no credvault schema" in str(caught.value)

    def broken(conn, *_args, **_kwargs):  # type: ignore[no-untyped-def]
        return list(conn.exec_driver_sql("SELECT * FROM no_such_table_here"))

    monkeypatch.setattr(audit_verify.event_rows, "chained_page", broken)
    with pytest.raises(StoreUnavailable) as caught:
        team.admin.audit.verify()
    assert_clean(caught.value)
    assert "no credvault schema" in str(caught.value)
