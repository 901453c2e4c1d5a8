"""A secret's update (and add) through the team server on loopback against the in-process one.

    .venv/bin/python bench/server_secrets.py [--n 100]

Two vaults made the same way (``server_checkout.make_vault``: a client, a secret, an engineer
granted it; SQLite files in a temporary folder): on the first, ``n`` in-process updates
(``vault.secrets.update``, a new password; event format 2); on the second, whose admin
certified a server key and whose data keys are under the server layer, ``n`` updates by the
same kind of engineer through ``credvault serve``'s app under uvicorn over TLS on 127.0.0.1
(``over_https``: the update draft, on record as a ``secret-view``, then the commit, its data
key layered; two requests on a kept-alive connection), in alternating blocks of 10; then ``n``
adds each way (the add draft reserves an id). Prints the median and p99 of each, their ratios
and the load average. Not part of ``bench/run.py`` (step 9 adds the bench rows).
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

from bench.server_checkout import _percentile, make_certificates, make_vault
from vault.crypto.serverkey import ServerSigningKey
from vault.server.app import build_app
from vault.server.layer import MasterKey, ServerLayer
from vault.server.running import ServeOptions, uvicorn_config
from vault.service.secretparts import over_https
from vault.service.serverkeys import certify_server_key
from vault.storage.engine import Store
from vault.transport.https import HttpsTransport
from vault.wire.nonces import DbNonceStore

BLOCK = 10


def _measure(calls: dict[str, Callable[[int], Any]], n: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {label: [] for label in calls}
    done = 0
    while done < n:
        for label, call in calls.items():
            for i in range(done, done + BLOCK):
                started = time.perf_counter()
                call(i)
                timings[label].append((time.perf_counter() - started) * 1000)
        done += BLOCK
    return timings


def _print(title: str, timings: dict[str, list[float]]) -> None:
    for label, values in timings.items():
        median, p99 = statistics.median(values), _percentile(values, 0.99)
        print(f"{title} {label:>10}: median {median:.2f} ms, p99 {p99:.2f} ms")
    ratio = statistics.median(timings["https"]) / statistics.median(timings["in-process"])
    print(f"{title} https / in-process (medians): {ratio:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _, local = make_vault(f"sqlite:///{root / 'local.db'}")
        url = f"sqlite:///{root / 'served.db'}"
        admin, alice = make_vault(url)
        key = ServerSigningKey.generate(1)
        certify_server_key(admin, 1, key.public)
        store = Store(url)
        layer = ServerLayer(MasterKey(1, os.urandom(32)))
        layer.layer_on(store)  # as `serve` does before it listens
        ca, cert, tls_key = make_certificates(root)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        base = f"https://127.0.0.1:{port}"
        app = build_app(store, public_url=base, nonce_store=DbNonceStore(store), server_key=key, layer=layer)
        options = ServeOptions(url, bind=f"127.0.0.1:{port}", tls_cert=str(cert), tls_key=str(tls_key))
        server = uvicorn.Server(uvicorn_config(app, options))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        try:
            https = HttpsTransport(base, alice.keyholder, ca_file=str(ca))
            remote = over_https(alice.secrets, https)
            for secrets in (remote, local.secrets):  # warm both paths (contexts, tags, the connection)
                for i in range(3):
                    secrets.update("acme/fw01", password=f"warm {i}")
            updates = _measure(
                {
                    "in-process": lambda i: local.secrets.update("acme/fw01", password=f"pw {i}"),
                    "https": lambda i: remote.update("acme/fw01", password=f"pw {i}"),
                },
                args.n,
            )
            adds = _measure(
                {
                    "in-process": lambda i: local.secrets.add(f"acme/new{i}", password="pw"),
                    "https": lambda i: remote.add(f"acme/new{i}", password="pw"),
                },
                args.n,
            )
            https.close()
        finally:
            server.should_exit = True
            thread.join(20)
            store.close()
        print(f"load average (1, 5, 15 min) before: {load}, after: {os.getloadavg()}; n={args.n} each")
        _print("update", updates)
        _print("add", adds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
