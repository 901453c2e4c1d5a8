"""Attacks from the engineer's own machine (issue 12, items 13–15).

* Item 13: the unlocked session in the OS keyring. A local attacker edits its expiry,
  or keeps a copy of the entry taken while it was unlocked and puts it back after
  ``lock``; neither may give them a working session.
* Item 14: a remote PostgreSQL URL without verified TLS (the clone attack through the
  config file or CREDVAULT_DB is in tests/cli/test_local_attacks.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from memory_keyring import MemoryKeyring

from vault import Vault
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.errors import ConfigurationError, Locked, SessionExpired
from vault.service.sessions import KEYRING_SERVICE, KeyringSessionStore
from vault.storage import engine as storage

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"  # tests/conftest.py's team


@pytest.fixture
def memory_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryKeyring]:
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))  # the private runtime directory lives here
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def _keyring_vault(team) -> Vault:
    return Vault.open(team.url, engineer=ADMIN, clock=team.clock, kdf_params=FAST_KDF, sessions=KeyringSessionStore())


def _entry(backend: MemoryKeyring) -> tuple[str, str]:
    (key,) = [k for k in backend.items if k[0] == KEYRING_SERVICE]
    return key


# -- item 13: the session in the keyring ----------------------------------------------------------


def test_an_edited_session_expiry_is_refused(team, memory_keyring: MemoryKeyring) -> None:
    _keyring_vault(team).engineers.unlock(ADMIN, ADMIN_PASS, ttl=dt.timedelta(minutes=15))
    key = _entry(memory_keyring)
    entry = json.loads(memory_keyring.items[key])
    entry["expires_at"] = int(entry["expires_at"]) + 86_400  # a day more, written by the attacker
    memory_keyring.items[key] = json.dumps(entry)
    team.clock.advance(hours=1)  # past the real expiry, well inside the forged one
    with pytest.raises(Locked):
        _keyring_vault(team).engineers.whoami()
    assert key not in memory_keyring.items  # the altered entry is gone


def test_a_copy_of_the_keyring_entry_taken_before_lock_opens_nothing(team, memory_keyring: MemoryKeyring) -> None:
    _keyring_vault(team).engineers.unlock(ADMIN, ADMIN_PASS)
    key = _entry(memory_keyring)
    stolen = memory_keyring.items[key]
    assert _keyring_vault(team).engineers.lock() is True
    memory_keyring.items[key] = stolen  # put back after lock
    with pytest.raises(Locked):
        _keyring_vault(team).engineers.whoami()
    # not after the next unlock either: that one has a new secret
    _keyring_vault(team).engineers.unlock(ADMIN, ADMIN_PASS)
    memory_keyring.items[key] = stolen
    with pytest.raises(Locked):
        _keyring_vault(team).engineers.whoami()


def test_the_keyring_entry_holds_no_key_in_the_clear(team, memory_keyring: MemoryKeyring) -> None:
    vault = _keyring_vault(team)
    vault.engineers.unlock(ADMIN, ADMIN_PASS)
    me = vault.keyholder.me()
    text = memory_keyring.items[_entry(memory_keyring)]
    for raw in (me.sealing_private, me.signing_seed):
        assert raw.hex() not in text and __import__("base64").b64encode(raw).decode() not in text
    assert vault.engineers.whoami().engineer == ADMIN  # and the honest user still works from it


def test_a_session_in_the_clear_from_an_older_version_is_removed_unread(team, memory_keyring: MemoryKeyring) -> None:
    vault = _keyring_vault(team)
    vault.engineers.unlock(ADMIN, ADMIN_PASS)
    key = _entry(memory_keyring)
    memory_keyring.items[key] = vault.keyholder.me().to_text()  # the v1 entry: the keys in the clear
    with pytest.raises(Locked) as caught:
        _keyring_vault(team).engineers.whoami()
    assert "does not open" in str(caught.value) and key not in memory_keyring.items


def test_an_expired_session_is_refused_and_removed_with_its_key_file(
    team, memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    _keyring_vault(team).engineers.unlock(ADMIN, ADMIN_PASS, ttl=dt.timedelta(minutes=15))
    key_files = list((tmp_path / "home" / "run").glob("session-*.key"))
    assert len(key_files) == 1 and (key_files[0].stat().st_mode & 0o777) == 0o600
    team.clock.advance(minutes=16)
    with pytest.raises(SessionExpired):
        _keyring_vault(team).engineers.whoami()
    assert memory_keyring.items == {} and not key_files[0].exists()


def test_lock_removes_the_key_file(team, memory_keyring: MemoryKeyring, tmp_path: Path) -> None:
    _keyring_vault(team).engineers.unlock(ADMIN, ADMIN_PASS)
    run = tmp_path / "home" / "run"
    assert list(run.glob("session-*.key"))
    assert _keyring_vault(team).engineers.lock() is True
    assert not list(run.glob("session-*.key")) and memory_keyring.items == {}
    assert os.stat(run).st_mode & 0o777 == 0o700


def test_an_unlock_over_a_session_left_behind_removes_its_secret_file(
    team, memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    run = tmp_path / "home" / "run"
    _keyring_vault(team).engineers.unlock(ADMIN, ADMIN_PASS, ttl=dt.timedelta(minutes=15))
    (first,) = run.glob("session-*.key")
    team.clock.advance(minutes=16)  # expired, never read again: left behind
    _keyring_vault(team).engineers.unlock(ADMIN, ADMIN_PASS)
    (second,) = run.glob("session-*.key")
    assert second != first and not first.exists()
    assert _keyring_vault(team).engineers.whoami().engineer == ADMIN


def test_two_unlocks_racing_leave_a_working_session_and_lock_ends_both(
    team, memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    """Two honest unlocks at once (two terminals, or two shells with their own runtime
    directory): whichever keyring entry is written last must open, and neither shell may
    be told its session was altered nor log the other out."""
    vault = _keyring_vault(team)
    vault.engineers.unlock(ADMIN, ADMIN_PASS)
    session = vault.keyholder.me()
    vid = session.vault_id
    text = session.to_text()
    here, there = KeyringSessionStore(key_dir=str(tmp_path / "a")), KeyringSessionStore(key_dir=str(tmp_path / "b"))
    for d in ("a", "b"):
        (tmp_path / d).mkdir(mode=0o700)
    # interleaved in one directory: A writes its file, B writes its file and its entry, then A its entry
    racing = KeyringSessionStore(key_dir=str(tmp_path / "a"))
    set_password = keyring.set_password
    calls: list[tuple[str, str, str]] = []

    def late_set(service: str, user: str, value: str) -> None:
        calls.append((service, user, value))

    keyring.set_password = late_set  # type: ignore[assignment]
    try:
        here.put(session)  # A: file written, entry held back
    finally:
        keyring.set_password = set_password  # type: ignore[assignment]
    racing.put(session)  # B: file and entry
    keyring.set_password(*calls[0])  # A's entry lands last
    assert here.get(vid, ADMIN) == text and racing.get(vid, ADMIN) == text
    # another runtime directory: its unlock wins; the first shell is merely not unlocked there
    there.put(session)
    assert here.get(vid, ADMIN) is None and there.get(vid, ADMIN) == text
    assert there.get(vid, ADMIN) == text  # the first shell's read destroyed nothing
    # lock removes every secret file of this engineer here, and the entry
    assert here.delete(vid, ADMIN) is True
    assert not list((tmp_path / "a").glob("session-*.key")) and memory_keyring.items == {}


# -- item 14: a remote PostgreSQL server must be verified ------------------------------------------


REMOTE = "postgresql+psycopg://vault@db.example.net/credvault"


@pytest.mark.parametrize("url", [REMOTE, REMOTE + "?sslmode=require", REMOTE + "?sslmode=verify-ca",
                                 "postgresql://vault@10.0.0.5:5432/credvault?sslmode=prefer"])  # fmt: skip
def test_a_remote_postgresql_url_without_verify_full_is_refused(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (storage.INSECURE_DB_ENV, "PGHOST", "PGSSLMODE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as caught:
        storage.make_engine(url)
    assert "verify-full" in (caught.value.hint or "") and "--insecure-db" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "url",
    [
        REMOTE + "?sslmode=verify-full",
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        "postgresql+psycopg://postgres@localhost/postgres",
        "postgresql+psycopg://postgres@[::1]/postgres",
        "postgresql+psycopg:///credvault",  # the local Unix socket
        "postgresql+psycopg://vault@/credvault?host=/var/run/postgresql",
    ],
)
def test_verified_tls_loopback_and_sockets_are_accepted(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (storage.INSECURE_DB_ENV, "PGHOST", "PGSSLMODE"):
        monkeypatch.delenv(name, raising=False)
    storage.make_engine(url).dispose()  # no connection is made: only the URL is judged


def test_libpq_environment_is_judged_as_libpq_would_use_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.INSECURE_DB_ENV, raising=False)
    monkeypatch.delenv("PGSSLMODE", raising=False)
    monkeypatch.setenv("PGHOST", "db.example.net")  # a URL without a host goes there, not to a socket
    with pytest.raises(ConfigurationError):
        storage.make_engine("postgresql+psycopg:///credvault")
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    storage.make_engine("postgresql+psycopg:///credvault").dispose()


def test_the_explicit_opt_out_accepts_a_remote_url_without_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.INSECURE_DB_ENV, raising=False)
    storage.make_engine(REMOTE, insecure=True).dispose()
    monkeypatch.setenv(storage.INSECURE_DB_ENV, "1")
    storage.make_engine(REMOTE).dispose()


# -- item 15: files other users could read ----------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The common default umask (022): files 0644 and folders 0755 unless made private."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_embedded_vault_its_wal_backups_and_exports_are_private(tmp_path: Path, open_umask: None) -> None:
    folder = tmp_path / "data" / "credvault"
    vault, _ = Vault.create(f"sqlite:///{folder / 'vault.db'}", admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FAST_KDF)
    try:
        vault.engineers.unlock(ADMIN, ADMIN_PASS)
        vault.clients.add("acme", "Acme Ltd")
        vault.backups.create(tmp_path / "vault.cvbk")
        vault.backups.export_keys(tmp_path / "keys.json")
        written = [folder / "vault.db", *folder.glob("vault.db-*"), tmp_path / "vault.cvbk", tmp_path / "keys.json"]
        assert (folder / "vault.db-wal").exists()
        for path in written:
            assert path.stat().st_mode & 0o777 == 0o600, path
        assert (folder.stat().st_mode & 0o777, folder.parent.stat().st_mode & 0o777) == (0o700, 0o700)
    finally:
        vault.close()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_vault_file_others_may_read_is_refused_without_the_flag(
    tmp_path: Path, mode: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(storage.ALLOW_READABLE_ENV, raising=False)
    path = tmp_path / "vault.db"
    Vault.create(f"sqlite:///{path}", admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FAST_KDF)[0].close()
    path.chmod(mode)
    with pytest.raises(ConfigurationError) as caught:
        Vault.open(f"sqlite:///{path}")
    assert f"chmod 600 {path}" in (caught.value.hint or "")
    storage.make_engine(f"sqlite:///{path}", allow_readable=True).dispose()
    monkeypatch.setenv(storage.ALLOW_READABLE_ENV, "1")
    Vault.open(f"sqlite:///{path}").close()


def test_a_readable_wal_beside_a_private_vault_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.ALLOW_READABLE_ENV, raising=False)
    path = tmp_path / "vault.db"
    Vault.create(f"sqlite:///{path}", admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FAST_KDF)[0].close()
    wal = tmp_path / "vault.db-wal"
    wal.touch()
    wal.chmod(0o644)  # left readable by an older version: it holds the newest pages
    with pytest.raises(ConfigurationError) as caught:
        Vault.open(f"sqlite:///{path}")
    assert "vault.db-wal" in str(caught.value)


# -- the files this machine keeps (pins, config, audit memory) ------------------------------------


def test_two_commands_saving_pins_at_once_both_finish_and_leave_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commands pinning at once (two terminals, the agent and a command): each writes
    through its own temporary file, so neither fails on the other's rename, and nothing is
    ever written into a file that others may read (a stale temporary file left 0644)."""
    from vault.service import config

    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(mode=0o700)
    stale = tmp_path / "home" / "pins.tmp"  # as an older version's crash left it
    stale.write_text("{}")
    stale.chmod(0o644)
    real_open = os.open
    modes: list[int] = []

    def other_command_saves_meanwhile(path: str, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        modes.append(os.fstat(fd).st_mode & 0o777)
        if len(modes) == 1:  # the second command saves while the first is half-way
            config.VaultPins({"sqlite:///other": "22" * 16}).save()
        return fd

    monkeypatch.setattr(config.os, "open", other_command_saves_meanwhile)
    config.VaultPins({"sqlite:///first": "11" * 16}).save()
    assert modes == [0o600, 0o600]
    assert config.VaultPins.load().pins == {"sqlite:///first": "11" * 16}  # the last rename wins, whole
    pins = tmp_path / "home" / "pins.json"
    assert pins.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "home").iterdir() if p.name.endswith(".tmp")] == ["pins.tmp"]  # ours: none


