"""``credvault serve``: the app under uvicorn, with the checks its options need (docs/server.md §6).

TLS is required unless the bind host is loopback (``127.0.0.0/8``, ``::1``, ``localhost``):
a server reachable from the network never answers in clear text. ``--public-url`` defaults
to the bind address (``https://`` with TLS, else ``http://``); it is what engineers sign
requests for. Uvicorn's own access log is off (it would print paths and client addresses):
``AccessLog`` writes the one line per request, to ``--access-log`` (a file, or ``-`` for
standard error).

Request nonces are kept in the database (``request_nonces``), shared by every server process
on it, and failed authentications are limited per engineer (``auth_failures``, shared) and
per client address (this process; ``--trusted-proxy`` names the proxies whose
X-Forwarded-For is believed); a minute timer on each process prunes both.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio.to_thread
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from vault.errors import ConfigurationError
from vault.server import faults
from vault.server.accesslog import LOGGER as ACCESS_LOGGER
from vault.server.app import build_app
from vault.server.keyfile import read_server_keys
from vault.server.layer import ServerLayer
from vault.server.limits import DEFAULT_LIMIT
from vault.storage.engine import Store
from vault.wire.authlimits import AddressLimit, AuthenticationLimits, ClientAddresses, EngineerLimit
from vault.wire.nonces import DbNonceStore, Pruner

DEFAULT_BIND = "127.0.0.1:8443"


@dataclass(frozen=True)
class ServeOptions:
    """What ``credvault serve`` was asked for."""

    db_url: str
    bind: str = DEFAULT_BIND
    tls_cert: str | None = None
    tls_key: str | None = None
    public_url: str | None = None
    max_body: int = DEFAULT_LIMIT
    access_log: str | None = None  # a file, "-" for standard error, None for none
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For names the client
    org_key: str | None = None  # the organisation signing key (64 hex digits) the server trusts
    server_key: str | None = None  # the server key file (keyfile.py); None: the checkout routes answer 503
    db_pool: int | None = None  # at most this many database connections and request threads (None: defaults)


def default_pool(cores: int | None = None) -> int:
    """Connections a server process keeps without --db-pool, all kept (an on-demand connection was
    closed when it came back to a full pool, so a busy server opened a PostgreSQL backend for every
    busy moment): twice the cores this process may run on, at least 4 and at most 15.

    Every writer queues on the audit head's lock, and a process runs one thread of Python at a
    time: more transactions in flight than that only add waiting (PostgreSQL's lock queue, the
    interpreter's lock). W16 on 2 cores (docs/performance-server.md, session 16): 254 checkouts/s
    with 4, 227 with 6, 220 with 8, 212–221 with 15, each server and PostgreSQL using less CPU per
    checkout the fewer there were. A larger machine, or long requests (a backup), may want more:
    ``--db-pool``."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(4, min(15, 2 * cores))


def split_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8443`` for IPv6) → host, port; else ConfigurationError."""
    host, sep, port = bind.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"--bind {bind!r} is not HOST:PORT", hint="for example --bind 127.0.0.1:8443")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked(options: ServeOptions) -> tuple[str, int, str]:
    """The host, port and public URL, after refusing what would serve insecurely."""
    host, port = split_bind(options.bind)
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ConfigurationError("--tls-cert and --tls-key go together", hint="pass both, or neither on loopback")
    tls = options.tls_cert is not None
    if not tls and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve on {host} without TLS",
            hint="pass --tls-cert FILE --tls-key FILE, or bind to 127.0.0.1 behind a TLS proxy",
        )
    if options.max_body <= 0:
        raise ConfigurationError("--max-body is a positive number of bytes")
    shown = f"[{host}]" if ":" in host else host
    public_url = options.public_url or f"{'https' if tls else 'http'}://{shown}:{port}"
    parts = urlsplit(public_url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigurationError(
            f"--public-url {public_url!r} is not https://HOST[:PORT]",
            hint="engineers sign their requests for its host; serve credvault at the root of that name",
        )
    return host, port, public_url


def org_pin(options: ServeOptions) -> bytes | None:
    """The organisation key ``--org-key`` pins (None: trusted on first read, with a warning)."""
    if options.org_key is None:
        return None
    text = options.org_key.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigurationError(
            "--org-key is the organisation signing key as 64 hex digits",
            hint='an admin reads it from orgkey-<VAULT_ID>.json in their config directory ("head": [version, hex])',
        )
    return bytes.fromhex(text)


GRACEFUL_SHUTDOWN = 10  # seconds


def settle_heap() -> None:
    """What the server holds for its life (modules, the app, compiled statements and schemas) is
    moved out of the garbage collector's generations (``gc.freeze``): a full collection, which
    runs every few dozen requests, then walks only what requests allocated, not the few hundred
    thousand objects of the loaded program (W16: the collector was a few per cent of the server's
    CPU, docs/performance-server.md). Nothing is kept that would not have been."""
    gc.collect()
    gc.freeze()


def uvicorn_config(app: ASGIApp, options: ServeOptions) -> uvicorn.Config:
    host, port, _ = checked(options)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=options.tls_cert,
        ssl_keyfile=options.tls_key,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        log_config=None,
        lifespan="off",
        loop="auto",  # uvloop when installed (a dependency): its TLS and loop are C
        http=_http_protocol(),
        # On SIGTERM a request in flight has this long to finish; an idle kept-alive TLS connection is
        # not waited for (uvicorn's default waits for every connection, and an idle client never
        # answers the TLS close: a stop or a rolling restart hung on it).
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )


def _http_protocol() -> type[asyncio.Protocol] | str:
    """httptools under h11's bound on a request's head (``http_protocol.py``), else h11."""
    try:
        from vault.server.http_protocol import BoundedHttpTools
    except ImportError:  # httptools is not installed
        return "h11"
    return BoundedHttpTools


def access_log_to(target: str | None) -> logging.Handler | None:
    """Send the access log to ``target`` (a path or ``-``); the handler, to remove later."""
    if target is None:
        return None
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if target == "-" else logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ACCESS_LOGGER.addHandler(handler)
    ACCESS_LOGGER.setLevel(logging.INFO)
    return handler


def run(options: ServeOptions) -> None:
    """Serve until interrupted."""
    _, _, public_url = checked(options)
    ACCESS_LOGGER.propagate = False  # the access log goes only where --access-log says
    if not logging.getLogger().handlers:  # what the server says (the layer at start, warnings) goes somewhere
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = access_log_to(options.access_log)
    addresses = ClientAddresses(options.trusted_proxies)  # a bad CIDR: ConfigurationError before anything opens
    pin = org_pin(options)
    if pin is None:
        logging.getLogger("credvault.server").warning(
            "no --org-key: the organisation key read first is trusted (a database writer could have set it)"
        )
    keys = read_server_keys(options.server_key) if options.server_key is not None else None
    server_key = keys.signing_keys if keys is not None else None  # during a rotation: the certified version signs
    store = Store(options.db_url, pool_size=options.db_pool or default_pool())
    layer = ServerLayer(keys.master, keys.previous) if keys is not None and keys.master is not None else None
    nonces = DbNonceStore(store)
    limits = AuthenticationLimits(AddressLimit(), EngineerLimit(store))
    pruner = Pruner([nonces.prune, limits.prune])
    try:
        if layer is not None:  # no data key left that a database copy opens, before the first answer
            layered, moved = layer.layer_on(store), layer.rewrap(store)  # then a master-key rotation finished
            logging.getLogger("credvault.server").info(
                "server layer: %d data keys layered, %d client keys moved to the current master key",
                layered.rows,
                moved.rows,
            )
        app = build_app(
            store,
            public_url=public_url,
            nonce_store=nonces,
            org_pin=pin,
            max_body=options.max_body,
            limits=limits,
            addresses=addresses,
            server_key=server_key,
            layer=layer,
        )
        pruner.start()
        served = faults.armed(app, store)  # armed: tests only (faults.py)
        if options.db_pool is not None:
            served = ThreadLimit(served, options.db_pool)
        settle_heap()
        uvicorn.Server(uvicorn_config(served, options)).run()
    finally:
        pruner.stop()
        store.close()
        if handler is not None:
            ACCESS_LOGGER.removeHandler(handler)
            handler.close()


class ThreadLimit:
    """``app`` with at most ``threads`` requests in the thread pool at once (``--db-pool``): the
    endpoints are synchronous and run in anyio's default thread limiter (40 by default), each
    holding a database connection, so that the pool and the threads agree. Set on the server's
    event loop at its first request."""

    def __init__(self, app: ASGIApp, threads: int) -> None:
        if threads < 1:
            raise ConfigurationError("--db-pool is at least 1")
        self.app, self.threads, self._set = app, threads, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._set:
            anyio.to_thread.current_default_thread_limiter().total_tokens = self.threads
            self._set = True
        await self.app(scope, receive, send)
