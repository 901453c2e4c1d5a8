"""W13: a checkout by an engineer holding 1,000 grants against the same with 10 grants.

**Data set** (its own step): 1,000 clients of two secrets each (``--quick``: 40), every
one granted to one engineer (``engineer-000``); then, through the API, a second engineer
(``few-grants``) is invited, enrolled, confirmed and granted the first 10 clients. Both
check out secrets of those 10 clients, so the only difference is how many grants they
hold.

**Measured**, in one process, the two engineers alternating sample by sample (so that
load on the shared machine falls on both alike):

* a fresh ``Vault`` object per checkout (a session copied in, no Argon2id: see W11), as a
  command served in-process pays it: this is where a lookup that walks every grant shows;
* one ``Vault`` object per engineer, the same secret again and again (W1's warm call).

Target: the 1,000-grant engineer's median ≤ 1.2× the 10-grant engineer's, both ways.

Checks: every value is the generated one; the 10-grant engineer cannot read client 10
(no grant); one ``checkout`` event per checkout.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from bench import dataset
from bench.dataset import Shape
from bench.report import MET, NOT_MET, Outcome, Row
from bench.step import log
from bench.suite import Context
from bench.timing import summary, timed
from bench.workloads.w11_cold_checkout import FreshObjects
from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import VaultError
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

FEW = "few-grants"
FEW_GRANTS = 10
TARGET_RATIO = 1.2
WARM_CALLS = 60


def shape(grants: int) -> Shape:
    return Shape(secrets=2 * grants, clients=grants, engineers=1, grants_per_client=1)


def measure(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    n = params["samples"]
    many = dataset.engineer_name(0)
    admin = dataset.open_vault(mf, dataset.ADMIN)
    code = admin.engineers.invite(FEW)
    enrolling = Vault.open(mf.url, kdf_params=FLOOR, sessions=MemorySessionStore())
    admin.engineers.confirm(FEW, enrolling.engineers.enroll(FEW, code, dataset.passphrase(FEW)))
    enrolling.close()
    for c in range(FEW_GRANTS):
        admin.grants.grant(FEW, dataset.client_slug(c))
    log(f"{FEW} enrolled and granted {FEW_GRANTS} clients through the API")
    head = admin.audit.head()[0]
    checks: list[tuple[str, bool]] = []
    makers = {"many": FreshObjects(mf, many), "few": FreshObjects(mf, FEW)}
    cold: dict[str, list[float]] = {"many": [], "few": []}
    wrong = checkouts = 0
    for i in range(n + 1):  # sample 0 of each is a warm-up, not counted
        ref = mf.ref(i % FEW_GRANTS, (i // FEW_GRANTS) % 2)
        for who in ("many", "few") if i % 2 else ("few", "many"):
            vault = makers[who]()
            seconds, revealed = timed(lambda: vault.checkouts.checkout(ref, reason="bench W13"))  # noqa: B023
            vault.close()
            wrong += revealed.value != mf.password(ref)
            checkouts += 1
            if i:
                cold[who].append(seconds)
    warm: dict[str, list[float]] = {"many": [], "few": []}
    vaults = {who: make() for who, make in makers.items()}
    ref = mf.ref(0, 0)
    for i in range(params["warm"] + 2):
        for who in ("many", "few") if i % 2 else ("few", "many"):
            seconds, revealed = timed(lambda: vaults[who].checkouts.checkout(ref, reason="bench W13 warm"))  # noqa: B023
            wrong += revealed.value != mf.password(ref)
            checkouts += 1
            if i >= 2:
                warm[who].append(seconds)
    try:
        vaults["few"].checkouts.checkout(mf.ref(FEW_GRANTS, 0), reason="bench W13 no grant")
        refused = False
    except VaultError:
        refused = True
    for vault in vaults.values():
        vault.close()
    with admin.store.transaction() as s:
        written = s.scalar(
            select(func.count())
            .select_from(m.AuditEvent)
            .where(m.AuditEvent.seq > head, m.AuditEvent.action == "checkout")
        )
    admin.close()
    checks += [
        ("W13: every checkout returned the generated value", wrong == 0),
        (f"W13: {FEW} cannot check out a secret of a client it holds no grant for", refused),
        (f"W13: {checkouts} checkouts wrote {written} checkout events", written == checkouts),
    ]
    return {
        "checks": checks,
        "grants": mf.shape.clients,
        "cold": {k: summary(v) for k, v in cold.items()},
        "warm": {k: summary(v) for k, v in warm.items()},
    }


def run(ctx: Context) -> Outcome:
    out = Outcome()
    grants = ctx.plan.w13_grants
    manifest = ctx.build(out, f"data set W13 (SQLite, {grants:,} grants)", ctx.sqlite_url("w13"), shape(grants), "w13")
    if manifest is None:
        return out
    params = {"manifest": manifest, "samples": ctx.plan.w13_samples, "warm": 10 if ctx.plan.quick else WARM_CALLS}
    result = ctx.step(out, "W13 checkout by grants held", "bench.workloads.w13_grants:measure", params)
    for path in ctx.workdir.glob("w13.db*"):
        path.unlink()
    if result is None:
        return out
    v = result.value
    verdicts = []
    for key, label in (("cold", "fresh `Vault` object per checkout"), ("warm", "one `Vault` object, the same secret")):
        many, few = v[key]["many"], v[key]["few"]
        verdict = MET if many["median"] <= TARGET_RATIO * few["median"] else NOT_MET
        verdicts.append(
            f"{verdict} ({label}: {many['median'] * 1000:.2f} ms against {few['median'] * 1000:.2f} ms, "
            f"{many['median'] / few['median']:.2f}×)"
        )
        out.rows.append(
            Row(
                "W13",
                f"checkout by an engineer holding {v['grants']:,} grants, {label}, SQLite: median",
                many["median"] * 1000,
                "ms",
                few["median"] * 1000,
                f"same, {FEW_GRANTS} grants",
                f"≤ {TARGET_RATIO:g}× {FEW_GRANTS} grants",
                verdict,
                result.peak_rss_mib,
                f"n={many['n']}",
            )
        )
    out.notes.append(
        f"**Target (≤ {TARGET_RATIO:g}× with {FEW_GRANTS} grants):** " + "; ".join(verdicts) + ". Both engineers "
        f"check out secrets of the same {FEW_GRANTS} clients, alternating sample by sample."
    )
    return out
