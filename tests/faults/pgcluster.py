"""A throwaway PostgreSQL cluster that a test owns: it may stop, crash and restart it.

The shared server on 127.0.0.1:5432 serves other tests in parallel, so fault tests never
touch it: ``PgCluster`` runs ``initdb`` in a fresh directory under /tmp, starts its own
``postgres`` on a free port (TCP on 127.0.0.1 only, its unix socket in that directory,
trust authentication, ``fsync=on``), and can ``stop("immediate")`` it (a crash: no
shutdown checkpoint, recovery replays the WAL at the next start). As root (CI), every
server binary runs as the ``postgres`` OS user through ``runuser``, since ``initdb`` and
``postgres`` refuse to run as root; the directory is then owned by that user.

``find_bindir()`` returns None when no PostgreSQL server binaries are installed; callers
skip then. ``PgClusterError`` is raised when they exist but the cluster cannot be made
or started; callers skip on it, or fail when CREDVAULT_REQUIRE_PG=1.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
OS_USER = "postgres"


class PgClusterError(RuntimeError):
    """The private cluster could not be created, started or stopped."""


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb, pg_ctl and postgres (or PG_BINDIR)."""
    candidates = [Path(os.environ["PG_BINDIR"])] if os.environ.get("PG_BINDIR") else []

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for path in candidates:
        if all(os.access(path / name, os.X_OK) for name in SERVER_BINARIES):
            return path
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One private cluster: ``create()``, ``start()``, ``stop(mode)``, ``destroy()``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root: Path | None = None
        self.port = 0
        self.as_user: list[str] = []
        self.running = False

    # -- paths and commands ----------------------------------------------------------------

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def url(self, database: str = "postgres", **options: str) -> str:
        """A credvault URL for ``database``; ``options`` become server settings (``-c k=v``)."""
        url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"
        if options:
            settings = "%20".join(f"-c%20{key}%3D{value}" for key, value in options.items())
            url += f"?options={settings}"
        return url

    def admin_engine(self, database: str = "postgres", *, autocommit: bool = True) -> Engine:
        """An engine on ``database`` (AUTOCOMMIT unless asked otherwise), without a pool."""
        return create_engine(
            self.url(database),
            isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
            poolclass=NullPool,
            connect_args={"connect_timeout": 5},
        )

    def _run(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [*self.as_user, str(self.bindir / name), *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd="/")
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PgClusterError(f"{name} could not run: {error}") from None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # -- life cycle ------------------------------------------------------------------------

    def create(self, parent: Path | None = None) -> None:
        """initdb into a new directory under ``parent`` (default /tmp; keep it short, the
        socket lives there), owned by the postgres user when we are root."""
        self.root = Path(tempfile.mkdtemp(prefix="credvault-pg-", dir=str(parent or "/tmp")))
        if os.getuid() == 0:
            try:
                user = pwd.getpwnam(OS_USER)
            except KeyError:
                raise PgClusterError(f"running as root and there is no {OS_USER!r} user to run initdb as") from None
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            if not os.access(runuser, os.X_OK):
                raise PgClusterError("running as root and runuser is missing")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = [runuser, "-u", OS_USER, "--"]
        self.root.chmod(0o700)
        # --no-sync only skips flushing initdb's own files: nothing here crashes the kernel,
        # and the server itself runs with fsync=on.
        done = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"
        )
        if done.returncode != 0:
            raise PgClusterError(f"initdb failed ({done.returncode}): {(done.stderr or done.stdout)[-800:]}")

    def start(self, attempts: int = 3) -> None:
        """Start the server (after a crash this is crash recovery) and wait until it accepts connections."""
        assert self.root is not None
        for attempt in range(attempts):
            if not self.port or attempt:
                self.port = free_port()
            options = " ".join(
                [
                    f"-p {self.port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories={self.root}",
                    "-c fsync=on",
                    "-c synchronous_commit=on",
                    "-c full_page_writes=on",
                    "-c max_connections=50",
                    "-c shared_buffers=32MB",
                    "-c log_min_messages=warning",
                    "-c log_connections=off",
                ]
            )
            done = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "-o", options, "start"
            )
            if done.returncode == 0:
                self.running = True
                return
            if "could not bind" not in self.log_tail(40) and "already in use" not in self.log_tail(40):
                break  # not a port race: another port will not help
        raise PgClusterError(
            f"pg_ctl start failed ({done.returncode}): {(done.stderr or done.stdout)[-400:]}\n{self.log_tail()}"
        )

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _is_our_postmaster(self, pid: int) -> bool:
        """Whether ``pid`` is still this cluster's postmaster (its command line names our data dir)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(argv) and argv[0].endswith(b"postgres") and str(self.data).encode() in argv

    def stop(self, mode: str = "immediate") -> None:
        """``pg_ctl stop -m MODE``; ``immediate`` is a crash (no shutdown checkpoint)."""
        done = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        if done.returncode != 0:
            raise PgClusterError(f"pg_ctl stop -m {mode} failed: {(done.stderr or done.stdout)[-400:]}")
        self.running = False

    def destroy(self) -> None:
        """Stop the server however it can be stopped and remove its directory (never raises)."""
        if self.root is None:
            return
        if self.data.exists():
            pid = self.postmaster_pid()
            with contextlib.suppress(PgClusterError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop", timeout=40)
            if pid is not None and self._is_our_postmaster(pid):  # pg_ctl could not stop it
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    time.sleep(0.2)
        self.running = False
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
