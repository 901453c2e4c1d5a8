"""Checkout round trip through the team server on loopback against the in-process checkout.

    .venv/bin/python bench/server_checkout.py [--n 200]

Two vaults made the same way (a client, a secret, an engineer granted it; SQLite files in a
temporary folder): on the first, ``n`` in-process checkouts (event format 2); on the second,
whose admin certified a server key, ``n`` checkouts by the same kind of engineer through
``credvault serve``'s app under uvicorn over TLS on 127.0.0.1 (``HttpsTransport``, a kept-alive
connection; event format 3, its nonce kept in the checkout's unit as ``serve`` does), the two
measured in alternating blocks of 20. Prints the median and p99 of each, their ratio and the
load average. ``round_trip_step`` is the same measure as a step of ``bench/run.py`` (W16);
``make_certificates`` and ``make_vault`` are shared with W16's team load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.crypto.serverkey import ServerSigningKey
from vault.server.app import build_app
from vault.server.running import ServeOptions, uvicorn_config
from vault.service.checkouts import https_checkout_keyholder
from vault.service.serverkeys import certify_server_key
from vault.service.sessions import MemorySessionStore
from vault.storage.engine import Store
from vault.transport.https import HttpsTransport
from vault.wire.nonces import DbNonceStore

REASON = "T-1 bench"


def make_vault(url: str) -> tuple[Vault, Vault]:
    """(admin, alice): a client, a secret, alice granted it."""
    admin, _ = Vault.create(url, admin="admin", passphrase="admin pass", kdf_params=FLOOR)
    admin.engineers.unlock("admin", "admin pass")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw01", password="pw")
    code = admin.engineers.invite("alice")
    alice = Vault.open(url, engineer="alice", kdf_params=FLOOR, sessions=MemorySessionStore())
    admin.engineers.confirm("alice", alice.engineers.enroll("alice", code, "alice pass"))
    alice.engineers.unlock("alice", "alice pass")
    admin.grants.grant("alice", "acme")
    return admin, alice


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    files = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    files[2].write_bytes(pem)
    files[2].chmod(0o600)
    return files


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(n: int) -> dict[str, list[float]]:
    """Milliseconds of ``n`` checkouts each way, in alternating blocks of 20 (module docstring)."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _, local = make_vault(f"sqlite:///{root / 'local.db'}")
        url = f"sqlite:///{root / 'served.db'}"
        admin, alice = make_vault(url)
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
        timings: dict[str, list[float]] = {"in-process": [], "https": []}
        try:
            https = HttpsTransport(base, alice.keyholder, ca_file=str(ca))
            holder = https_checkout_keyholder(alice.checkouts, https)

            def remote() -> Any:
                return holder.checkout(
                    "acme/fw01", reason=REASON, field="password", version=None, hold=True, hold_for=None
                )

            def inprocess() -> Any:
                return local.checkouts.checkout("acme/fw01", reason=REASON)

            for call in (remote, inprocess):  # warm both paths (contexts, tags, connections)
                for _ in range(5):
                    call()
            for _ in range(0, n, 20):
                for label, call in (("in-process", inprocess), ("https", remote)):
                    for _ in range(min(20, n)):
                        started = time.perf_counter()
                        if call().value != "pw":
                            raise AssertionError("a checkout returned another value")
                        timings[label].append((time.perf_counter() - started) * 1000)
            https.close()
        finally:
            server.should_exit = True
            thread.join(20)
            store.close()
            for vault in (local, admin, alice):
                vault.close()
    return timings


def round_trip_step(params: dict[str, Any]) -> dict[str, Any]:
    """Step entry (W16): ``measure(params["n"])`` and the load average around it."""
    before = os.getloadavg()
    timings = measure(params["n"])
    return {"ms": timings, "load": [before, os.getloadavg()]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    load = os.getloadavg()
    timings = measure(args.n)
    print(f"load average (1, 5, 15 min) before: {load}, after: {os.getloadavg()}; n={len(timings['https'])} each")
    for label, values in timings.items():
        median, p99 = statistics.median(values), _percentile(values, 0.99)
        print(f"{label:>10}: median {median:.2f} ms, p99 {p99:.2f} ms")
    ratio = statistics.median(timings["https"]) / statistics.median(timings["in-process"])
    print(f"https / in-process (medians): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
