"""Where a vault is reached, and who else can reach it (issue 12, items 14 and 15).

A PostgreSQL server that is not on this machine (not a Unix socket, not loopback) must be
reached over TLS with its certificate and host name verified (``sslmode=verify-full``),
judged as libpq would (``PGHOST``, ``PGSSLMODE``), unless the user opts out explicitly
(``CREDVAULT_INSECURE_DB=1``, the CLI's ``--insecure-db``). A new SQLite vault file is
created 0600 in folders created 0700 (SQLite gives its -wal and -shm files the file's
mode); an existing one, or its -wal or -shm file, that other users may read or write is
refused unless the user opts out (``CREDVAULT_ALLOW_READABLE=1``, ``--allow-readable``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vault.errors import ConfigurationError, StoreUnavailable

INSECURE_DB_ENV = "CREDVAULT_INSECURE_DB"  # "1": allow a remote PostgreSQL URL without verify-full
ALLOW_READABLE_ENV = "CREDVAULT_ALLOW_READABLE"  # "1": open a SQLite vault file others may read


def _is_local_host(host: str | None) -> bool:
    """A Unix socket (no host, or a directory) or a loopback address."""
    import ipaddress

    if not host or host.startswith("/"):
        return True
    host = _without_port(host)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _without_port(host: str) -> str:
    """``host`` without the ``:PORT`` a multi-host URL may give it (``host=127.0.0.1:5439``,
    ``[::1]:5439``); a bare IPv6 address (several colons, no brackets) is left as it is."""
    if host.startswith("[") and "]" in host:
        return host[1 : host.index("]")]
    name, colon, port = host.rpartition(":")
    if colon and name and ":" not in name and port.isdigit():
        return name
    return host


def _addresses(parsed: Any, name: str, variable: str | None) -> list[str | None]:
    """Every value of the URL's ``name`` parameter (repeated or comma-separated), else of the
    libpq environment ``variable``: where libpq would connect."""
    value = parsed.query.get(name)
    values = [value] if isinstance(value, str) else list(value or ())
    if not values and variable and os.environ.get(variable):
        values = [os.environ[variable]]
    return [part.strip() or None for text in values for part in text.split(",")]


def require_verified_tls(parsed: Any, insecure: bool | None) -> None:
    """A remote PostgreSQL server must be reached over TLS with its certificate and host
    name checked (``sslmode=verify-full``), unless the user opts out explicitly."""
    hosts: list[str | None] = (
        [parsed.host, *_addresses(parsed, "host", None)] if parsed.host else _addresses(parsed, "host", "PGHOST")
    )
    # (no host at all: libpq's default, the local Unix socket)
    # libpq connects to ``hostaddr`` instead of resolving ``host``, and tries every host of a list
    addresses = hosts + _addresses(parsed, "hostaddr", "PGHOSTADDR")
    remote = [a for a in addresses if not _is_local_host(a)]
    if not remote:
        return
    host = remote[0]
    if insecure is None:
        insecure = os.environ.get(INSECURE_DB_ENV) == "1"
    sslmode = parsed.query.get("sslmode") or os.environ.get("PGSSLMODE")
    if sslmode == "verify-full" or insecure:
        return
    found = f"sslmode={sslmode}" if isinstance(sslmode, str) else "no sslmode"
    raise ConfigurationError(
        f"the PostgreSQL server {host!r} is remote and the URL has {found}: "
        "passwords and keys would cross the network without a verified server",
        hint="add ?sslmode=verify-full (and sslrootcert=PATH for a private CA) to the URL; "
        f"to accept the risk, pass --insecure-db (or set {INSECURE_DB_ENV}=1)",
    )


def private_sqlite_file(path: Path, allow_readable: bool | None) -> None:
    """Create a new vault file 0600 in folders created 0700 (SQLite gives its -wal and -shm
    files the database file's mode); refuse an existing one, or its -wal or -shm file,
    that others may read."""
    old = os.umask(0o077)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)  # an empty file is an empty SQLite database
        return
    except FileExistsError:
        pass
    except OSError:
        raise StoreUnavailable("the folder for the SQLite database cannot be created") from None
    finally:
        os.umask(old)
    if allow_readable is None:
        allow_readable = os.environ.get(ALLOW_READABLE_ENV) == "1"
    if allow_readable:
        return
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = file.stat().st_mode
        except OSError:
            continue  # absent (no WAL yet), or SQLite reports what is wrong with it
        if mode & 0o077:
            raise ConfigurationError(
                f"the vault file {file} can be read or written by other users (mode {mode & 0o777:o})",
                hint=f"run `chmod 600 {path}*` (the file and its -wal and -shm files); to open it anyway, "
                f"pass --allow-readable (or set {ALLOW_READABLE_ENV}=1)",
            )
