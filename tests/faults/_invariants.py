"""What the crash and fault tests share: the seeded vault, the worker driver, the checks.

``test_crash_operations.py`` (SQLite, SIGKILL) and ``test_pg_faults.py`` (PostgreSQL, a
killed client or a stopped server) run the same batches of everyday operations
(``_ops_worker.py``) and judge what is left by the same rules, here: every acknowledged
write is there with its exact value, the one in flight is wholly there or wholly absent,
nothing is half-applied, and the audit chain is whole. What differs by engine (SQLite's
``PRAGMA integrity_check``; PostgreSQL's backends, locks and ``pg_amcheck``) stays in
each test file. ``WorkerProcess`` drives ``_worker.py`` (``test_crash_rotation.py``) as
well as ``_ops_worker.py``; ``run_batch`` runs ``_ops_worker.batch`` in this process, and
``retry_in_flight`` makes the call a fault interrupted again (a server stop).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
from _ops_worker import batch
from sqlalchemy import func, select

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import AccessDenied, AlreadyExists, NotFound
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
REASON = "T-1 crash test"
REPO = Path(__file__).resolve().parents[2]
KINDS = ("add", "update", "grant", "checkout", "purge")
COUNTS = {"add": 6, "update": 8, "grant": 6, "checkout": 8, "purge": 1}
ENGINEERS = 6


# -- the vault every run starts from ------------------------------------------------------------------


class Seeded(Protocol):
    values: dict[str, str]  # ref -> password written
    passphrases: dict[str, str]  # engineer -> passphrase


def open_vault(url: str, name: str = ADMIN, passphrase: str = ADMIN_PASS) -> Vault:
    vault = Vault.open(url, engineer=name, sessions=MemorySessionStore(), kdf_params=FLOOR)
    vault.engineers.unlock(name, passphrase)
    return vault


def add_clients(admin: Vault, sizes: dict[str, int]) -> dict[str, str]:
    """Add each client with that many secrets ``slug/sNN``; returns ref -> password."""
    values: dict[str, str] = {}
    for slug, count in sizes.items():
        admin.clients.add(slug, slug.title())
        for i in range(count):
            values[f"{slug}/s{i:02d}"] = f"{slug}-{i}-✓"
            admin.secrets.add(f"{slug}/s{i:02d}", password=values[f"{slug}/s{i:02d}"])
    return values


def seed_vault(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Create the vault the operation batches start from: clients acme (8 secrets) and
    globex (3), engineers eng0..eng5 enrolled without grants. Returns (values, passphrases)."""
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FLOOR)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    values = add_clients(admin, {"acme": 8, "globex": 3})
    passphrases = {}
    for i in range(ENGINEERS):
        name = f"eng{i}"
        code = admin.engineers.invite(name)
        mine = Vault.open(url, engineer=name, sessions=MemorySessionStore(), kdf_params=FLOOR)
        admin.engineers.confirm(name, mine.engineers.enroll(name, code, f"pass of {name}"))
        mine.close()
        passphrases[name] = f"pass of {name}"
    admin.close()
    return values, passphrases


def write_passphrase_file(directory: Path) -> Path:
    """The admin's passphrase in a file only its owner reads (the workers unlock from it)."""
    secret = directory / "passphrase"
    secret.write_text(ADMIN_PASS, encoding="utf-8")
    secret.chmod(0o600)
    return secret


# -- the worker -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int = 0  # -9 when killed
    duration: float | None = None  # seconds, if the batch finished
    tried: list[dict[str, Any]] = field(default_factory=list)
    acked: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None  # what the call in flight raised (server stops)

    @property
    def in_flight(self) -> dict[str, Any] | None:
        """The call that was running when the child or the server died (tried, never acknowledged)."""
        return self.tried[-1] if len(self.tried) > len(self.acked) else None


def run_batch(vault: Vault, kind: str, tag: str, out: Outcome) -> None:
    """``_ops_worker.batch`` in this process, on a Vault that outlives the batch (a server stop)."""
    started = time.perf_counter()
    try:
        batch(vault, kind, COUNTS[kind], tag, out.tried.append, out.acked.append)
        out.duration = time.perf_counter() - started
    except BaseException as error:  # recorded for the test to judge: only VaultErrors are fine
        out.error = error


