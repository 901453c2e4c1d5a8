"""A full disk or a read-only database (issue 6): a clear error, nothing revealed, nothing lost.

Two ways to run out of space, and every test of a full disk runs with both:

* ``tmpfs``: the SQLite vault lives on a 4 MiB filesystem mounted for the test (tmpfs;
  failing that, a loop-mounted ext4 image; failing both, e.g. without root, skipped with
  the reason), and a filler file takes every free block;
* ``max_page_count``: portable, runs anywhere: every transaction of every engine the test
  makes first sets ``PRAGMA max_page_count`` to the database's current size, so SQLite
  itself reports SQLITE_FULL when the file would grow.

Either way the test then writes throw-away updates until one fails, so that no slack is
left, and checks: writes (add, update, grant) raise ``StoreUnavailable`` saying the disk
is full and quoting no secret; a checkout raises ``AuditUnavailable`` and reveals nothing;
the CLI exits 1 with ``credvault: error:`` and a hint, no traceback and no secret; what
was written before is intact (``integrity_check``, the audit chain, exact values); after
space is freed the same operations succeed and nothing is lost.

The read-only tests remount the tmpfs read-only. The filesystems are unmounted in a
finaliser, always (lazily if something still holds them).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keyring
import keyring.errors
import pytest
from _fs import assert_clean, fill, mount_small, run, unmount
from click.testing import CliRunner, Result
from memory_keyring import MemoryKeyring
from sqlalchemy import select
from vault.cli.main import cli

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import AuditUnavailable, StoreUnavailable
from vault.service.sessions import MemorySessionStore
from vault.storage import engine as storage
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
REASON = "T-6 disk test"
SIZE_MIB = 4
# The values stored before the disk fills, and the ones the refused writes carry: none may
# appear in an error, and every one of the first must be readable afterwards.
VALUES = {f"acme/s{i}": f"stored before the disk filled #{i} ✓" for i in range(4)}
REFUSED = {"add": "refused new secret ✓", "update": "refused update ✓"}


# -- a small filesystem ---------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A freshly mounted 4 MiB filesystem (tmpfs, else loop ext4), unmounted afterwards."""
    where = tmp_path / "mnt"
    where.mkdir()
    why_not = mount_small(where, SIZE_MIB)
    if why_not is not None:
        pytest.skip(f"{why_not} (the max_page_count variant runs anyway)")
    try:
        yield where
    finally:
        unmount(where)


# -- two ways to fill the disk -------------------------------------------------------------------------------


