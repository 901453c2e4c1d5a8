"""A backup through the team server against the same backup in-process: time and peak RSS (session 16, helper G).

    python -m bench.backup_served --secrets 1000 [--engine sqlite|postgresql] [--runs 3]

The data set is ``bench/dataset.py``'s (100 secrets a client, made through the fast path); its
admin certifies a server key and one ``credvault serve`` subprocess serves it on loopback TLS
(``server_team.serve_processes``). Each measured backup runs in a process of its own; its peak RSS
(``VmHWM``) is reset after the unlock, so that Argon2's memory is not counted, and read after the
backup (``rss_start_kib``: its resident set at the reset). **In-process**: ``Vault.backups.create``
on the database, on the server's host (its key file). **Through the server**:
``RemoteVault.backups.create`` of the admin on a machine with no database (pinned and joined
beforehand, in a home of its own). For the server, ``VmHWM`` of its process (its peak since it
started, its start-up included) is read before the first backup, then reset and read after the last
(the backups' own peak). The files' sizes are reported: the two backups hold the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench import dataset
from bench.server_team import serve_processes
from vault.crypto.serverkey import ServerSigningKey
from vault.service.serverkeys import certify_server_key
from vault.storage import models as m


def _vmhwm(pid: int) -> int:
    """The process's peak resident set, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _vmrss(pid: int) -> int:
    """The process's resident set now, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _child(kind: str, arg: str, out: str) -> None:
    """One backup in this process: its wall time and this process's peak RSS, as JSON on stdout."""
    from vault.crypto.keyrecord import FLOOR
    from vault.service.remote import RemoteVault
    from vault.service.serverpins import ServerPins
    from vault.service.sessions import MemorySessionStore

    if kind == "local":  # on the server's host, with its key file (as `--server-key FILE`)
        from vault.server.host import on_host
        from vault.server.keyfile import read_server_keys

        vault: Any = dataset.open_vault(dataset.load(arg), dataset.ADMIN)
        on_host(vault, read_server_keys(Path(arg).with_name("server-key.json")))
    else:
        vault = RemoteVault(ServerPins.load().get(arg), engineer=dataset.ADMIN, sessions=MemorySessionStore())
        vault.engineers.kdf_params = FLOOR
        vault.engineers.unlock(dataset.ADMIN, dataset.passphrase(dataset.ADMIN))
    before = _vmhwm(os.getpid())  # the unlock's peak (Argon2) and the imports
    start = _vmrss(os.getpid())
    Path(f"/proc/{os.getpid()}/clear_refs").write_text("5")  # reset the peak: the backup's own from here
    started = time.perf_counter()
    vault.backups.create(Path(out))
    seconds = time.perf_counter() - started
    rss = _vmhwm(os.getpid())
    print(json.dumps({"seconds": seconds, "rss_kib": rss, "rss_start_kib": start, "rss_before_kib": before}))


def _run(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.backup_served", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(secrets: int, engine: str, runs: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="cvbench-backup-"))
    try:
        if engine == "sqlite":
            url = f"sqlite:///{folder / 'vault.db'}"
        else:
            url = os.environ.get("CREDVAULT_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/cvbench_backup")
        shape = dataset.Shape(secrets=secrets, clients=max(1, secrets // 100), engineers=3)
        manifest = dataset.build(url, shape)
        manifest_path = folder / "manifest.json"
        manifest_path.write_text(json.dumps(manifest.to_json()))
        admin = dataset.open_vault(manifest, dataset.ADMIN)
        key = ServerSigningKey.generate(1)
        certify_server_key(admin, 1, key.public)
        with admin.store.read() as s:
            org_key = bytes(s.scalar(select(m.VaultInfo.org_signing_public)))
        home = folder / "home"
        env = {**os.environ, "CREDVAULT_HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        results: dict[str, Any] = {"secrets": secrets, "engine": engine, "local": [], "served": []}
        with serve_processes(url, folder, 1, key, org_key) as urls:
            base, pid = urls[0], urls.pids[0]
            os.environ["CREDVAULT_HOME"] = str(home)
            from vault.service import serverjoin

            pin = serverjoin.pin(base, serverjoin.trust(base, str(folder / "ca.pem")), str(folder / "ca.pem"))
            serverjoin.join(pin, admin, dataset.ADMIN, dataset.passphrase(dataset.ADMIN))
            admin.close()
            results["server_vmhwm_before_kib"] = _vmhwm(pid)
            results["server_vmrss_before_kib"] = _vmrss(pid)
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # the server's peak from here: the backups' own
            for run in range(runs):
                local, served = folder / f"local-{run}.cvbk", folder / f"served-{run}.cvbk"
                results["local"].append(_run(["--child", "local", str(manifest_path), str(local)], env))
                results["served"].append(_run(["--child", "served", base, str(served)], env))
                results["local"][-1]["bytes"] = local.stat().st_size
                results["served"][-1]["bytes"] = served.stat().st_size
            results["server_vmhwm_after_kib"] = _vmhwm(pid)
        return results
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secrets", type=int, default=1000)
    parser.add_argument("--engine", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "ARG", "OUT"))
    options = parser.parse_args()
    if options.child:
        _child(*options.child)
        return
    print(json.dumps(measure(options.secrets, options.engine, options.runs), indent=1))


if __name__ == "__main__":
    main()
