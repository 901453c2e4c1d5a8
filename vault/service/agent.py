"""The credvault agent: one engineer's unlocked session, held by a resident process.

A command-line checkout pays Python's start-up, SQLAlchemy's and cryptography's
imports and, without a keyring session, Argon2id: hundreds of milliseconds. Like
ssh-agent and gpg-agent, ``credvault agent start`` unlocks once into a background
process that keeps the ``Vault`` open; a checkout then sends one request over a Unix
socket and the agent does the same audited ``Vault.checkout`` the command would have
done (the audit event is committed before the value leaves the agent).

* **Who may ask.** The socket lives in a directory only the user can enter (0700,
  owned by them, checked), the socket itself is 0600, and the agent refuses any peer
  whose uid (``SO_PEERCRED``) is not its own. Anyone who runs as that user can ask it
  for a checkout, exactly as they could read an unlocked keyring session.
* **How long.** Until the session expires (``--ttl``, at most 12 h), ``credvault agent
  stop`` or ``credvault lock``; the socket file is removed when it ends.
* **What crosses the socket.** One JSON line each way: the request (never a key or a
  passphrase), and the revealed value or an error (class name, message, hint).
* **What never happens.** The passphrase reaches the agent on its standard input, never
  in argv or the environment; the agent writes no key to disk and logs nothing.

This module imports only the standard library at the top, so the client side costs a
command nothing; the server imports ``Vault`` when it starts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import select
import socket
import stat
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vault import errors

MAX_LINE = 64 * 1024
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 30.0  # a checkout may wait on a busy database (BEGIN IMMEDIATE, 10 s)
ACCEPT_POLL = 0.5  # how often the server looks at the clock while idle
START_TIMEOUT = 120.0  # Argon2id and opening the database


# -- where the socket lives ----------------------------------------------------------------------


def runtime_dir() -> Path:
    """A private directory for sockets: 0700 and owned by us, or an error."""
    home = os.environ.get("CREDVAULT_HOME")
    if home:
        base = Path(home) / "run"
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "credvault"
    else:
        base = Path("/tmp") / f"credvault-{os.getuid()}"  # noqa: S108 - checked to be ours and private below
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = base.lstat()
    except OSError:
        raise errors.ConfigurationError(f"cannot create the agent directory {base}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise errors.ConfigurationError(
            f"the agent directory {base} is not a private directory of this user",
            hint=f"remove it, or make it yours with mode 0700 (chmod 700 {base})",
        )
    return base


def socket_path(url: str, engineer: str) -> Path:
    """The socket of the agent for ``engineer`` on the database ``url``."""
    digest = hashlib.sha256(f"{url}\0{engineer}".encode()).hexdigest()[:16]
    path = runtime_dir() / f"agent-{digest}.sock"
    if len(os.fsencode(path)) > 100:  # sun_path is 104–108 bytes
        raise errors.ConfigurationError(
            "the agent's socket path is too long", hint="set CREDVAULT_HOME or XDG_RUNTIME_DIR to a shorter path"
        )
    return path


# -- the client ------------------------------------------------------------------------------------


class AgentAbsent(Exception):
    """No agent answers on that socket (none started, or it has ended)."""


def request(path: Path, message: dict[str, Any], *, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """Send one request; return the agent's answer, or raise the ``VaultError`` it reported.

    ``AgentAbsent`` when nobody listens, so that the caller can do the work itself.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(os.fspath(path))
        except OSError:  # no file, nobody listening, not ours to open: no agent of ours
            raise AgentAbsent() from None
        sock.settimeout(timeout)
        try:
            sock.sendall(json.dumps(message).encode("utf-8") + b"\n")
            answer = _read_line(sock)
        except OSError:
            raise errors.StoreUnavailable(
                "the credvault agent did not answer", hint="run `credvault agent stop`, then start it again"
            ) from None
    finally:
        sock.close()
    if answer is None:  # it did not take the request (it is stopping, or we are not its user)
        raise AgentAbsent()
    if answer.get("ok") is True:
        return answer
    raise _error_from(answer)


def _error_from(answer: dict[str, Any]) -> errors.VaultError:
    kind = getattr(errors, str(answer.get("error")), None)
    if not (isinstance(kind, type) and issubclass(kind, errors.VaultError)):
        kind = errors.VaultError
    hint = answer.get("hint")
    return kind(str(answer.get("message") or "the agent refused the request"), hint=hint or None)


def _read_line(sock: socket.socket) -> dict[str, Any] | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_LINE:
            raise ValueError("line too long")
    if not data.strip():
        return None
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


# -- the server ------------------------------------------------------------------------------------