class Disk:
    """Where the vault lives, and how its disk is filled and freed."""

    def __init__(self, kind: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind, self.folder, self.full = kind, folder, False
        self.path = folder / "vault.db"
        self.url = f"sqlite:///{self.path}"
        self.vaults: list[Vault] = []
        if kind == "max_page_count":
            real_begin = storage._sqlite_begin

            def begin(conn: Any) -> None:
                # the limit can only be lowered to the current size: 1 means "no more pages"
                conn.exec_driver_sql(f"PRAGMA max_page_count = {1 if self.full else 1 << 30}")
                real_begin(conn)

            monkeypatch.setattr(storage, "_sqlite_begin", begin)  # every engine made from now on

    def attach(self, sessions: Any, name: str = ADMIN) -> Vault:
        """A new Vault object (its own engine and connections) on a session unlocked before."""
        vault = Vault.open(self.url, engineer=name, sessions=sessions, kdf_params=FLOOR)
        self.vaults.append(vault)
        return vault

    def fill(self) -> None:
        self.full = True
        if self.kind == "tmpfs":
            fill(self.folder)

    def free(self) -> None:
        self.full = False
        if self.kind == "tmpfs":
            (self.folder / "filler").unlink()

    def close(self) -> None:
        for vault in self.vaults:
            vault.close()


@pytest.fixture(params=["tmpfs", "max_page_count"])
def disk(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    folder = request.getfixturevalue("small_fs") if request.param == "tmpfs" else tmp_path / "db"
    folder.mkdir(exist_ok=True)
    made = Disk(request.param, folder, monkeypatch)
    try:
        yield made
    finally:
        made.close()  # before small_fs unmounts


def _populate(disk: Disk) -> Vault:
    """A vault with client acme (VALUES and acme/probe) and engineer bob (no grant); its admin."""
    admin, _ = Vault.create(disk.url, admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FLOOR)
    disk.vaults.append(admin)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    admin.clients.add("acme", "Acme Ltd")
    for ref, value in VALUES.items():
        admin.secrets.add(ref, password=value, kind="equipment", host="10.0.0.1")
    admin.secrets.add("acme/probe", password="probe 0 ✓")
    code = admin.engineers.invite("bob")
    bob = Vault.open(disk.url, engineer="bob", sessions=MemorySessionStore(), kdf_params=FLOOR)
    admin.engineers.confirm("bob", bob.engineers.enroll("bob", code, "pass of bob"))
    bob.close()
    return admin


def _fill_until_writes_fail(disk: Disk, admin: Vault) -> list[str]:
    """Fill the disk, then update acme/probe until an update is refused; the values acknowledged."""
    disk.fill()
    acked = []
    for i in range(1, 3000):
        value = f"probe {i} ✓"
        try:
            admin.secrets.update("acme/probe", password=value)
        except StoreUnavailable as error:
            assert "disk is full" in str(error), str(error)
            _fill_slack(admin)
            return acked
        acked.append(value)
    raise AssertionError("the disk never filled")


def _fill_slack(admin: Vault) -> None:
    """Small writes (a listing's audit event each) until one is refused: a write smaller than
    an update (a grant) must not fit in what an update left over."""
    for _ in range(3000):
        try:
            admin.clients.list()
        except StoreUnavailable as error:
            assert "disk is full" in str(error), str(error)
            return
    raise AssertionError("the slack never filled")


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _events(admin: Vault, after: int) -> Counter[str]:
    with admin.store.transaction() as s:
        return Counter(s.scalars(select(m.AuditEvent.action).where(m.AuditEvent.seq > after)))


def _counts(admin: Vault) -> dict[str, int]:
    with admin.store.transaction() as s:
        return {name: len(s.execute(select(table)).all()) for name, table in m.Base.metadata.tables.items()}


def _writes(vault: Vault) -> dict[str, Callable[[], Any]]:
    return {
        "add": lambda: vault.secrets.add("acme/new", password=REFUSED["add"]),
        "update": lambda: vault.secrets.update("acme/s1", password=REFUSED["update"]),
        "grant": lambda: vault.grants.grant("bob", "acme", reason="T-6 grant"),
    }


def _assert_intact(disk: Disk, admin: Vault) -> None:
    assert _integrity(disk.path) == "ok"
    result = admin.audit.verify()
    assert result.ok, result.problem


# -- a full disk: the library --------------------------------------------------------------------------------


def test_a_full_disk_refuses_writes_clearly_reveals_nothing_and_loses_nothing(disk):
    admin = _populate(disk)
    acked = _fill_until_writes_fail(disk, admin)
    counts, head = _counts(admin), admin.audit.head()
    user = disk.attach(admin.sessions)  # a new engine and connection, made on the full disk

    for vault in (admin, user):
        for what, write in _writes(vault).items():
            with pytest.raises(StoreUnavailable) as caught:
                write()
            assert type(caught.value) is StoreUnavailable, what
            assert "disk is full" in str(caught.value), f"{what}: {caught.value}"
            assert "nothing was changed" in str(caught.value)
            assert_clean(caught.value, *REFUSED.values(), *VALUES.values())
        with pytest.raises(AuditUnavailable) as refused:
            vault.checkouts.checkout("acme/s2", reason=REASON)
        assert "disk is full" in str(refused.value) and "nothing was revealed" in str(refused.value)
        assert_clean(refused.value, *VALUES.values(), "probe")

    # nothing of the refused writes is there, and what was there is intact
    assert (_counts(admin), admin.audit.head()) == (counts, head)
    assert admin.checkouts.list() == []
    _assert_intact(disk, admin)

    disk.free()
    for what, write in _writes(user).items():
        write()
    assert user.checkouts.checkout("acme/s2", reason=REASON).value == VALUES["acme/s2"]
    assert _events(admin, head[0]) == Counter({"secret-create": 1, "secret-update": 1, "grant": 1, "checkout": 1})
    expected = {**VALUES, "acme/s1": REFUSED["update"], "acme/new": REFUSED["add"]}
    expected["acme/probe"] = acked[-1] if acked else "probe 0 ✓"
    for ref, value in expected.items():
        assert admin.checkouts.reveal(ref, reason=REASON) == value, ref
    assert [v.version for v in admin.secrets.history("acme/s1")] == [1, 2]
    assert [(g.engineer, g.state) for g in admin.grants.list(client="acme")] == [("bob", "active")]
    _assert_intact(disk, admin)


# -- a full disk: the CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated CREDVAULT_HOME (off the small filesystem) and an in-memory keyring."""
    home = tmp_path / "home"
    monkeypatch.setenv("CREDVAULT_HOME", str(home))
    for name in ("CREDVAULT_DB", "CREDVAULT_ENGINEER", "CREDVAULT_SESSION_TTL", "CREDVAULT_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        yield home
    finally:
        keyring.set_keyring(previous)


def _cli(disk: Disk, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--db", disk.url, "--as", ADMIN, *args], input=input)


def _assert_clean_cli_error(result: Result, *never: str) -> None:
    assert result.exit_code == 1, f"exit {result.exit_code}\n{result.output}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.startswith("credvault: error: "), result.stderr
    assert "\nhint: " in result.stderr, result.stderr
    assert "Traceback" not in result.output
    for secret in never:
        assert secret not in result.output, "a secret was printed"


def test_the_cli_on_a_full_disk_exits_with_a_clear_error_and_prints_no_secret(disk, cli_home, tmp_path):
    admin = _populate(disk)
    passfile = tmp_path / "admin.pass"
    passfile.write_text(ADMIN_PASS + "\n", encoding="utf-8")
    passfile.chmod(0o600)  # a passphrase file others may read is refused
    unlocked = _cli(disk, "unlock", "--passphrase-file", str(passfile))
    assert unlocked.exit_code == 0, unlocked.output
    _fill_until_writes_fail(disk, admin)
    head = admin.audit.head()

    commands = {
        "add": (("secret", "add", "acme/new", "--kind", "other", "--password-stdin"), REFUSED["add"] + "\n"),
        "update": (("secret", "update", "acme/s1", "--password-stdin"), REFUSED["update"] + "\n"),
        "grant": (("grant", "bob", "acme", "--reason", "T-6"), None),
        "checkout": (("checkout", "acme/s2", "--reason", REASON, "--show"), None),
    }
    for what, (args, stdin) in commands.items():
        result = _cli(disk, *args, input=stdin)
        _assert_clean_cli_error(result, *REFUSED.values(), *VALUES.values())
        assert "disk is full" in result.stderr, f"{what}: {result.stderr}"
        if what == "checkout":
            assert "nothing was revealed" in result.stderr
    assert admin.audit.head() == head
    _assert_intact(disk, admin)

    disk.free()
    for what, (args, stdin) in commands.items():
        result = _cli(disk, *args, input=stdin)
        assert result.exit_code == 0, f"{what}: {result.output}"
    assert result.stdout.strip().splitlines()[0] == VALUES["acme/s2"]  # the checkout printed the value
    assert admin.checkouts.reveal("acme/s1", reason=REASON) == REFUSED["update"]
    assert admin.checkouts.reveal("acme/new", reason=REASON) == REFUSED["add"]
    for ref in ("acme/s0", "acme/s2", "acme/s3"):
        assert admin.checkouts.reveal(ref, reason=REASON) == VALUES[ref]
    _assert_intact(disk, admin)


# -- a disk that was full before the vault was opened -----------------------------------------------------------


def test_a_vault_opened_on_a_disk_that_is_already_full_says_the_disk_is_full(small_fs):
    """Every CLI command opens the vault afresh; when the last one closed it, SQLite removed
    the WAL and its index, and on a full disk the index cannot be made again."""
    disk = Disk("tmpfs", small_fs, pytest.MonkeyPatch())
    try:
        _populate(disk)
        disk.close()
        disk.fill()
        vault = Vault.open(disk.url, engineer=ADMIN, sessions=MemorySessionStore(), kdf_params=FLOOR)
        disk.vaults.append(vault)
        with pytest.raises(StoreUnavailable) as caught:
            vault.engineers.unlock(ADMIN, ADMIN_PASS)
        assert_clean(caught.value, *VALUES.values())
        assert "disk is full" in str(caught.value), str(caught.value)
    finally:
        disk.close()


# -- a read-only filesystem ---------------------------------------------------------------------------------------


def _read_only_vault(small_fs: Path) -> tuple[Disk, dict[str, int], tuple[int, bytes], MemorySessionStore]:
    """A vault on small_fs, closed, then the filesystem remounted read-only."""
    disk = Disk("tmpfs", small_fs, pytest.MonkeyPatch())
    admin = _populate(disk)
    admin.grants.grant("bob", "acme", reason="T-6 grant")
    counts, head, sessions = _counts(admin), admin.audit.head(), admin.sessions
    disk.close()  # the last connection closes: SQLite folds the WAL into the file and removes it
    remounted = run("mount", "-o", "remount,ro", str(small_fs))
    assert remounted.returncode == 0, remounted.stderr
    return disk, counts, head, sessions  # type: ignore[return-value]


def _remount_rw(small_fs: Path) -> None:
    remounted = run("mount", "-o", "remount,rw", str(small_fs))
    assert remounted.returncode == 0, remounted.stderr


def test_a_vault_on_a_read_only_filesystem_fails_closed_reads_with_an_immutable_url_and_loses_nothing(small_fs):
    disk, counts, head, sessions = _read_only_vault(small_fs)
    try:
        # the plain URL: SQLite cannot open a WAL database it cannot write; a clean error, nothing revealed
        plain = disk.attach(sessions)
        for call in (plain.audit.head, *_writes(plain).values(), lambda: plain.engineers.unlock(ADMIN, ADMIN_PASS)):
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert_clean(caught.value, *REFUSED.values(), *VALUES.values())
        with pytest.raises(AuditUnavailable) as refused:
            plain.checkouts.checkout("acme/s2", reason=REASON)
        assert_clean(refused.value, *VALUES.values())

        # read-only and immutable: what needs no audit event can be read; everything else is refused
        url = f"sqlite:///file:{disk.path}?mode=ro&immutable=1&uri=true"
        reader = Vault.open(url, engineer=ADMIN, sessions=sessions, kdf_params=FLOOR)
        disk.vaults.append(reader)  # (on the same file: attach would use the plain URL)
        assert reader.audit.head() == head
        result = reader.audit.verify()
        assert result.ok and result.head_seq == head[0], result.problem
        assert [(g.engineer, g.client, g.state) for g in reader.grants.list()] == [("bob", "acme", "active")]
        assert len(reader.audit.log()) == head[0]
        for what, write in _writes(reader).items():
            with pytest.raises(StoreUnavailable) as caught:
                write()
            assert "read-only" in str(caught.value), f"{what}: {caught.value}"
            assert_clean(caught.value, *REFUSED.values(), *VALUES.values())
        with pytest.raises(StoreUnavailable) as caught:
            reader.engineers.unlock(ADMIN, ADMIN_PASS)  # unlocking is on the record too
        assert "read-only" in str(caught.value)
        with pytest.raises(AuditUnavailable) as refused:
            reader.checkouts.checkout("acme/s2", reason=REASON)
        assert "read-only" in str(refused.value) and "nothing was revealed" in str(refused.value)
        assert_clean(refused.value, *VALUES.values())
        disk.close()
    finally:
        _remount_rw(small_fs)

    admin = disk.attach(sessions)
    assert (_counts(admin), admin.audit.head()) == (counts, head)
    for ref, value in VALUES.items():
        assert admin.checkouts.reveal(ref, reason=REASON) == value
    _assert_intact(disk, admin)


def test_a_vault_on_a_read_only_filesystem_says_it_is_read_only(small_fs):
    disk, _counts_before, _head, sessions = _read_only_vault(small_fs)
    try:
        vault = disk.attach(sessions)
        with pytest.raises(StoreUnavailable) as caught:
            vault.secrets.add("acme/new", password=REFUSED["add"])
        assert "read-only" in str(caught.value), str(caught.value)
    finally:
        disk.close()
        _remount_rw(small_fs)
