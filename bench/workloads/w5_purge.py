"""W5: purge of a client with 100,000 secrets, scrub included (reported, no target).

A vault is built whose client 0 holds the secrets and nine other clients hold a few
each; ``vault.purge.client(slug, request="REF")`` is timed as the admin (when the
library has it: ``hasattr(Purge, "client")``). Before the purge a sample of the
client's ciphertexts is read from the database; afterwards the database file and its
WAL are searched for them: a scrubbed purge leaves none (SQLite ``secure_delete``
zeroes freed pages, and the WAL must be checkpointed).

Checks: the purged client's secrets can no longer be read, no secret row of it
remains, the other clients read back, no sampled ciphertext is left in the files, and
``verify_audit`` still accepts the whole chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench import dataset
from bench.dataset import Shape
from bench.report import MISSING, Outcome, Row
from bench.suite import Context
from bench.timing import PhasePeak, timed
from vault.errors import VaultError
from vault.service.purge import Purge
from vault.storage import models as m

OTHER_CLIENTS, OTHER_SECRETS = 9, 20


def _left_in_files(path: str, needles: list[bytes]) -> int:
    found = set()
    for suffix in ("", "-wal"):
        file = Path(path + suffix)
        if file.exists():
            data = file.read_bytes()
            found |= {i for i, needle in enumerate(needles) if needle in data}
    return len(found)


def credvault_step(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    n, slug = mf.shape.big_client, dataset.client_slug(0)
    admin = dataset.open_vault(mf, dataset.ADMIN)
    with admin.store.transaction() as s:
        rows = s.execute(
            select(m.SecretVersion.wrapped_dek, m.SecretVersion.password_blob)
            .join(m.Secret, m.Secret.id == m.SecretVersion.secret_id)
            .where(m.Secret.client_id == 1)
            .order_by(func.random())
            .limit(20)
        ).all()
    needles = [bytes(blob) for row in rows for blob in row]
    with PhasePeak() as peak:
        seconds, receipt = timed(lambda: admin.purge.client(slug, request="REF"))  # type: ignore[attr-defined]
    checks: list[tuple[str, bool]] = []
    fresh = dataset.open_vault(mf, dataset.ADMIN)
    try:
        fresh.checkouts.reveal(mf.ref(0, 0), reason="bench")
        checks.append(("W5: a purged client's secret can no longer be read", False))
    except VaultError:
        checks.append(("W5: a purged client's secret can no longer be read", True))
    with fresh.store.transaction() as s:
        left = s.scalar(select(func.count()).select_from(m.Secret).where(m.Secret.client_id == 1))
    checks.append((f"W5: no secret row of the purged client remains ({left} left)", left == 0))
    checks += dataset.check_sample(
        fresh,
        mf,
        dataset.sample_refs(mf, 10, clients=list(range(1, mf.shape.clients))),
        "W5: admin, other clients after the purge",
    )
    path = make_url(mf.url).database
    if path:
        left_blobs = _left_in_files(path, needles)
        checks.append(
            (
                f"W5 scrub: {left_blobs} of {len(needles)} sampled ciphertexts of the purged client left in "
                "the database file and its WAL",
                left_blobs == 0,
            )
        )
    verified = fresh.audit.verify()
    checks.append(
        (f"W5: verify_audit accepts the whole chain after the purge ({verified.checked:,} events)", verified.ok)
    )
    admin.close()
    fresh.close()
    return {"checks": checks, "seconds": seconds, "peak_mib": peak.mib, "secrets": n, "receipt": str(receipt)[:300]}


def run(ctx: Context) -> Outcome:
    out = Outcome()
    n = ctx.plan.w5_secrets
    if not hasattr(Purge, "client"):
        out.rows.append(Row("W5", f"purge of a client with {n:,} secrets, scrub included", None, "s", verdict=MISSING))
        out.notes.append(
            "**Report: not measurable yet**: the library has no `vault.purge.client`. The workload is written "
            'against `vault.purge.client(slug, request="REF")` and runs (with its scrub check) once it exists.'
        )
        return out
    shape = Shape(secrets=n + OTHER_CLIENTS * OTHER_SECRETS, clients=1 + OTHER_CLIENTS, engineers=3, big_client=n)
    manifest = ctx.build(out, f"W5 data set, a client with {n:,} secrets", ctx.sqlite_url("w5"), shape, "w5")
    if manifest is None:
        return out
    step = ctx.step(out, "W5 purge", "bench.workloads.w5_purge:credvault_step", {"manifest": manifest})
    for path in ctx.workdir.glob("w5.db*"):
        path.unlink()
    if step is not None:
        v = step.value
        out.rows.append(
            Row(
                "W5",
                f"purge of a client with {n:,} secrets, scrub included",
                v["seconds"],
                "s",
                verdict="report",
                peak_rss_mib=step.peak_rss_mib,
                samples="n=1",
            )
        )
        out.notes.append(
            f"Purging {n:,} secrets took {v['seconds']:.2f} s ({v['seconds'] / n * 1e6:.0f} µs a "
            f"secret); peak RSS during the purge {v['peak_mib'] or 0:.0f} MiB."
        )
    return out