class WorkerProcess:
    """A worker script (``_worker.py``, ``_ops_worker.py``) that forks the children the test kills."""

    def __init__(self, script: Path, passphrase_file: Path) -> None:
        self.passphrase_file = passphrase_file
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
            cwd=REPO,
        )
        assert self._line() == "worker ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the crash worker exited ({self.proc.poll()})")
        return line.rstrip("\n")

    def _send(self, **command: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def start(self, **command: object) -> int:
        """Fork a child for one job; returns its PID once it says ``ready``."""
        self._send(op="run", **command, passphrase_file=str(self.passphrase_file))
        word, pid_text, *rest = self._line().split(" ", 2)
        if word == "error":
            raise AssertionError(f"the worker failed before it was ready: {rest}")
        assert word == "ready", word
        return int(pid_text)

    def take(self, outcome: Outcome) -> str:
        """Read one line the child or the worker said into ``outcome``; returns its first word."""
        word, *rest = self._line().split(" ", 2)
        if word == "try":
            outcome.tried.append(json.loads(rest[1]))
        elif word == "ack":
            outcome.acked.append(json.loads(rest[1]))
        elif word == "done":
            outcome.duration = float(rest[1])
        elif word == "error":
            raise AssertionError(f"the operation failed (not a crash): {rest[1]}")
        elif word == "reaped":
            outcome.code = int(rest[1])
        return word

    @staticmethod
    def kill(pid: int, after: float) -> None:
        time.sleep(after)
        os.kill(pid, signal.SIGKILL)  # not reaped yet: the PID is still this child's

    def reap(self, pid: int, outcome: Outcome) -> Outcome:
        """Wait for the child; reads what it said into ``outcome`` up to its exit code."""
        self._send(op="reap", pid=pid)
        while self.take(outcome) != "reaped":
            pass
        return outcome

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


# -- after a fault ----------------------------------------------------------------------------------


def chain_is_whole(vault: Vault) -> None:
    result = vault.audit.verify()
    assert result.ok, result.problem
    with vault.store.transaction() as s:
        seqs = list(s.scalars(select(m.AuditEvent.seq).order_by(m.AuditEvent.seq)))
        assert seqs == list(range(1, len(seqs) + 1)), "audit sequence numbers are not contiguous from 1"
        head = s.scalars(select(m.AuditHead)).one()
        last = s.get(m.AuditEvent, seqs[-1])
        assert last is not None and (head.seq, head.hash) == (last.seq, last.hash), (
            "the audit head is not the last event"
        )


def nothing_half_applied(vault: Vault) -> None:
    with vault.store.transaction() as s:
        for secret in s.scalars(select(m.Secret)):
            assert secret.current_version >= 1, f"secret #{secret.id} has no version"
            versions = set(s.scalars(select(m.SecretVersion.version).where(m.SecretVersion.secret_id == secret.id)))
            assert secret.current_version in versions, f"secret #{secret.id} lacks its current version"
            assert max(versions) == secret.current_version, f"secret #{secret.id} has a version past its current"
        orphans = s.scalar(
            select(func.count())
            .select_from(m.SecretVersion)
            .where(m.SecretVersion.secret_id.not_in(select(m.Secret.id)))
        )
        assert not orphans, "a secret version without its secret"
        for grant in s.scalars(select(m.Grant).where(m.Grant.revoked_at.is_(None))):
            assert grant.signature is not None, f"grant #{grant.id} has no signature"
            live = set(
                s.scalars(
                    select(m.ClientKey.version).where(
                        m.ClientKey.client_id == grant.client_id, m.ClientKey.state != "destroyed"
                    )
                )
            )
            sealed = set(
                s.scalars(
                    select(m.ClientKeySeal.version).where(
                        m.ClientKeySeal.client_id == grant.client_id,
                        m.ClientKeySeal.recipient_kind == "engineer",
                        m.ClientKeySeal.recipient_id == grant.engineer_id,
                    )
                )
            )
            assert live <= sealed, f"grant #{grant.id} lacks sealed key copies {live - sealed}"
        for checkout in s.scalars(select(m.Checkout)):
            event = s.get(m.AuditEvent, checkout.event_seq)
            assert event is not None and event.action == "checkout", f"checkout #{checkout.id} has no audit event"
            assert event.secret_id == checkout.secret_id


def purged_rows(vault: Vault, client_id: int) -> dict[str, int]:
    """Rows of a purged client that are still there (all should be gone)."""
    with vault.store.transaction() as s:
        counts = {
            "clients": s.scalar(select(func.count()).select_from(m.Client).where(m.Client.id == client_id)),
            "secrets": s.scalar(select(func.count()).select_from(m.Secret).where(m.Secret.client_id == client_id)),
            "client_keys": s.scalar(
                select(func.count()).select_from(m.ClientKey).where(m.ClientKey.client_id == client_id)
            ),
            "client_key_seals": s.scalar(
                select(func.count()).select_from(m.ClientKeySeal).where(m.ClientKeySeal.client_id == client_id)
            ),
            "grants": s.scalar(select(func.count()).select_from(m.Grant).where(m.Grant.client_id == client_id)),
            "checkouts": s.scalar(
                select(func.count()).select_from(m.Checkout).where(m.Checkout.client_id == client_id)
            ),
        }
    return {table: n or 0 for table, n in counts.items() if n}


def _added(vault: Vault, out: Outcome, landed: str) -> str:
    flight = out.in_flight
    for item in out.acked:
        assert vault.checkouts.reveal(item["ref"], reason=REASON) == item["password"], item
        assert vault.secrets.show(item["ref"]).username == f"user{item['ref'].rsplit('-', 1)[1]}"
    if flight:
        try:
            assert vault.checkouts.reveal(flight["ref"], reason=REASON) == flight["password"]
            assert vault.secrets.show(flight["ref"]).username == f"user{flight['ref'].rsplit('-', 1)[1]}"
            landed = "in flight, committed"
        except NotFound:
            landed = "in flight, rolled back"
    assert len(vault.secrets.list("acme")) == 8 + len(out.acked) + (landed == "in flight, committed")
    return landed


def _updated(vault: Vault, template: Seeded, out: Outcome, landed: str) -> str:
    flight = out.in_flight
    acked = {item["ref"]: item["password"] for item in out.acked}
    for ref, old in template.values.items():
        if not ref.startswith("acme/"):
            continue
        value = vault.checkouts.reveal(ref, reason=REASON)
        history = vault.secrets.history(ref)
        if ref in acked:
            assert value == acked[ref] and len(history) == 2, ref
        elif flight and flight["ref"] == ref:
            assert (value, len(history)) in ((old, 1), (flight["password"], 2)), ref
            landed = "in flight, " + ("committed" if value != old else "rolled back")
        else:
            assert value == old and len(history) == 1, ref
    return landed


def _granted(vault: Vault, url: str, template: Seeded, out: Outcome, landed: str) -> str:
    flight = out.in_flight
    granted = {g.engineer for g in vault.grants.list(client="acme") if g.state == "active"}
    acked = {item["engineer"] for item in out.acked}
    assert acked <= granted, (acked, granted)
    allowed = acked | ({flight["engineer"]} if flight else set())
    assert granted <= allowed, (granted, allowed)
    if flight:
        landed = "in flight, " + ("committed" if flight["engineer"] in granted else "rolled back")
    for name in sorted(allowed):
        mine = open_vault(url, name, template.passphrases[name])
        try:
            if name in granted:
                assert mine.checkouts.reveal("acme/s00", reason=REASON) == template.values["acme/s00"]
            else:
                with pytest.raises((NotFound, AccessDenied)):
                    mine.checkouts.reveal("acme/s00", reason=REASON)
        finally:
            mine.close()
    return landed


def _checked_out(vault: Vault, template: Seeded, out: Outcome, landed: str) -> str:
    flight = out.in_flight
    for item in out.acked:
        assert item["value"] == template.values[item["ref"]], item
    if flight:
        assert "value" not in flight, "the checkout in flight returned a value"
    held = {f"{c.client}/{c.secret}" for c in vault.checkouts.list() if c.engineer == ADMIN}
    acked_refs = [item["ref"] for item in out.acked]
    assert set(acked_refs) <= held, (acked_refs, held)
    with vault.store.transaction() as s:
        rows = s.scalar(select(func.count()).select_from(m.Checkout)) or 0
    assert rows in (len(acked_refs), len(acked_refs) + (1 if flight else 0)), (rows, acked_refs, flight)
    if flight:
        landed = "in flight, " + ("committed" if rows > len(acked_refs) else "rolled back")
        if rows > len(acked_refs):
            assert flight["ref"] in held, (flight, held)
    return landed


def _purged(vault: Vault, template: Seeded, out: Outcome) -> str:
    flight = out.in_flight
    receipts = vault.purge.receipts()
    try:
        vault.clients.show("acme")
        present = True
    except NotFound:
        present = False
    if present:
        assert not out.acked and receipts == [], "acknowledged purge, yet the client is there"
        for ref, password in template.values.items():
            if ref.startswith("acme/"):
                assert vault.checkouts.reveal(ref, reason=REASON) == password, ref
        assert len(vault.secrets.list("acme")) == 8
        return ("in flight, " if flight else "") + "before"
    assert len(receipts) == 1, receipts
    check = vault.purge.verify_receipt(receipts[0].id)
    assert check.ok, check.problems
    if out.acked:
        assert out.acked[0]["receipt"] == receipts[0].id
    assert purged_rows(vault, receipts[0].client_id) == {}
    for ref in template.values:
        if ref.startswith("acme/"):
            with pytest.raises(NotFound):
                vault.checkouts.reveal(ref, reason=REASON)
    return ("in flight, " if flight else "") + "after"


def check_batch(url: str, template: Seeded, kind: str, out: Outcome) -> str:
    """Check the vault at ``url`` after a batch of ``kind`` met a fault; returns where the fault landed."""
    vault = open_vault(url)
    try:
        chain_is_whole(vault)
        nothing_half_applied(vault)
        for ref, password in template.values.items():
            if ref.startswith("globex/"):
                assert vault.checkouts.reveal(ref, reason=REASON) == password, ref
        landed = "in flight" if out.in_flight else ("all acked" if len(out.acked) == COUNTS[kind] else "between calls")
        if kind == "add":
            landed = _added(vault, out, landed)
        elif kind == "update":
            landed = _updated(vault, template, out, landed)
        elif kind == "grant":
            landed = _granted(vault, url, template, out, landed)
        elif kind == "checkout":
            landed = _checked_out(vault, template, out, landed)
        elif kind == "purge":
            landed = _purged(vault, template, out)
        chain_is_whole(vault)  # the reads above appended events: the chain still verifies
    finally:
        vault.close()
    return landed


def retry_in_flight(vault: Vault, kind: str, flight: dict[str, Any], landed: str, template: Seeded) -> None:
    """The caller's natural reaction to the error: the same call again, on the same Vault object."""
    committed = landed.endswith(("committed", "after"))
    if kind == "add":
        if committed:
            with pytest.raises(AlreadyExists):
                vault.secrets.add(flight["ref"], password=flight["password"], username="again")
        else:
            vault.secrets.add(flight["ref"], password=flight["password"], username="again")
        assert vault.checkouts.reveal(flight["ref"], reason=REASON) == flight["password"]
    elif kind == "update":
        before = len(vault.secrets.history(flight["ref"]))
        vault.secrets.update(flight["ref"], password=flight["password"])
        assert vault.checkouts.reveal(flight["ref"], reason=REASON) == flight["password"]
        assert len(vault.secrets.history(flight["ref"])) == before + 1
    elif kind == "grant":
        vault.grants.grant(flight["engineer"], "acme", reason="T-again")
        active = [
            g for g in vault.grants.list(client="acme") if g.engineer == flight["engineer"] and g.state == "active"
        ]
        assert len(active) == 1, active
        nothing_half_applied(vault)
    elif kind == "checkout":
        assert vault.checkouts.checkout(flight["ref"], reason=REASON).value == template.values[flight["ref"]]
    elif kind == "purge":
        if committed:
            with pytest.raises(NotFound):
                vault.purge.client("acme", request="REQ-again")
        else:
            receipt = vault.purge.client("acme", request="REQ-again")
            assert vault.purge.verify_receipt(receipt.id).ok
            assert purged_rows(vault, receipt.client_id) == {}
        with pytest.raises(NotFound):
            vault.checkouts.reveal("acme/s00", reason=REASON)
