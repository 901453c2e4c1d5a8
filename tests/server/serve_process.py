"""``credvault serve`` as a real subprocess, for the crash and concurrency tests (docs/server.md §7).

``ServedVault`` is a team whose vault went to the team server: the admin certified a server
key, whose file (0600) sits in the test's folder with the test CA's certificate. ``start``
runs ``credvault serve`` on it (TLS on loopback, ``--server-key``, ``--org-key`` read from the
database) with an extra environment (the fault seam: ``vault/server/faults.py``) and waits for
``/healthz``; the process can be started again on the same port (what engineers signed for).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from server_harness import CertificateFiles
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from vault import Vault
from vault.crypto.serverkey import ServerSigningKey
from vault.service.checkouts import https_checkout_keyholder
from vault.service.serverkeys import certify_server_key
from vault.storage import models as m
from vault.transport.https import HttpsTransport

COMMAND = [sys.executable, "-c", "from vault.cli.fast import main; main()"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServeProcess:
    """One ``credvault serve`` subprocess on ``port``."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class ServedVault:
    """A team's database with a certified server key, its key file and the test CA (module docstring)."""

    url: str
    folder: Path
    ca: CertificateFiles
    key: ServerSigningKey
    processes: list[ServeProcess] = field(default_factory=list)

    @classmethod
    def certify(cls, admin: Vault, url: str, folder: Path, ca: CertificateFiles) -> ServedVault:
        key = ServerSigningKey.generate(1)
        certify_server_key(admin, 1, key.public)
        seed = base64.urlsafe_b64encode(key.key.seed).rstrip(b"=").decode("ascii")
        key_file = folder / "server-key.json"
        key_file.write_text(json.dumps({"version": 1, "signing_seed": seed}))
        key_file.chmod(0o600)
        return cls(url, folder, ca, key)

    def org_key(self) -> str:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return bytes(conn.execute(select(m.VaultInfo.org_signing_public)).scalar_one()).hex()
        finally:
            engine.dispose()

    def start(self, port: int | None = None, **env: str) -> ServeProcess:
        """``credvault serve`` on ``port`` (a free one if None) with ``env`` added; once it answers."""
        port = port or free_port()
        args = ["serve", "--db", self.url, "--bind", f"127.0.0.1:{port}", "--org-key", self.org_key()]
        args += ["--tls-cert", str(self.ca.cert_file), "--tls-key", str(self.ca.key_file)]
        args += ["--server-key", str(self.folder / "server-key.json")]
        log = self.folder / f"serve-{port}-{len(self.processes)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([*COMMAND, *args], stdout=out, stderr=out, env={**os.environ, **env})
        served = ServeProcess(port, proc, log)
        self.processes.append(served)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"credvault serve exited: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{served.url}/healthz", verify=self.tls(), timeout=2).status_code == 200:
                    return served
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("credvault serve did not answer /healthz in 60 s")

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.ca_file))

    def stop_all(self) -> None:
        for served in self.processes:
            served.stop()

    def transport(self, served: ServeProcess, vault: Vault) -> HttpsTransport:
        vault.keyholder.me()
        return HttpsTransport(served.url, vault.keyholder, ca_file=str(self.ca.ca_file))

    def keyholder(self, https: HttpsTransport, vault: Vault):  # type: ignore[no-untyped-def]
        return https_checkout_keyholder(vault.checkouts, https)

    def client(self, served: ServeProcess) -> httpx.Client:
        return httpx.Client(base_url=served.url, verify=self.tls())

    def events(self) -> list[tuple[int, str, int | None, bytes | None]]:
        """Every event's (seq, action, engineer id, request id), in order."""
        engine = create_engine(self.url, poolclass=NullPool)
        e = m.AuditEvent
        try:
            with engine.connect() as conn:
                found = conn.execute(select(e.seq, e.action, e.engineer_id, e.request_id).order_by(e.seq))
                return [(r[0], r[1], r[2], None if r[3] is None else bytes(r[3])) for r in found]
        finally:
            engine.dispose()
