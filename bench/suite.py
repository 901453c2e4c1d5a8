"""One run of the suite: its plan, its PostgreSQL server, and its shared data sets.

``Plan.make(scale, quick)`` turns the command line into sizes. ``Context`` holds the
work directory, the PostgreSQL server if one answers, and builds each shared data set
once, on first use, in its own step (so its cost and memory are not charged to a
workload): the main SQLite data set (W1, W2) and the PostgreSQL one (W1, W7).
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from bench.dataset import Shape
from bench.report import Outcome
from bench.step import StepFailed, StepResult, run_step

FULL_SCALE = 1_000_000
# W12: one client of 10,000 secrets among 10,000 clients; W14: one of 10,000 among 10
W12_SHAPE = Shape(secrets=20_000, clients=10_000, engineers=3, grants_per_client=1, big_client=10_000)
W14_SHAPE = Shape(secrets=10_900, clients=10, engineers=4, big_client=10_000)


# -- the PostgreSQL server ---------------------------------------------------------------
#
# CREDVAULT_BENCH_PG names it (default: user postgres with trust authentication on
# 127.0.0.1:5432). Each PostgreSQL data set gets a database of its own,
# credvault_bench_<random>; drop_all removes every one this run made. Without a
# reachable server the PostgreSQL workloads are skipped with a line saying so.

ADMIN_URL = os.environ.get("CREDVAULT_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


class PgServer:
    def __init__(self, engine: Engine, version: str) -> None:
        self.engine = engine
        self.version = version
        self.databases: list[str] = []

    @classmethod
    def connect(cls) -> PgServer | None:
        """The server, or None if it does not answer within a few seconds."""
        engine = create_engine(make_url(ADMIN_URL), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                version = str(conn.execute(text("SHOW server_version")).scalar())
        except Exception:
            engine.dispose()
            return None
        return cls(engine, version)

    def create_database(self) -> str:
        name = f"credvault_bench_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.databases.append(name)
        return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.engine.connect() as conn:
            while self.databases:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.databases.pop()}" WITH (FORCE)'))
        self.engine.dispose()


@dataclass(frozen=True)
class Plan:
    quick: bool
    scale: int
    shape: Shape
    w1_calls: int
    w1_engineer_calls: int
    w1_warmup: int
    w2_reps: int
    w3_sizes: tuple[int, ...]
    w3_reps: int
    w4_clients: int
    w4_secrets: int
    w5_secrets: int
    w6_events: int
    w6_new_events: int
    w7_engineers: int
    w7_seconds: float
    pg_shape: Shape
    w10_reps: int = 15
    w10_installed: bool = True
    w11_samples: int = 60
    w12_shape: Shape = W12_SHAPE
    w12_reps: int = 5
    w13_grants: int = 1_000
    w13_samples: int = 30
    w14_shape: Shape = W14_SHAPE
    w14_solo_seconds: float = 10.0
    w14_events: int = 0  # W14's and W15's audit events; 0: W6's (the run's audit scale)

    @classmethod
    def make(cls, scale: int, quick: bool, audit_events: int | None = None) -> Plan:
        if quick:
            return cls(
                quick=True,
                scale=200,
                shape=Shape(secrets=200, clients=20, engineers=3),
                w1_calls=20,
                w1_engineer_calls=10,
                w1_warmup=3,
                w2_reps=1,
                w3_sizes=(200,),
                w3_reps=2,
                w4_clients=10,
                w4_secrets=50,
                w5_secrets=200,
                w6_events=audit_events or 2_000,
                w6_new_events=50,
                w7_engineers=4,
                w7_seconds=2.0,
                pg_shape=Shape(secrets=200, clients=20, engineers=4),
                w10_reps=0,  # one run of each command, which is also the sample
                w10_installed=False,
                w11_samples=5,
                w12_shape=Shape(secrets=300, clients=50, engineers=3, grants_per_client=1, big_client=200),
                w12_reps=1,
                w13_grants=40,
                w13_samples=5,
                w14_shape=Shape(secrets=290, clients=10, engineers=4, big_client=200),
                w14_solo_seconds=1.5,
                w14_events=300,
            )
        w4_clients = min(1_000, max(10, scale // 1_000))
        pg_clients = min(200, max(10, scale // 100))
        return cls(
            quick=False,
            scale=scale,
            shape=Shape.for_scale(scale),
            w1_calls=300,
            w1_engineer_calls=200,
            w1_warmup=20,
            w2_reps=15,
            w3_sizes=tuple(n for n in (10_000, 100_000, 1_000_000) if n <= scale) or (scale,),
            w3_reps=3,
            w4_clients=w4_clients,
            w4_secrets=w4_clients * 10,
            w5_secrets=min(100_000, scale),
            w6_events=audit_events or scale,
            w6_new_events=1_000,
            w7_engineers=32,
            w7_seconds=10.0,
            pg_shape=Shape(secrets=min(scale, 20_000), clients=pg_clients, engineers=32),
        )

    @property
    def audit_scale(self) -> int:
        """Generated audit events for W14 and W15: the run's audit scale (smaller with --quick)."""
        return self.w14_events or self.w6_events

    def describe(self) -> str:
        s, p = self.shape, self.pg_shape
        lines = [
            f"* mode: {'--quick (tiny sizes; checks results, not times)' if self.quick else 'full'}; "
            f"scale {self.scale:,} secrets",
            f"* main data set (SQLite, W1, W2): {s.secrets:,} secrets across {s.clients:,} clients, "
            f"{s.engineers} engineers, each client granted to {min(s.grants_per_client, s.engineers)} engineers "
            f"(so each engineer holds about {len(s.granted_clients(0))} grants)",
            f"* PostgreSQL data set (W1, W7): {p.secrets:,} secrets across {p.clients:,} clients, {p.engineers} "
            f"engineers ({len(p.granted_clients(0))} grants each)",
            f"* W1: {self.w1_calls} timed checkouts as the admin and up to {self.w1_engineer_calls} as an engineer "
            "(stopping after 30 s), "
            f"after {self.w1_warmup} warm-up calls each; W2: {self.w2_reps} runs of each command",
            f"* W3: one client with {', '.join(f'{n:,}' for n in self.w3_sizes)} secrets, "
            f"{self.w3_reps} rotations each (1 at 1,000,000)",
            f"* W4: {self.w4_clients:,} clients with {self.w4_secrets:,} and then {self.w4_secrets * 10:,} secrets; "
            f"W5: one client with {self.w5_secrets:,} secrets",
            f"* W6: {self.w6_events:,} generated audit events, then {self.w6_new_events:,} appended through the API",
            f"* W7: {self.w7_engineers} engineer processes for {self.w7_seconds:g} s on PostgreSQL",
            f"* W10: {self.w10_reps} runs of each everyday command "
            f"({'an installed copy' if self.w10_installed else 'the .venv console script'}); "
            f"W11: {self.w11_samples} checkouts per series, each of a secret and client not touched before",
            f"* W12: one client with {self.w12_shape.big_client:,} secrets among {self.w12_shape.clients:,} clients, "
            f"{self.w12_reps} runs of each listing; W13: an engineer holding {self.w13_grants:,} grants and one "
            f"holding 10, {self.w13_samples} fresh-object checkouts each",
            f"* W14: {self.audit_scale:,} generated audit events and one client with {self.w14_shape.big_client:,} "
            f"secrets, checkouts every 50 ms ({self.w14_solo_seconds:g} s alone before and after), on SQLite and "
            "PostgreSQL; "
            f"W15: `audit export` of the same {self.audit_scale:,} events and more",
        ]
        return "\n".join(lines)


