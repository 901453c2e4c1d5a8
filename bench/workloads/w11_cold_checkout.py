"""W11: in-process checkout of a secret not touched before in the process, against the commit floor.

The process is warm (imports done, two untimed checkouts made first), but every sample
checks out a secret that no earlier call in the process touched, of a client no earlier
sample touched while there are clients left, through a **fresh** ``Vault`` object
(``Vault.open``, its session copied from the unlocked one, so no Argon2id is paid): no
cache of an earlier object helps it, and its first statement opens its own database
connection. Only ``vault.checkouts.checkout(REF, reason=...)`` is timed. This is what a command
served in-process pays for a secret, and what a long-lived process pays for a secret it
has not seen. It is measured as an engineer (their grants) and as the admin, on the main
SQLite data set; a second series keeps one ``Vault`` object for the whole series (warm
object, secrets still new to it).

Baseline: the durable-commit floor of the same storage (``w1_checkout.sqlite_commit_times``:
one single-row INSERT and COMMIT with credvault's pragmas). Target: median ≤ 3× the floor.

Checks: every value is the generated one; one ``checkout`` event per checkout.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench import dataset
from bench.report import MET, NOT_MET, REPORT, Outcome, Row
from bench.suite import Context
from bench.timing import summary, timed
from bench.workloads.w1_checkout import sqlite_commit_times
from vault import Vault
from vault.service.sessions import MemorySessionStore, UnlockedSession
from vault.storage import models as m

TARGET_RATIO = 3.0
WARMUP = 2


def _new_refs(mf: dataset.Manifest, clients: list[int], first: int) -> Iterator[str]:
    """Refs never handed out before: secret ``first`` of each client, then ``first + 2`` of
    each, … (the engineer's series takes odd secrets, the admin's even ones from 2: secret 0
    of some clients is what W1 and W10 check out)."""
    for j in count(first, 2):
        if all(j >= mf.shape.secrets_of(c) for c in clients):
            raise RuntimeError("the data set has too few secrets for W11's samples")
        for c in clients:
            if j < mf.shape.secrets_of(c):
                yield mf.ref(c, j)


class FreshObjects:
    """A new ``Vault`` for ``name`` on each call, holding a copy of one unlocked session."""

    def __init__(self, mf: dataset.Manifest, name: str) -> None:
        self.mf, self.name = mf, name
        unlocked = dataset.open_vault(mf, name)
        text = unlocked.sessions.get(unlocked.vault_id(), name)
        assert text is not None
        self.session = UnlockedSession.from_text(text)
        unlocked.close()

    def __call__(self) -> Vault:
        sessions = MemorySessionStore()
        sessions.put(self.session)
        return Vault.open(self.mf.url, engineer=self.name, sessions=sessions)


def _series(mf: dataset.Manifest, name: str, refs: Iterator[str], n: int, fresh: bool) -> tuple[list[float], int]:
    """``n`` timed checkouts of new refs (after ``WARMUP`` untimed ones); (seconds, wrong values)."""
    make = FreshObjects(mf, name)
    kept = None if fresh else make()
    times, wrong = [], 0
    for i in range(WARMUP + n):
        ref = next(refs)
        vault = make() if kept is None else kept
        seconds, revealed = timed(lambda: vault.checkouts.checkout(ref, reason="bench W11"))  # noqa: B023 - called at once
        wrong += revealed.value != mf.password(ref)
        if kept is None:
            vault.close()
        if i >= WARMUP:
            times.append(seconds)
    if kept is not None:
        kept.close()
    return times, wrong


def measure(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    n = params["samples"]
    admin = dataset.open_vault(mf, dataset.ADMIN)
    head = admin.audit.head()[0]
    engineer = dataset.engineer_name(0)
    series: dict[str, dict[str, Any]] = {}
    wrong = 0
    granted = mf.shape.granted_clients(0)
    others = [c for c in range(mf.shape.clients) if c not in set(granted)]
    for who, name, clients, first in (
        ("engineer", engineer, granted, 1),
        ("admin", dataset.ADMIN, others[::-1] + granted[::-1], 2),  # the engineer's clients last
    ):
        refs = _new_refs(mf, clients, first)
        for fresh in (True, False):
            times, bad = _series(mf, name, refs, n, fresh)
            wrong += bad
            series[f"{who} {'fresh' if fresh else 'kept'}"] = summary(times)
    floor = sqlite_commit_times(Path(params["workdir"]), max(20, 2 * n))
    expected = 4 * (WARMUP + n)
    with admin.store.transaction() as s:
        written = s.scalar(
            select(func.count())
            .select_from(m.AuditEvent)
            .where(m.AuditEvent.seq > head, m.AuditEvent.action == "checkout")
        )
    admin.close()
    checks = [
        ("W11: every checkout of a new secret returned the generated value", wrong == 0),
        (f"W11: {expected} checkouts wrote {written} checkout events", written == expected),
    ]
    return {
        "checks": checks,
        "series": series,
        "floor": summary(floor),
        "grants": len(mf.shape.granted_clients(0)),
    }


def run(ctx: Context) -> Outcome:
    out = Outcome()
    manifest = ctx.main_dataset(out)
    if manifest is None:
        return out
    params = {"manifest": manifest, "samples": ctx.plan.w11_samples, "workdir": str(ctx.workdir)}
    result = ctx.step(
        out, "W11 checkout of secrets not touched before", "bench.workloads.w11_cold_checkout:measure", params
    )
    if result is None:
        return out
    v = result.value
    floor_ms = v["floor"]["median"] * 1000
    labels = {
        "engineer fresh": f"engineer ({v['grants']} grants), fresh `Vault` object per checkout",
        "admin fresh": "admin, fresh `Vault` object per checkout",
        "engineer kept": "engineer, one `Vault` object for the series",
        "admin kept": "admin, one `Vault` object for the series",
    }
    verdicts = {}
    for key, label in labels.items():
        s = v["series"][key]
        median_ms = s["median"] * 1000
        fresh = key.endswith("fresh")
        verdict = (MET if median_ms <= TARGET_RATIO * floor_ms else NOT_MET) if fresh else REPORT
        verdicts[key] = verdict
        out.rows.append(
            Row(
                "W11",
                f"checkout of a secret not touched before, {label}, SQLite: median",
                median_ms,
                "ms",
                floor_ms,
                "durable commit floor",
                f"≤ {TARGET_RATIO:g}× floor" if fresh else "—",
                verdict,
                result.peak_rss_mib,
                f"n={s['n']}",
            )
        )
        if fresh:
            out.rows.append(
                Row(
                    "W11",
                    f"checkout of a secret not touched before, {label}, SQLite: p99",
                    s["p99"] * 1000,
                    "ms",
                    v["floor"]["p99"] * 1000,
                    "floor p99",
                    samples=f"n={s['n']}",
                )
            )
    eng, adm = (v["series"][k]["median"] * 1000 for k in ("engineer fresh", "admin fresh"))
    out.notes.append(
        f"**Target (≤ {TARGET_RATIO:g}× the durable-commit floor): engineer {verdicts['engineer fresh']}, admin "
        f"{verdicts['admin fresh']}.** A checkout of a secret no earlier call touched, by a fresh `Vault` object in "
        f"a warm process, takes {eng:.2f} ms as an engineer holding {v['grants']} grants ({eng / floor_ms:.1f}× the "
        f"floor) and {adm:.2f} ms as the admin ({adm / floor_ms:.1f}×); one durable single-row commit on the same "
        f"disk takes {floor_ms:.2f} ms. The same new secrets through one `Vault` object kept for the series: "
        f"engineer {v['series']['engineer kept']['median'] * 1000:.2f} ms, admin "
        f"{v['series']['admin kept']['median'] * 1000:.2f} ms (what is left is per-secret work: unwrapping a data "
        "key under a client key not opened before, the decryptions, the audit event and its commit)."
    )
    return out
