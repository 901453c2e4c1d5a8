"""PostgreSQL on a full disk (issue 6): a clear error, nothing revealed, nothing lost.

A private cluster (``pgcluster.py``, never the shared server) keeps its data directory
on a small tmpfs (``_fs.py``; mounting needs root, so without it this is skipped). With
a vault and four secrets written, a filler file takes every free block; then each kind
of write (update, checkout, add, grant) is made again and again until the database
refuses it, so that no table it touches has room left in its pages. Each refusal must be
``StoreUnavailable`` (``AuditUnavailable`` for a checkout, which returns nothing) saying
the disk is full, or that the server is unreachable if it stopped (PostgreSQL stops
when it cannot write its WAL), with no secret and no driver text in it. After the space
is given back (and the server restarted, if it stopped), the same ``Vault`` object works
again, every acknowledged write is there with its value, no refused one is, there is
exactly one event per acknowledged checkout, and the audit chain verifies.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _fs import assert_clean, fill, mount_small, unmount
from pgcluster import PgCluster, PgClusterError, find_bindir
from sqlalchemy import func, select

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import AuditUnavailable, NotFound, StoreUnavailable
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

pytestmark = pytest.mark.postgres

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
REASON = "T-6 disk test"
SIZE_MIB = 96  # initdb takes about 40 MiB
MAX_TRIES = 5000  # writes of one kind before the test gives up on the disk filling
VALUES = {f"acme/s{i}": f"stored before the disk filled #{i} ✓" for i in range(4)}
SAID = ("the disk is full", "unreachable")


@pytest.fixture
def full_cluster() -> Iterator[tuple[PgCluster, Path]]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres) under /usr/lib/postgresql/*/bin")
    mount = Path(tempfile.mkdtemp(prefix="cvfull-", dir="/tmp"))  # short: the server's socket lives below
    why_not = mount_small(mount, SIZE_MIB, mode="0755")
    if why_not is not None:
        mount.rmdir()
        pytest.skip(why_not)
    pg = PgCluster(bindir)
    try:
        try:
            pg.create(parent=mount)
            pg.start()
        except (PgClusterError, OSError) as error:
            if os.environ.get("CREDVAULT_REQUIRE_PG") == "1":
                pytest.fail(f"CREDVAULT_REQUIRE_PG=1 but the private PostgreSQL cluster did not start: {error}")
            pytest.skip(f"the private PostgreSQL cluster did not start: {error}")
        yield pg, mount
    finally:
        pg.destroy()
        unmount(mount)
        mount.rmdir()


def _enrol(url: str, admin: Vault, name: str) -> None:
    code = admin.engineers.invite(name)
    theirs = Vault.open(url, kdf_params=FLOOR, sessions=MemorySessionStore())
    admin.engineers.confirm(name, theirs.engineers.enroll(name, code, f"pass of {name}"))
    theirs.close()


def test_postgresql_on_a_full_disk_refuses_writes_clearly_reveals_nothing_and_loses_nothing(full_cluster):
    pg, mount = full_cluster
    url = pg.url()
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FLOOR, sessions=MemorySessionStore())
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    admin.clients.add("acme", "Acme Ltd")
    for ref, password in VALUES.items():
        admin.secrets.add(ref, password=password)
    _enrol(url, admin, "bob")
    values = dict(VALUES)  # what must be readable at the end
    refused: dict[str, str] = {}  # what a refused write carried: never stored, never shown
    checkouts = 0
    said: Counter[str] = Counter()  # the messages of the refusals
    failed: list[str] = []

    def update(i: int) -> Callable[[], Any]:
        value = f"update {i} ✓"

        def call() -> None:
            refused["update"] = value
            admin.secrets.update("acme/s1", password=value)
            values["acme/s1"] = value

        return call

    def checkout(_i: int) -> Callable[[], Any]:
        def call() -> None:
            nonlocal checkouts
            assert admin.checkouts.checkout("acme/s0", reason=REASON).value == VALUES["acme/s0"]
            checkouts += 1

        return call

    def add(i: int) -> Callable[[], Any]:
        ref, value = f"acme/new{i}", f"new secret {i} ✓"

        def call() -> None:
            refused["add"], refused["add-ref"] = value, ref
            admin.secrets.add(ref, password=value)
            values[ref] = value

        return call

    def grant(_i: int) -> Callable[[], Any]:
        return lambda: admin.grants.grant("bob", "acme", reason="T-6 grant")

    filler = fill(mount)
    for kind, make in (("update", update), ("checkout", checkout), ("add", add), ("grant", grant)):
        for i in range(MAX_TRIES):
            try:
                make(i)()
            except (StoreUnavailable, AuditUnavailable) as error:
                assert isinstance(error, AuditUnavailable) == (kind == "checkout"), (kind, error)
                assert any(words in str(error) for words in SAID), f"{kind}: {error}"
                assert_clean(error, *VALUES.values(), *refused.values())
                said[str(error)] += 1
                failed.append(kind)
                break
        else:
            pytest.fail(f"{MAX_TRIES} {kind} writes on a full disk all succeeded")
    assert failed == ["update", "checkout", "add", "grant"]
    # The server stays up when a table cannot grow (SQLSTATE 53100): that is what is named.
    assert any("the disk is full" in message for message in said), said

    filler.unlink()  # the space comes back; a server that stopped is started again
    if not pg.running or pg.postmaster_pid() is None:
        pg.start()
    _wait_until_it_answers(admin)
    assert "add-ref" in refused
    with pytest.raises(NotFound):
        admin.checkouts.reveal(refused["add-ref"], reason=REASON)
    for ref, value in values.items():
        assert admin.checkouts.reveal(ref, reason=REASON) == value, ref
    assert refused["update"] != values["acme/s1"]
    with admin.store.transaction() as s:
        events = s.scalar(select(func.count()).select_from(m.AuditEvent).where(m.AuditEvent.action == "checkout"))
    assert events == checkouts  # one event per acknowledged checkout, none for the refused one
    assert admin.audit.verify().ok
    admin.secrets.update("acme/s2", password="after the disk was freed ✓")
    assert admin.checkouts.reveal("acme/s2", reason=REASON) == "after the disk was freed ✓"
    admin.close()


def _wait_until_it_answers(admin: Vault, seconds: float = 30) -> None:
    """PostgreSQL restarts its backends after a failed WAL write: wait for it to accept work."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            admin.audit.head()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