class Context:
    """The work directory, the PostgreSQL server, the shared data sets and the checks."""

    def __init__(self, plan: Plan, workdir: Path, pg: PgServer | None) -> None:
        self.plan = plan
        self.workdir = workdir
        self.pg = pg
        self._main: str | None = None
        self._pg_manifest: str | None = None
        self.setup_checks: list[tuple[str, bool]] = []
        self.steps: list[tuple[str, float, float]] = []  # (label, seconds, peak RSS MiB): workload 8
        self.shared: dict[str, Any] = {}  # data sets two workloads share (W14 and W15), by name

    def sqlite_url(self, name: str) -> str:
        return f"sqlite:///{self.workdir / name}.db"

    def step(self, outcome: Outcome, label: str, target: str, params: dict[str, Any]) -> StepResult | None:
        """Run a step; a crash becomes a failed check of ``outcome`` (and a non-zero exit)."""
        print(f"[{label}]", file=sys.stderr, flush=True)
        try:
            result = run_step(target, params)
        except StepFailed as error:
            outcome.checks.append((f"{label}: {error}", False))
            return None
        outcome.checks.extend((str(c), bool(ok)) for c, ok in result.value.get("checks", []))
        self.steps.append((label, result.seconds, result.peak_rss_mib))
        print(
            f"[{label}] done in {result.seconds:.1f} s, peak RSS {result.peak_rss_mib:.0f} MiB",
            file=sys.stderr,
            flush=True,
        )
        return result

    def build(self, outcome: Outcome, label: str, url: str, shape: Shape, name: str) -> str | None:
        """Build a data set in its own step; returns its manifest's path."""
        manifest = str(self.workdir / f"{name}.json")
        params = {"url": url, "shape": asdict(shape), "manifest": manifest}
        result = self.step(outcome, label, "bench.dataset:build_step", params)
        return manifest if result is not None else None

    def main_dataset(self, outcome: Outcome) -> str | None:
        if self._main is None:
            self._main = self.build(outcome, "data set (SQLite)", self.sqlite_url("main"), self.plan.shape, "main")
        return self._main

    def pg_dataset(self, outcome: Outcome) -> str | None:
        if self.pg is None:
            return None
        if self._pg_manifest is None:
            url = self.pg.create_database()
            self._pg_manifest = self.build(outcome, "data set (PostgreSQL)", url, self.plan.pg_shape, "pg")
        return self._pg_manifest