def peer_uid(conn: socket.socket) -> int | None:
    """The uid of the process at the other end (Linux ``SO_PEERCRED``), else None."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


class Agent:
    """Answers requests for one unlocked ``Vault`` until its session ends."""

    def __init__(self, vault: Any, expires_at: dt.datetime, clock: Callable[[], dt.datetime]) -> None:
        self.vault, self.expires_at, self.clock = vault, expires_at, clock
        self.running = True

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "ping":
            return {
                "ok": True,
                "engineer": self.vault.engineer_name,
                "expires_at": self.expires_at.isoformat(),
                "pid": os.getpid(),
            }
        if op == "stop":
            self.running = False
            return {"ok": True}
        if op == "checkout":
            return self._checkout(message)
        return _failure(errors.InvalidInput(f"unknown agent request {str(op)[:40]!r}"))

    def _checkout(self, message: dict[str, Any]) -> dict[str, Any]:
        from vault.service.validation import duration

        hold_for = message.get("hold_for")  # as the user typed it, e.g. "2h"
        version = message.get("version")
        revealed = self.vault.checkout(
            _text(message, "ref"),
            reason=message.get("reason") if isinstance(message.get("reason"), str) else None,
            field=_text(message, "field"),
            version=version if isinstance(version, int) else None,
            hold=message.get("hold", True) is not False,
            hold_for=duration(hold_for) if isinstance(hold_for, str) else None,
        )
        return {
            "ok": True,
            "ref": revealed.ref,
            "field": revealed.field,
            "version": revealed.version,
            "value": revealed.value,
            "expires_at": revealed.expires_at.isoformat() if revealed.expires_at else None,
            "must_change": revealed.must_change,
        }

    def answer(self, message: dict[str, Any]) -> dict[str, Any]:
        """``handle`` with every failure turned into an error answer (never a traceback)."""
        try:
            return self.handle(message)
        except errors.VaultError as error:
            if isinstance(error, errors.Locked):
                self.running = False  # expired, or the engineer's keys changed: nothing more to serve
            return _failure(error)
        except Exception as error:  # a bug must not take the agent's keys into a traceback
            return {
                "ok": False,
                "error": "VaultError",
                "message": f"internal error in the agent ({type(error).__name__})",
            }

    def serve(self, listener: socket.socket, path: Path | None = None) -> None:
        """Answer one connection at a time until the session ends or a stop request;
        ``path`` (the socket file) is removed as soon as the agent decides to stop."""
        listener.settimeout(ACCEPT_POLL)
        while self.running and self.clock() < self.expires_at:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(REPLY_TIMEOUT)
                if peer_uid(conn) not in (None, os.getuid()):
                    continue  # another user's process: say nothing
                try:
                    message = _read_line(conn)
                except (OSError, ValueError):
                    continue
                if message is None:
                    continue
                reply = json.dumps(self.answer(message)).encode("utf-8") + b"\n"
                if not self.running:  # stop before saying so: no later request may be left unheard
                    listener.close()
                    if path is not None:
                        path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # the client went away; the checkout stays on record
                    conn.sendall(reply)


def _text(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise errors.InvalidInput(f"the agent request has no {key}")
    return value


def _failure(error: errors.VaultError) -> dict[str, Any]:
    return {"ok": False, "error": type(error).__name__, "message": str(error), "hint": error.hint}


def bind(path: Path) -> socket.socket:
    """A listening socket at ``path`` (0600), replacing a stale one nobody answers on."""
    if path.exists():
        try:
            request(path, {"op": "ping"}, timeout=CONNECT_TIMEOUT)
        except AgentAbsent:
            path.unlink(missing_ok=True)
        else:
            raise errors.AlreadyExists("an agent is already running for this engineer and database")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(os.fspath(path))
    finally:
        os.umask(old)
    listener.listen(16)
    return listener


def run(stdin: Any = None, stdout: Any = None) -> int:
    """The agent process: read its start order from stdin, unlock, say so, serve.

    The order is one JSON line: ``{"url", "engineer", "passphrase", "ttl_seconds"}``.
    The answer on stdout is one JSON line (``ok`` with the expiry, or an error), after
    which stdout is closed and the process serves until its session ends.
    """
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    try:
        order = json.loads(stdin.readline())
        from vault import Vault

        url, engineer = str(order["url"]), str(order["engineer"])
        vault = Vault.open(url, engineer=engineer)
        info = vault.unlock(
            engineer, str(order["passphrase"]), ttl=dt.timedelta(seconds=order["ttl_seconds"]), remember=False
        )
        del order
        path = socket_path(url, engineer)
        listener = bind(path)
    except errors.VaultError as error:
        stdout.write(json.dumps(_failure(error)) + "\n")
        return 1
    except (ValueError, KeyError, TypeError):
        stdout.write(json.dumps(_failure(errors.InvalidInput("the agent's start order is malformed"))) + "\n")
        return 1
    try:
        stdout.write(json.dumps({"ok": True, "expires_at": info.expires_at.isoformat(), "pid": os.getpid()}) + "\n")
        stdout.flush()
        stdout.close()
        Agent(vault, info.expires_at, lambda: dt.datetime.now(dt.UTC)).serve(listener, path)
    finally:
        listener.close()
        path.unlink(missing_ok=True)
        vault.close()
    return 0


def start(url: str, engineer: str, passphrase: str, ttl: dt.timedelta) -> dict[str, Any]:
    """Start an agent in the background; return its ``ok`` answer or raise its error."""
    import subprocess

    order = json.dumps({"url": url, "engineer": engineer, "passphrase": passphrase, "ttl_seconds": ttl.total_seconds()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "vault.service.agent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not killed with the terminal's process group
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    line = ""
    try:
        proc.stdin.write(order + "\n")
        proc.stdin.close()
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        if ready:
            line = proc.stdout.readline()
        else:
            proc.kill()
    finally:
        proc.stdout.close()
    try:
        answer = json.loads(line) if line else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        try:
            status = f"it exited with status {proc.wait(timeout=5)}"
        except subprocess.TimeoutExpired:
            proc.kill()
            status = "it did not answer in time"
        raise errors.StoreUnavailable(
            f"the credvault agent did not start ({status})",
            hint="run `python -m vault.service.agent` to see why, or use --passphrase-file",
        )
    if answer.get("ok") is not True:
        raise _error_from(answer)
    return answer


if __name__ == "__main__":
    sys.exit(run())
