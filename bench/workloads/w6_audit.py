"""W6: audit verification of a million events, in full and after 1,000 new ones.

**Generation** (its own step): a small vault (``dataset.py``: 10 clients, 4 engineers),
then E events generated through the fast path of ``bench/auditgen.py``: each is a
``reveal`` by an engineer of a secret of a client they hold a grant for, made as
``CheckoutAuthority`` (vault/authority/checkouts.py) (``hold=False``) appends it: the details
``{"secret", "field", "version", "reason"}`` as sorted JSON encrypted under the
client's current audit key (``blobs.encrypt_audit_detail``, generation from the
client's audit-key ring), hashed with ``chain.event_hash`` and signed with
``chain.sign_event`` by that engineer's key. (A real reveal also sets the secret's
``last_used_at``; the generated ones do not.)

**Measurement** (another step, so its peak memory is its own): ``verify_audit()`` over
the whole chain (the library splits it by sequence number over a process pool, each
worker reading, hashing and checking the signatures of its own ranges), with the CPU
time of the process and its workers, so "using both cores" is a number; then ``new``
real reveals through the API and ``verify_audit(since=(seq, hash))`` from the head
before them. The floor is the CPU work no verifier can skip, measured in-process on
20,000 of the same events as CPU time (so other work on a shared machine does not
inflate it): one Ed25519 verification and one SHA-256 chain hash (with the same
encoding as ``chain.EventCodec``) per event, divided by the cores. The CPU time the
verification spent per event, against the floor per event on one core, is its own
overhead whatever the load.

Checks: both verifications succeed, count every event, and the admin reads the
details of generated events (so their details blobs are the library's).
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench import auditgen, dataset
from bench.dataset import Shape
from bench.report import MET, NOT_MET, Outcome, Row
from bench.suite import Context
from bench.timing import PhasePeak, median, repeat, timed
from vault.crypto import blobs, chain
from vault.service.sessions import UnlockedSession
from vault.storage import models as m

SHAPE = Shape(secrets=200, clients=10, engineers=4)
UNIT = 5_000
WINDOW_UNITS = 4
FULL_TARGET_S, INCREMENTAL_TARGET_S = 40.0, 1.0
FLOOR_SAMPLE = 20_000


@dataclass(frozen=True)
class EventUnit:
    vault_id: bytes
    first_seq: int
    count: int
    at_us: int
    engineers: tuple[tuple[int, int], ...]  # (id, key generation), by engineer index
    audit_keys: tuple[tuple[int, bytes], ...]  # (generation, key), by client index
    shape: Shape


def make_events(u: EventUnit) -> dict[str, list[Any]]:
    events = []
    granted = [u.shape.granted_clients(e) for e in range(u.shape.engineers)]
    for seq in range(u.first_seq, u.first_seq + u.count):
        e = seq % u.shape.engineers
        c = granted[e][(seq // u.shape.engineers) % len(granted[e])]
        j = (seq // 7) % u.shape.secrets_of(c)
        engineer_id, generation = u.engineers[e]
        audit_generation, audit_key = u.audit_keys[c]
        details = {"secret": dataset.secret_name(j), "field": "password", "version": 1, "reason": f"T-{seq % 9973}"}
        raw = json.dumps(details, sort_keys=True).encode("utf-8")
        blob = blobs.encrypt_audit_detail(audit_key, audit_generation, raw, c + 1, seq, "reveal")
        events.append(
            auditgen.Event(
                seq,
                u.at_us + seq,
                engineer_id,
                generation,
                "reveal",
                c + 1,
                u.shape.first_secret_id(c) + j,
                audit_generation,
                blob,
                None,
            )
        )
    return {"events": events}


def generate_step(params: dict[str, Any]) -> dict[str, Any]:
    url, total = params["url"], params["events"]
    shape = Shape(**params["shape"]) if "shape" in params else SHAPE  # W14 asks for a big client
    mf = dataset.build(url, shape)
    Path(params["manifest"]).write_text(json.dumps(mf.to_json()))
    admin, keys = dataset.AdminKeys.unlock(url)
    engine = admin.store.engine
    seeds, engineers = {}, []
    for e in range(shape.engineers):
        name = dataset.engineer_name(e)
        vault = dataset.open_vault(mf, name)
        text = vault.sessions.get(keys.vault_id, name)
        assert text is not None
        session = UnlockedSession.from_text(text)
        seeds[session.engineer_id] = session.signing_seed
        engineers.append((session.engineer_id, session.key_generation))
        vault.close()
    with engine.connect() as conn:
        rings = conn.execute(
            select(m.Client.id, m.Client.current_key_version, m.Client.audit_keys_blob).order_by(m.Client.id)
        ).all()
        seq, _ = auditgen.read_head(conn)
    audit_keys = []
    for client_id, version, blob in rings:
        ring = blobs.decrypt_client_field(
            keys.client_key(engine, client_id, version), version, blob, client_id, "audit-keys"
        )
        audit_keys.append((len(ring) // 32, ring[-32:]))  # the current generation, as _current_audit_key takes it
    admin.close()
    at_us = int(time.time() * 1_000_000)
    units = [
        EventUnit(keys.vault_id, s, min(UNIT, seq + total + 1 - s), at_us, tuple(engineers), tuple(audit_keys), shape)
        for s in range(seq + 1, seq + total + 1, UNIT)
    ]
    windows = iter([units[i : i + WINDOW_UNITS] for i in range(0, len(units), WINDOW_UNITS)])
    counts = auditgen.write(engine, keys.vault_id, seeds, windows, make_events, (), os.cpu_count() or 2)
    dataset.checkpoint(engine)
    return {"events": counts["events"]}


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _cpu_timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.process_time()
    value = fn()
    return time.process_time() - start, value


def _floor_per_event(admin: Any, vault_id: bytes) -> tuple[float, float]:
    """(CPU seconds per signature verification, per chain hash) on real events, one core."""
    with admin.store.transaction() as s:
        keys = {(r.id, r.key_generation): r.signing_public for r in s.scalars(select(m.Engineer))}
        events = list(
            s.scalars(
                select(m.AuditEvent)
                .where(m.AuditEvent.signature.is_not(None))
                .order_by(m.AuditEvent.seq)
                .limit(FLOOR_SAMPLE)
            )
        )
        jobs = [(e.seq, keys[(e.engineer_id, e.key_generation)], e.signature, e.hash) for e in events]
        fields = [
            (
                e.seq,
                e.at_us,
                e.engineer_id,
                e.key_generation,
                e.action,
                e.client_id,
                e.secret_id,
                e.key_version,
                e.details_blob,
                e.details_json,
                e.prev_hash,
            )
            for e in events
        ]
    codec = chain.EventCodec(vault_id)
    sig_s, bad = _cpu_timed(lambda: chain.first_bad_signature(vault_id, jobs, workers=1))
    hash_s, hashes = _cpu_timed(lambda: [codec.audit_event_hash(*f) for f in fields])
    assert bad is None and hashes == [e.hash for e in events]
    return sig_s / len(jobs), hash_s / len(fields)


def verify_step(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    admin = dataset.open_vault(mf, dataset.ADMIN)
    head = admin.audit.head()
    cpu0 = _cpu_seconds()
    with PhasePeak() as peak:
        full_s, full = timed(admin.audit.verify)
    cpu_s = _cpu_seconds() - cpu0
    cores = cpu_s / full_s
    checks = [
        (
            f"W6: full verify_audit accepts all {head[0]:,} events (checked {full.checked:,})",
            full.ok and full.checked == head[0],
        )
    ]
    checks += dataset.check_sample(admin, mf, dataset.sample_refs(mf, 3), "W6: admin (generated events' details)")
    sig_each, hash_each = _floor_per_event(admin, bytes.fromhex(mf.vault_id))
    engineer = dataset.open_vault(mf, dataset.engineer_name(0))
    start = admin.audit.head()
    refs = dataset.sample_refs(mf, params["new"], clients=SHAPE.granted_clients(0), rng_seed=3)
    for ref in refs:
        engineer.checkouts.reveal(ref, reason="bench")
    end = admin.audit.head()
    incremental = repeat(lambda: admin.audit.verify(since=start), params["reps"], 1)
    last = admin.audit.verify(since=start)
    checks.append(
        (
            f"W6: incremental verify_audit accepts the {end[0] - start[0]:,} new events",
            last.ok and last.checked == end[0] - start[0] and end[0] - start[0] >= len(refs),
        )
    )
    engineer.close()
    admin.close()
    return {
        "checks": checks,
        "events": head[0],
        "full_s": full_s,
        "cores": cores,
        "cpu_each": cpu_s / max(1, full.checked),
        "peak_mib": peak.mib,
        "incremental": incremental,
        "new": end[0] - start[0],
        "sig_each": sig_each,
        "hash_each": hash_each,
        "cpus": os.cpu_count() or 1,
    }


def run(ctx: Context) -> Outcome:
    out = Outcome()
    events = ctx.plan.w6_events
    manifest = str(ctx.workdir / "w6.json")
    gen = ctx.step(
        out,
        f"W6 generate {events:,} audit events",
        "bench.workloads.w6_audit:generate_step",
        {"url": ctx.sqlite_url("w6"), "events": events, "manifest": manifest},
    )
    if gen is None:
        return out
    result = ctx.step(
        out,
        "W6 verify",
        "bench.workloads.w6_audit:verify_step",
        {"manifest": manifest, "new": ctx.plan.w6_new_events, "reps": 2 if ctx.plan.quick else 5},
    )
    for path in ctx.workdir.glob("w6.db*"):
        path.unlink()
    if result is None:
        return out
    v = result.value
    n, cpus = v["events"], v["cpus"]
    floor_s = n * (v["sig_each"] + v["hash_each"]) / cpus
    inc = median(v["incremental"])
    projected = 1_000_000 * v["full_s"] / n  # the target is for a million events: linear in events
    full_verdict = MET if projected <= FULL_TARGET_S else NOT_MET
    full_what = f"≤ {FULL_TARGET_S:.0f} s for 1,000,000" + ("" if n >= 1_000_000 else " (projected linearly)")
    out.rows += [
        Row(
            "W6",
            f"verify_audit, full, {n:,} events",
            v["full_s"],
            "s",
            floor_s,
            f"Ed25519 + SHA-256 work ÷ {cpus} cores",
            full_what,
            full_verdict,
            result.peak_rss_mib,
            "n=1",
        ),
        Row(
            "W6",
            f"verify_audit, incremental, {v['new']:,} new events",
            inc,
            "s",
            None,
            "",
            f"≤ {INCREMENTAL_TARGET_S:.0f} s",
            MET if inc <= INCREMENTAL_TARGET_S else NOT_MET,
            result.peak_rss_mib,
            f"n={len(v['incremental'])}",
        ),
        Row("W6", "cores used by the full verification (CPU time ÷ wall time)", v["cores"], "", samples=""),
    ]
    gen_s = gen.seconds
    floor_each = v["sig_each"] + v["hash_each"]
    floor_million = 1_000_000 * floor_each / cpus
    if floor_million > FULL_TARGET_S:
        reach = (
            f"So on this CPU the {FULL_TARGET_S:.0f} s target is out of reach of any verifier that checks every "
            "event's signature with this Ed25519 implementation, however well it uses the cores: reaching it needs "
            "a faster Ed25519 verification, fewer signatures to check (sign a batch or checkpoint every N events, "
            "the hash chain covering the rest: a format change), or a faster CPU. "
        )
    else:
        reach = f"The floor leaves room for the {FULL_TARGET_S:.0f} s target on this CPU. "
    out.rows.append(
        Row(
            "W6",
            "CPU time per event, full verification (all processes)",
            v["cpu_each"] * 1e6,
            "µs",
            floor_each * 1e6,
            "Ed25519 + SHA-256 per event, one core",
            "",
            "report",
            samples="",
        )
    )
    out.notes += [
        f"**Full verification (≤ 40 s for 1,000,000 events on both cores): {full_verdict}"
        + ("" if n >= 1_000_000 else f" at {n:,} events; projected linearly to 1,000,000: {projected:.0f} s")
        + f".** {n:,} events took {v['full_s']:.1f} s using {v['cores']:.2f} cores of {cpus} (CPU time of the "
        "process and its worker pool ÷ wall time; on a shared machine other work takes the rest). The chain is "
        "split by sequence number into ranges that worker processes check on their own, each reading its rows "
        "from the database as plain tuples, recomputing every hash, checking every link inside the range and "
        "every signature; the main process checks the link between consecutive ranges, in order, and names the "
        "first bad event. The floor, the CPU work no verifier can skip, is one Ed25519 verification "
        f"({v['sig_each'] * 1e6:.0f} µs of CPU here) and one chained SHA-256 ({v['hash_each'] * 1e6:.1f} µs, "
        f"context encoding included) per event: {floor_s:.1f} s for {n:,} events with {cpus} cores perfectly used "
        f"and nothing else running; per million events {floor_million:.0f} s. The verification spent "
        f"{v['cpu_each'] * 1e6:.0f} µs of CPU per event, {v['cpu_each'] / floor_each:.2f}× the floor's: the "
        "rest is reading rows, the Python around each check and the worker processes' start. " + reach,
        f"**Incremental verification (≤ 1 s after 1,000 new events): "
        f"{'met' if inc <= INCREMENTAL_TARGET_S else 'not met'}.** From the head before {v['new']:,} new events "
        f"it takes {inc * 1000:.0f} ms (median); the cost is proportional to the new events only.",
        f"Generating the {n:,} events through the fast path took {gen_s:.0f} s (signatures in "
        f"{os.cpu_count() or 1} worker processes); `verify_audit` accepting them is the proof they are the "
        "library's rows.",
    ]
    return out