@pytest.mark.parametrize("text", ["", "{", "[]", '{"pins": []}', '{"pins": {"sqlite:///x": 1}}', "\xff"])
def test_a_corrupted_pins_file_is_a_clear_error_naming_it(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vault.service import config

    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path))
    config.VaultPins.path().write_text(text, encoding="latin-1")
    with pytest.raises(ConfigurationError) as caught:
        config.VaultPins.load()
    assert "pins.json" in str(caught.value) and "trust" in (caught.value.hint or "")


def test_a_pin_never_stores_the_database_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vault.service import config

    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path))
    pins = config.VaultPins()
    assert pins.check("postgresql+psycopg://vault:s3cret-pw@db.internal/credvault", "ab" * 16) is None  # first: silent
    text = config.VaultPins.path().read_text(encoding="utf-8")
    assert "s3cret-pw" not in text and "vault@db.internal" in text
    # the same database with another password is the same pin; another host is not
    assert config.VaultPins.load().check("postgresql+psycopg://vault:other@db.internal/credvault", "ab" * 16) is None
    with pytest.raises(ConfigurationError):
        config.VaultPins.load().check("postgresql+psycopg://vault:s3cret-pw@db.evil/credvault", "ab" * 16)
    with pytest.raises(ConfigurationError) as caught:
        config.VaultPins.load().check("postgresql+psycopg://vault@db.internal/credvault", "cd" * 16)
    assert "s3cret-pw" not in str(caught.value)
    url = "postgresql+psycopg://vault@db.internal/credvault"
    warning = config.VaultPins.load().check(url, "cd" * 16, trust_new=True)
    assert warning is not None and "cdcd" in warning and config.VaultPins.load().pins == {url: "cd" * 16}
