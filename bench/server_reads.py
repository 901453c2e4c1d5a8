"""The read routes through the team server on loopback against the same reads in-process.

    .venv/bin/python bench/server_reads.py [--n 100]

Two vaults made as ``server_checkout.py`` makes them (a client, a secret, alice granted it;
SQLite files in a temporary folder), alice holding a checkout in each. For each read, ``n``
calls in-process on the first and ``n`` through ``credvault serve``'s app under uvicorn over
TLS on 127.0.0.1 on the second (whose admin certified a server key; nonces in the database),
by the same keyholder method, in alternating blocks of 10: ``checkouts.list``,
``grants.list``, ``keys.versions``, ``audit.log`` (alice's own events, one page),
``reports.status`` (the admin), and the reads that append their event (format 2 in-process,
format 3 through the server, committed before the answer): ``engineers.list``,
``secrets.show``/``history``/``list`` and ``clients.show``/``list`` (alice's). Prints the median
and p99 of each and the ratio.
Not part of ``bench/run.py`` (step 9 adds the bench rows).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn

from bench.server_checkout import REASON, _percentile, make_certificates, make_vault
from vault import Vault
from vault.authority.audit_requests import LOG, EventQuery
from vault.authority.requests import Caller
from vault.crypto.serverkey import ServerSigningKey
from vault.server.app import build_app
from vault.server.running import ServeOptions, uvicorn_config
from vault.service import clientparts, engineerparts, rotationparts, secretparts
from vault.service.audit import https_audit_keyholder
from vault.service.checkouts import https_checkin_keyholder, https_checkout_keyholder
from vault.service.reports import https_report_keyholder
from vault.service.serverkeys import certify_server_key
from vault.storage.engine import Store
from vault.transport.https import HttpsTransport
from vault.wire.nonces import DbNonceStore


def _own_events(alice: Vault) -> EventQuery:
    me = alice.keyholder.me()
    return EventQuery(LOG, Caller(me.engineer_id, me.key_generation), engineer_id=me.engineer_id)


def _reads(admin: Vault, alice: Vault, https: dict[str, HttpsTransport] | None) -> dict[str, Callable[[], Any]]:
    """Each read as one call, in-process (``https`` None) or through the server."""
    if https is None:
        audit = alice.audit.keyholder
        return {
            "checkouts.list": alice.checkouts.list,
            "grants.list": alice.grants.list,
            "keys.versions": lambda: alice.keys.versions("acme"),
            "audit.log": lambda: list(audit.pages(_own_events(alice))),
            "reports.status": admin.reports.status,
            "engineers.list": alice.engineers.list,
            "secrets.show": lambda: alice.secrets.show("acme/fw01"),
            "secrets.history": lambda: alice.secrets.history("acme/fw01"),
            "secrets.list": alice.secrets.list,
            "clients.show": lambda: alice.clients.show("acme"),
            "clients.list": alice.clients.list,
        }
    a, r = https["alice"], https["admin"]
    checkins = https_checkin_keyholder(https_checkout_keyholder(alice.checkouts, a))
    grants = clientparts.https_grant_list_keyholder(alice.grants, a)
    keys = rotationparts.https_rotation_keyholder(alice.keys, a)
    audit = https_audit_keyholder(alice.audit, a)
    reports = https_report_keyholder(admin.reports, r)
    engineers = engineerparts.https_engineer_keyholder(alice.engineers, a)
    secrets = secretparts.over_https(alice.secrets, a)
    clients = clientparts.https_client_keyholder(alice.clients, a)
    return {
        "checkouts.list": checkins.list,
        "grants.list": grants.list,
        "keys.versions": lambda: keys.versions("acme"),
        "audit.log": lambda: list(audit.pages(_own_events(alice))),
        "reports.status": reports.status,
        "engineers.list": engineers.list,
        "secrets.show": lambda: secrets.show("acme/fw01"),
        "secrets.history": lambda: secrets.history("acme/fw01"),
        "secrets.list": secrets.list,
        "clients.show": lambda: clients.show("acme"),
        "clients.list": clients.list,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        local_admin, local = make_vault(f"sqlite:///{root / 'local.db'}")
        local.checkouts.checkout("acme/fw01", reason=REASON)
        url = f"sqlite:///{root / 'served.db'}"
        admin, alice = make_vault(url)
        alice.checkouts.checkout("acme/fw01", reason=REASON)
        key = ServerSigningKey.generate(1)
        certify_server_key(admin, 1, key.public)
        ca, cert, tls_key = make_certificates(root)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        base = f"https://127.0.0.1:{port}"
        store = Store(url)
        app = build_app(store, public_url=base, nonce_store=DbNonceStore(store), server_key=key)  # as `serve`
        options = ServeOptions(url, bind=f"127.0.0.1:{port}", tls_cert=str(cert), tls_key=str(tls_key))
        server = uvicorn.Server(uvicorn_config(app, options))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        https = {
            name: HttpsTransport(base, v.keyholder, ca_file=str(ca)) for name, v in (("alice", alice), ("admin", admin))
        }
        timings: dict[tuple[str, str], list[float]] = {}
        try:
            paths = {"in-process": _reads(local_admin, local, None), "https": _reads(admin, alice, https)}
            for name in paths["https"]:
                for reads in paths.values():
                    for _ in range(3):
                        reads[name]()  # warm (contexts, caches, the connection)
                for _ in range(0, args.n, 10):
                    for label, reads in paths.items():
                        for _ in range(10):
                            started = time.perf_counter()
                            reads[name]()
                            timings.setdefault((name, label), []).append((time.perf_counter() - started) * 1000)
        finally:
            for transport in https.values():
                transport.close()
            server.should_exit = True
            thread.join(20)
            store.close()
        print(f"load average (1, 5, 15 min) before: {load}, after: {os.getloadavg()}; n={args.n} each")
        for name in paths["https"]:
            shown = []
            for label in ("in-process", "https"):
                values = timings[(name, label)]
                shown.append(f"{label} {statistics.median(values):.2f} / {_percentile(values, 0.99):.2f} ms")
            ratio = statistics.median(timings[(name, "https")]) / statistics.median(timings[(name, "in-process")])
            print(f"{name:>15}: {'; '.join(shown)} (median / p99); {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
