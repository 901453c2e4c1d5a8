"""The CLI tests' third mode: the same ``Workspace`` through a real team server (docs/server.md §7).

``CliServer`` is one uvicorn per test module on loopback TLS (``served.running``, a test CA from
``served.make_test_ca``) whose app is swapped per workspace: each test's vault is a copy of its
module's snapshot (``cli_workspace.Snapshots``), served by an app built over that copy as
``credvault serve --server-key FILE`` builds it (the key file's layer over every data key, nonces
in the database, the authentication limits), so a test sees a fresh vault and a fresh server and
the pins (one URL per module) still hold.

``ServedWorkspace`` has ``Workspace``'s interface. The vault is initialised on the server's host
(``--db``, the host's home), the server key made and certified there (``server keygen``,
``server certify``); the admin then pins the server, copies their key record from their own home
(``server trust``, ``server join``) and works with no database (``admin(...)``); each engineer pins
the server and enrols through it (``engineer enroll`` with the code typed at the prompt). ``host``
runs a command where the database is, as the admin does for what is not served; ``library``
looks at the stored state through the library on the server's database (the host's key file in
hand, as ``--server-key``); ``admin_home`` is the admin's own machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_workspace import ADMIN, ADMIN_PASS, Snapshots, Workspace, ok, run
from click.testing import Result
from served import CertificateFiles, loopback_socket, make_test_ca, running
from starlette.types import ASGIApp, Receive, Scope, Send

from vault import Vault
from vault.server.app import build_app
from vault.server.host import on_host
from vault.server.keyfile import read_server_keys
from vault.server.layer import ServerLayer
from vault.server.running import ServeOptions
from vault.storage.engine import Store
from vault.wire.authlimits import AddressLimit, AuthenticationLimits, EngineerLimit
from vault.wire.nonces import DbNonceStore

LOG = logging.getLogger("credvault.tests.server")
SLOW = 5.0  # seconds: half the client's read timeout (``HttpsTransport``)


def _stacks(path: str) -> None:
    frames = sys._current_frames()
    text = "".join(
        f"--- thread {t.name}\n" + "".join(traceback.format_stack(frames[t.ident]))
        for t in threading.enumerate()
        if t.ident in frames
    )
    LOG.warning("%s unanswered after %.0f s; every thread:\n%s", path, SLOW, text)


class CliServer:
    """A team server on loopback TLS for one test module, serving one workspace's vault at a time."""

    def __init__(self, url: str, ca: CertificateFiles) -> None:
        self.url, self.ca = url, ca
        self.app: ASGIApp | None = None
        self.store: Store | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "no vault is served"
        # A request still unanswered after SLOW seconds logs every thread's stack (shown with a failed
        # test's captured log): a CLI test once met the client's 10 s read timeout under the full
        # suite's load, and the cause could not be seen afterwards.
        watch = threading.Timer(SLOW, _stacks, (str(scope.get("path")),))
        watch.daemon = True
        watch.start()
        started = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            watch.cancel()
            if time.monotonic() - started > SLOW:
                LOG.warning("%s answered in %.1f s", scope.get("path"), time.monotonic() - started)

    def serve(self, db_url: str, key_file: Path) -> None:
        """Serve the vault at ``db_url`` from now on, as ``credvault serve --server-key key_file`` does."""
        self.release()
        keys = read_server_keys(key_file)
        store = Store(db_url)
        layer = ServerLayer(keys.master, keys.previous) if keys.master is not None else None
        if layer is not None:  # what `credvault serve` does before its first answer
            layer.layer_on(store)
            layer.rewrap(store)
        self.app = build_app(
            store,
            public_url=self.url,
            nonce_store=DbNonceStore(store),
            limits=AuthenticationLimits(AddressLimit(), EngineerLimit(store)),
            server_key=keys.signing_keys,
            layer=layer,
        )
        self.store = store

    def release(self) -> None:
        """Serve nothing; the database is closed (a SQLite file is whole again, ready to copy)."""
        if self.store is not None:
            self.store.close()
        self.app = self.store = None


