"""W9: backup and restore of the main data set (reported; beyond the issue's table).

``vault.backups.create(path)`` then ``export_backup_keys``, timed as the admin on the main
data set (1,000,000 secrets at full scale), and ``restore_backup`` of that file into a
new, empty SQLite database, each its own step so that each has its own peak RSS (W8):
a backup is written, and restored, one section at a time, so neither should grow with
the vault.

Checks: the restore reports every client and secret of the data set and the backup's
audit head; a sample of secrets reads back from the restored vault with the generated
values (as the admin, whose passphrase opens the key export); the restored audit chain
verifies over the last 1,000 events of the backup, anchored at a hash read from the source.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench import dataset
from bench.report import Outcome, Row
from bench.suite import Context
from bench.timing import timed
from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m


def backup_step(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    admin = dataset.open_vault(mf, dataset.ADMIN)
    seconds, info = timed(lambda: admin.backups.create(Path(params["backup"])))
    admin.backups.export_keys(Path(params["keys"]))
    anchor = max(0, info.audit_head - 1_000)  # the restored chain is verified from here, trusted from the source
    with admin.store.transaction() as s:
        anchor_hash = s.scalar(select(m.AuditEvent.hash).where(m.AuditEvent.seq == anchor)) if anchor else None
    admin.close()
    checks = [
        (
            f"W9: the backup holds {info.clients:,} clients and {info.secrets:,} secrets",
            (info.clients, info.secrets) == (mf.shape.clients, mf.shape.secrets),
        )
    ]
    size = os.path.getsize(params["backup"])
    return {
        "checks": checks,
        "seconds": seconds,
        "bytes": size,
        "audit_head": info.audit_head,
        "anchor": [anchor, anchor_hash.hex() if anchor_hash else None],
    }


def restore_step(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    target = Vault.open(params["target"], upgrade=True, kdf_params=FLOOR, sessions=MemorySessionStore())
    passphrase = dataset.passphrase(dataset.ADMIN)

    def restore() -> Any:
        return target.backups.restore(
            Path(params["backup"]), Path(params["keys"]), admin=dataset.ADMIN, passphrase=passphrase
        )

    seconds, info = timed(restore)
    target.close()
    checks = [
        (
            f"W9: the restore wrote {info.clients:,} clients and {info.secrets:,} secrets, "
            f"audit head {info.audit_head:,}",
            (info.clients, info.secrets, info.audit_head) == (mf.shape.clients, mf.shape.secrets, params["audit_head"]),
        )
    ]
    restored = dataset.open_vault(mf, dataset.ADMIN, url=params["target"])
    checks += dataset.check_sample(restored, mf, dataset.sample_refs(mf, 10), "W9: admin, restored vault")
    seq, digest = params["anchor"]
    verified = restored.audit.verify(since=(seq, bytes.fromhex(digest)) if digest else None)
    checks.append((f"W9: the restored audit chain verifies ({verified.checked:,} events checked)", verified.ok))
    restored.close()
    return {"checks": checks, "seconds": seconds}


def run(ctx: Context) -> Outcome:
    out = Outcome()
    manifest = ctx.main_dataset(out)
    if manifest is None:
        return out
    files = {"backup": str(ctx.workdir / "w9.cvbk"), "keys": str(ctx.workdir / "w9-keys.json")}
    backup = ctx.step(out, "W9 backup", "bench.workloads.w9_backup:backup_step", {"manifest": manifest, **files})
    if backup is None:
        return out
    target = ctx.sqlite_url("w9-restored")
    params = {"manifest": manifest, "target": target, **files}
    params |= {"audit_head": backup.value["audit_head"], "anchor": backup.value["anchor"]}
    restored = ctx.step(out, "W9 restore", "bench.workloads.w9_backup:restore_step", params)
    secrets, size = dataset.load(manifest).shape.secrets, backup.value["bytes"]
    out.rows.append(
        Row(
            "W9",
            f"backup of {secrets:,} secrets ({size / 1e6:,.0f} MB file)",
            backup.value["seconds"],
            "s",
            verdict="report",
            peak_rss_mib=backup.peak_rss_mib,
            samples="n=1",
        )
    )
    if restored is not None:
        out.rows.append(
            Row(
                "W9",
                f"restore of that backup into an empty SQLite database ({secrets:,} secrets)",
                restored.value["seconds"],
                "s",
                verdict="report",
                peak_rss_mib=restored.peak_rss_mib,
                samples="n=1",
            )
        )
    for name in ("w9.cvbk", "w9-keys.json"):
        (ctx.workdir / name).unlink(missing_ok=True)
    for path in ctx.workdir.glob("w9-restored.db*"):
        path.unlink()
    out.notes.append(
        "A backup is written and restored one section at a time (docs/format.md §11), so the peak RSS of each "
        "step (the last column) should not grow with the vault; compare it with the other steps in W8."
    )
    return out
