"""W3: client-key rotation of one client with N secrets, against its floor.

For each N (10,000, 100,000 and 1,000,000 at full scale) a vault is built whose one
client holds N secrets (``dataset.py``; no per-secret audit events, which rotation
never reads). Then, each in its own process:

* the **floor** (``rewrap_floor.py``) re-wraps the N data keys of a copy of that file
  with plain sqlite3 + cryptography;
* **credvault** calls ``vault.keys.rotate_client(slug, batch_size=rewrap_floor.BATCH)`` as
  the admin, when the library has it (``hasattr(KeyRotation, "rotate_client")``); until then
  the row says "not implemented yet" and only the floor is measured. Both sides commit
  one transaction per batch of the same size, so they pay the same number of durable
  commits (the library's default batch is larger, which only makes it cheaper).

Both are timed around the rotation call only; the peak RSS during that call (after a
reset of the high-water mark) is reported per N, to show whether memory stays flat.
Checks: the floor re-wrapped exactly N keys and the library opens a sample of them;
after credvault's rotation, the admin and the grantee still read a sample back, the
client's key version moved, and ``verify_audit`` accepts the events appended.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench import dataset
from bench.dataset import Shape
from bench.report import MET, MISSING, NOT_MET, Outcome, Row
from bench.suite import Context
from bench.timing import PhasePeak, median, timed
from bench.workloads import rewrap_floor
from vault.crypto import blobs
from vault.service.rotation import KeyRotation

TARGET_RATIO = 1.5
CLIENT_ID = 1


def _reps(n: int, reps: int) -> int:
    return 1 if n >= 1_000_000 else reps


def floor_step(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    n = mf.shape.secrets
    source = make_url(mf.url).database
    assert source is not None
    path = source + ".floor.db"
    shutil.copy(source, path)
    vault, keys = dataset.AdminKeys.unlock(f"sqlite:///{path}")
    key, version = keys.client_key(vault.store.engine, CLIENT_ID, 1), 1
    vault.close()
    times, peaks, rows_ok = [], [], True
    for _ in range(_reps(n, params["reps"])):
        new_key = os.urandom(32)
        with PhasePeak() as peak:
            seconds, result = timed(
                lambda k=key, v=version, nk=new_key: rewrap_floor.rewrap(path, CLIENT_ID, k, v, nk, v + 1)
            )
        times.append(seconds)
        peaks.append(peak.mib)
        rows_ok = rows_ok and result.rows == n
        key, version = new_key, version + 1
    opened = 0
    for secret_id, ver, key_version, blob in rewrap_floor.sample(path, CLIENT_ID, 20):
        if key_version == version and len(blobs.unwrap_data_key(key, version, blob, CLIENT_ID, secret_id, ver)) == 32:
            opened += 1
    at_new = rewrap_floor.count_at(path, CLIENT_ID, version)
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    return {
        "checks": [
            (
                f"W3 floor N={n:,}: each pass re-wrapped exactly N keys, {at_new:,} now under the new key",
                rows_ok and at_new == n,
            ),
            (
                f"W3 floor N={n:,}: the library's unwrap_data_key opens {opened} of 20 sampled re-wrapped keys",
                opened == min(20, n),
            ),
        ],
        "times": times,
        "peak_mib": max(p for p in peaks if p is not None) if any(peaks) else None,
    }


def credvault_step(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    n, slug = mf.shape.secrets, dataset.client_slug(0)
    admin = dataset.open_vault(mf, dataset.ADMIN)
    checks = dataset.check_sample(admin, mf, dataset.sample_refs(mf, 5), f"W3 N={n:,}: admin before rotation")
    head = admin.audit.head()
    before = admin.clients.show(slug).key_version
    times, peaks = [], []
    reps = _reps(n, params["reps"])
    for _ in range(reps):
        with PhasePeak() as peak:
            seconds, _ = timed(lambda: admin.keys.rotate_client(slug, batch_size=rewrap_floor.BATCH))
        times.append(seconds)
        peaks.append(peak.mib)
    fresh = dataset.open_vault(mf, dataset.ADMIN)  # no cached keys
    checks += dataset.check_sample(
        fresh, mf, dataset.sample_refs(mf, 20, rng_seed=11), f"W3 N={n:,}: admin after rotation"
    )
    after = fresh.clients.show(slug).key_version
    checks.append(
        (
            f"W3 N={n:,}: the client key moved from version {before} to {after} after {reps} rotations",
            after == before + reps,
        )
    )
    if mf.shape.engineers:
        engineer = dataset.open_vault(mf, dataset.engineer_name(0))
        checks += dataset.check_sample(
            engineer, mf, dataset.sample_refs(mf, 5, rng_seed=13), f"W3 N={n:,}: the grantee after rotation"
        )
        engineer.close()
    verified = fresh.audit.verify(since=head)
    checks.append((f"W3 N={n:,}: verify_audit accepts the {verified.checked} events appended", verified.ok))
    admin.close()
    fresh.close()
    return {
        "checks": checks,
        "times": times,
        "peak_mib": max(p for p in peaks if p is not None) if any(peaks) else None,
    }


def run(ctx: Context) -> Outcome:
    out = Outcome()
    implemented = hasattr(KeyRotation, "rotate_client")
    floors: dict[int, dict[str, Any]] = {}
    mine: dict[int, dict[str, Any]] = {}
    for n in ctx.plan.w3_sizes:
        name = f"w3-{n}"
        shape = Shape(secrets=n, clients=1, engineers=1, grants_per_client=1, secret_events=False)
        manifest = ctx.build(out, f"W3 data set, one client with {n:,} secrets", ctx.sqlite_url(name), shape, name)
        if manifest is None:
            continue
        params = {"manifest": manifest, "reps": ctx.plan.w3_reps}
        floor = ctx.step(out, f"W3 floor N={n:,}", "bench.workloads.w3_client_rotation:floor_step", params)
        if floor is not None:
            floors[n] = floor.value | {"step_peak": floor.peak_rss_mib}
        if implemented:
            result = ctx.step(out, f"W3 credvault N={n:,}", "bench.workloads.w3_client_rotation:credvault_step", params)
            if result is not None:
                mine[n] = result.value | {"step_peak": result.peak_rss_mib}
        for path in ctx.workdir.glob(f"{name}.db*"):
            path.unlink()
    for n in ctx.plan.w3_sizes:
        f, c = floors.get(n), mine.get(n)
        floor_s = median(f["times"]) if f else None
        samples = f"n={len(f['times'])}" if f else ""
        if c is None:
            out.rows.append(
                Row(
                    "W3",
                    f"client-key rotation, N={n:,}",
                    None,
                    "s",
                    floor_s,
                    "sqlite3 + cryptography floor",
                    f"≤ {TARGET_RATIO}× floor",
                    MISSING if not implemented else "failed",
                    f["step_peak"] if f else None,
                    samples,
                )
            )
            continue
        mine_s = median(c["times"])
        ok = floor_s is not None and mine_s <= TARGET_RATIO * floor_s
        out.rows.append(
            Row(
                "W3",
                f"client-key rotation, N={n:,}",
                mine_s,
                "s",
                floor_s,
                "sqlite3 + cryptography floor",
                f"≤ {TARGET_RATIO}× floor",
                MET if ok else NOT_MET,
                c["step_peak"],
                samples,
            )
        )
    out.rows += _memory_rows(floors, mine, implemented)
    out.notes += _discussion(floors, mine, implemented)
    return out


def _flat(peaks: dict[int, float]) -> bool:
    lo, hi = peaks[min(peaks)], peaks[max(peaks)]
    return hi <= lo * 1.25 + 16


def _memory_rows(floors: dict[int, dict[str, Any]], mine: dict[int, dict[str, Any]], implemented: bool) -> list[Row]:
    rows = []
    floor_peaks = {n: f["peak_mib"] for n, f in floors.items() if f.get("peak_mib")}
    my_peaks = {n: c["peak_mib"] for n, c in mine.items() if c.get("peak_mib")}
    for n in sorted(floors):
        verdict = MISSING if not implemented else "report"
        if n == max(floors) and len(my_peaks) > 1:
            verdict = MET if _flat(my_peaks) else NOT_MET
        rows.append(
            Row(
                "W3",
                f"peak RSS during the rotation, N={n:,}",
                my_peaks.get(n),
                "MiB",
                floor_peaks.get(n),
                "floor's",
                "flat in N",
                verdict,
            )
        )
    return rows


def _discussion(floors: dict[int, dict[str, Any]], mine: dict[int, dict[str, Any]], implemented: bool) -> list[str]:
    if not floors:
        return []
    per_key = {n: median(f["times"]) / n * 1e6 for n, f in floors.items()}
    parts = ", ".join(
        f"{n:,} keys in {median(f['times']):.2f} s ({per_key[n]:.1f} µs a key)" for n, f in floors.items()
    )
    peaks = ", ".join(f"{f['peak_mib']:.0f} MiB" for f in floors.values() if f.get("peak_mib"))
    text = [
        f"The floor re-wraps {parts}; its peak RSS during the pass stays at {peaks} (batches of "
        f"{rewrap_floor.BATCH:,} secrets, one committed transaction each)."
    ]
    if not implemented:
        text.append(
            "**Targets (≤ 1.5× the floor; memory flat in N): not measurable yet.** The library has no "
            "`vault.keys.rotate_client` (client-key rotation is not built). The credvault side is written against "
            "`vault.keys.rotate_client(slug)` and runs as soon as that method exists; the data sets and the floor are "
            "already measured in every run, so the comparison will appear without changing bench/."
        )
    else:
        ratio = {n: median(c["times"]) / median(floors[n]["times"]) for n, c in mine.items() if n in floors}
        ratios = ", ".join(f"{r:.2f}× at N={n:,}" for n, r in ratio.items())
        verdict = "met" if ratio and all(r <= TARGET_RATIO for r in ratio.values()) else "not met"
        my_peaks = {n: c["peak_mib"] for n, c in mine.items() if c.get("peak_mib")}
        flat = "flat" if len(my_peaks) > 1 and _flat(my_peaks) else "not flat" if len(my_peaks) > 1 else "one size only"
        text.append(
            f"**Target (≤ {TARGET_RATIO}× the floor): {verdict}.** credvault's `rotate_client` takes {ratios} the "
            f"floor's time. Both sides re-wrap in batches of {rewrap_floor.BATCH:,} data keys, one committed "
            "transaction each (WAL, `synchronous=FULL`). credvault's batch takes a window of the client's secrets "
            "from the `(client_id, id)` index, reads its versions not yet under the new key as plain columns "
            "(SQLAlchemy Core, keyset cursor: no rescan of the rows already done), re-wraps them with one AES-GCM "
            "object per client-key version (`blobs.rewrap_data_keys`) and writes them back with one executemany "
            "`UPDATE` by primary key; on top of the floor it re-checks the admin, counts the new key's "
            "encryptions and advances the rotation row in each batch, and seals, audits and finishes the rotation "
            "in transactions of their own. Per key, credvault takes "
            + ", ".join(f"{median(c['times']) / n * 1e6:.0f} µs at N={n:,}" for n, c in mine.items())
            + " and the floor "
            + ", ".join(f"{median(f['times']) / n * 1e6:.0f} µs" for n, f in floors.items())
            + ": "
            + (
                "credvault's cost per key grows with N and the floor's does not. "
                if _grows(mine)
                else "no growth with N shows at these sizes. "
            )
            + f"**Memory: {flat}** (peak RSS during the rotation: "
            + ", ".join(f"{p:.0f} MiB at N={n:,}" for n, p in my_peaks.items())
            + ")."
        )
    return text


def _grows(results: dict[int, dict[str, Any]]) -> bool:
    """Whether the cost per key at the largest N is over 1.5× that at the smallest."""
    if len(results) < 2:
        return False
    per_key = {n: median(r["times"]) / n for n, r in results.items()}
    return per_key[max(per_key)] > 1.5 * per_key[min(per_key)]