@contextlib.contextmanager
def cli_server(folder: Path) -> Iterator[CliServer]:
    """A ``CliServer`` under uvicorn in a thread, its certificate under a CA written to ``folder``."""
    ca = make_test_ca(folder)
    sock = loopback_socket()
    port = sock.getsockname()[1]
    server = CliServer(f"https://127.0.0.1:{port}", ca)
    options = ServeOptions("sqlite://", bind=f"127.0.0.1:{port}", tls_cert=str(ca.cert_file), tls_key=str(ca.key_file))
    with running(server, options, sock):
        try:
            yield server
        finally:
            server.release()


@dataclass
class ServedWorkspace(Workspace):
    """``Workspace`` through ``server`` (module docstring); ``url`` is the server's database."""

    server: CliServer | None = None

    served = True  # as served.ServedTeam: served.only_local skips what a server never serves

    @property
    def key_file(self) -> Path:
        return self.tmp / "server-key.json"

    def admin(self, *args: str, input: str | None = None) -> Result:
        """The admin on their own machine, through the server (no database)."""
        return run("--as", ADMIN, *args, input=input, env=self.home(ADMIN))

    def host(self, *args: str, input: str | None = None) -> Result:
        """The admin on the server's host (``--db``, ``--server-key``), for what a server does not serve."""
        where = ("--db", self.url, "--as", ADMIN, "--passphrase-file", self.passfiles[ADMIN])
        return run(*where, "--server-key", str(self.key_file), *args, input=input)

    def serve(self) -> None:
        assert self.server is not None
        self.server.serve(self.url, self.key_file)

    def copied(self) -> None:
        self.serve()  # this copy's vault, behind the module's server

    def close(self) -> None:
        if self.server is not None:
            self.server.release()

    def init(self) -> Result:
        result = ok(
            run("--db", self.url, "init", "--admin", ADMIN, "--passphrase-file", self.passfile(ADMIN, ADMIN_PASS))
        )
        ok(run("server", "keygen", str(self.key_file)))
        ok(run("--db", self.url, "--as", ADMIN, "--passphrase-file", self.passfiles[ADMIN], "server", "certify",
               str(self.key_file)))  # fmt: skip
        self.serve()
        self.trust(ADMIN)
        ok(run("--db", self.url, "server", "join", self.server_url, ADMIN, "--passphrase-file", self.passfiles[ADMIN],
               env=self.home(ADMIN)))  # fmt: skip
        ok(self.admin("unlock", "--passphrase-file", self.passfiles[ADMIN]))
        return result

    @property
    def server_url(self) -> str:
        assert self.server is not None
        return self.server.url

    def reach(self, name: str) -> tuple[str, ...]:
        self.trust(name)  # pinned again with the same identity: nothing changes
        return ()

    def trust(self, name: str) -> None:
        """``name`` pins the server on their machine (the fingerprints compared with the admin)."""
        assert self.server is not None
        ca_file = str(self.server.ca.ca_file)
        ok(self.as_engineer(name, "server", "trust", self.server.url, "--ca-file", ca_file, "--yes"))

    def open(self, name: str | None = ADMIN, clock: Callable[[], dt.datetime] | None = None) -> Vault:
        """The library on the server's database as ``name``, locked, with the host's key file (its layer,
        and an admin's work in format 3, as ``--server-key``)."""
        vault = super().open(name, clock)
        on_host(vault, read_server_keys(self.key_file))
        return vault

    def admin_home(self) -> Path:
        return Path(self.home(ADMIN)["CREDVAULT_HOME"])  # where they joined the server

    @property
    def target(self) -> str:
        return self.server_url  # the agent serves the pinned server

    def agent_socket(self, name: str = ADMIN) -> str:
        from vault.service import agentclient

        with pytest.MonkeyPatch.context() as patch:  # everyone's machine is their own home, the admin's too
            patch.setenv("CREDVAULT_HOME", self.home(name)["CREDVAULT_HOME"])
            return agentclient.socket_path(self.target, name)

    def admin_env(self) -> dict[str, str] | None:
        return self.home(ADMIN)

    def elsewhere(self) -> tuple[str, ...]:
        return ("--server", self.server_url + "/")  # the same server, spelled with a trailing slash


def served_snapshots(factory: pytest.TempPathFactory, server: CliServer) -> Snapshots:
    """``Snapshots`` of workspaces through ``server``: each copy's vault served in turn."""
    return Snapshots(factory, make=lambda url, tmp: ServedWorkspace(url, tmp, server=server))
