"""The credvault agent: one engineer's unlocked session, held by a resident process.

A command-line checkout pays Python's start-up, SQLAlchemy's and cryptography's imports
and, without a keyring session, Argon2id: hundreds of milliseconds. Like ssh-agent,
``credvault agent start`` (``credvault unlock`` by default) unlocks once into a background
process that keeps the ``Vault`` open; a command then sends one request over a Unix socket
and the agent makes the same audited public ``Vault`` call the command would have made
(the audit event committed before the value leaves it): the everyday ones by an op each,
the rest by ``call`` (``agent_calls``). The requests are in docs/format.md §12.

* **Who may ask.** The socket lives in a directory only the user can enter (0700,
  owned by them, checked), the socket itself is 0600, and the agent refuses any peer
  whose uid (``SO_PEERCRED``) is not its own. Anyone who runs as that user can ask it
  for a checkout, exactly as they could read an unlocked keyring session.
* **How long.** Until the session expires (``--ttl``, at most 12 h), ``credvault agent
  stop`` or ``credvault lock``; the socket file is removed when it ends.
* **What crosses the socket.** One JSON line each way: the request (never a key or a
  passphrase; a new password for ``secret add``/``update``/``checkin`` from the CLI's stdin
  or generator), and the records as JSON, the revealed value, an invitation's code, or an
  error (class name, message, hint). No request returns a key or the session.
* **Bad requests.** A line that is not one JSON object of at most 64 KiB, or a member of
  the wrong type, is answered with ``InvalidInput``; no request ends the agent (only
  ``stop``, its expiry or a ``Locked`` session does).
* **What never happens.** The passphrase reaches the agent on its standard input, never
  in argv or the environment; the agent writes no key to disk and logs nothing.

This module imports only the standard library at the top, so the client side costs a
command nothing; the server imports ``Vault`` when it starts.

The requests and their answers (``Agent``, the serving loop, the socket file's identity) are
``vault/service/agent_answers.py``; this module is the process: its start order, the socket bound
and handed over between agents, and ``start`` (``python -m vault.service.agent`` in the background).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import selectors
import socket
import sys
from typing import Any

from vault import errors
from vault.service.agent_answers import SERVER_BUDGET, Agent, Listener, _failure, _identity, _remove_own
from vault.service.agentclient import (
    CONNECT_TIMEOUT,
    REPLY_TIMEOUT,
    AgentAbsent,
    _error_from,
    request,
    socket_path,
)

__all__ = ["SERVER_BUDGET", "Agent", "Listener", "bind", "run", "start"]

START_TIMEOUT = 120.0  # Argon2id and opening the database


def bind(path: str | os.PathLike[str], *, replace: bool = False) -> Listener:
    """A listening socket at ``path`` (0600), replacing a stale one nobody answers on, and
    with ``replace`` the agent that answers there (it is stopped only now, once this agent
    has unlocked: a wrong passphrase leaves the running session alone).

    The socket is bound under a temporary name in the same directory and renamed over
    ``path`` (atomic): at every moment ``path`` is either the old agent's socket or the
    new one's, and the old agent removes the file only if it is still its own. The old
    agent may be busy with a slow request (one connection at a time): its ``stop`` answer
    is awaited up to REPLY_TIMEOUT; if it does not come, the new socket replaces the path
    all the same (the old agent reads the queued stop later, or sees its file gone, and
    ends without touching the new one)."""
    temporary = os.path.join(os.path.dirname(os.fspath(path)), f".{os.getpid()}.{os.urandom(3).hex()}.new")
    listener = Listener(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(temporary)  # before the old agent removes its file: never the same inode
        listener.identity = _identity(temporary)
        listener.listen(16)
        if os.path.exists(path):
            _stop_or_refuse(path, replace)
        os.rename(temporary, path)
    except BaseException:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    finally:
        os.umask(old)
    return listener


def _stop_or_refuse(path: str | os.PathLike[str], replace: bool) -> None:
    """With ``replace`` stop the agent at ``path``, else refuse to start beside it; a stale
    file nobody answers on is left for the rename to replace."""
    try:
        request(path, {"op": "stop" if replace else "ping"}, timeout=REPLY_TIMEOUT if replace else CONNECT_TIMEOUT)
    except AgentAbsent:
        return
    except errors.StoreUnavailable:
        if not replace:
            raise
        return  # busy past REPLY_TIMEOUT: it reads the queued stop later, or sees its file replaced
    if not replace:
        raise errors.AlreadyExists("an agent is already running for this engineer and database")


def run(stdin: Any = None, stdout: Any = None) -> int:
    """The agent process: read its start order from stdin, unlock, say so, serve.

    The order is one JSON line: ``{"url", "engineer", "passphrase", "ttl_seconds"}`` and
    optionally ``"replace": true`` (stop the agent already serving there, once unlocked).
    The answer on stdout is one JSON line (``ok`` with the expiry, or an error), after
    which stdout is closed and the process serves until its session ends.
    """
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    try:
        order = json.loads(stdin.readline())
        url, engineer = str(order["url"]), str(order["engineer"])
        vault = _opened(url, engineer)
        from vault.service.config import OrgKeyMemory

        info = vault.engineers.unlock(
            engineer,
            str(order["passphrase"]),
            ttl=dt.timedelta(seconds=order["ttl_seconds"]),
            remember=False,
            org_memory=OrgKeyMemory(),
        )
        replace = order.get("replace") is True
        del order
        path = socket_path(url, engineer)
        listener = bind(path, replace=replace)
    except errors.VaultError as error:
        stdout.write(json.dumps(_failure(error)) + "\n")
        return 1
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        stdout.write(json.dumps(_failure(errors.InvalidInput("the agent's start order is malformed"))) + "\n")
        return 1
    try:
        ready = {
            "ok": True,
            "engineer": info.engineer,
            "role": info.role,
            "expires_at": info.expires_at.isoformat(),
            "pid": os.getpid(),
        }
        stdout.write(json.dumps(ready) + "\n")
        stdout.flush()
        stdout.close()
        import gc

        # What the start made (modules, the open Vault, its caches) lives as long as the agent:
        # kept out of the collector's full passes, which then look only at what requests make.
        gc.freeze()
        Agent(vault, info.expires_at, lambda: dt.datetime.now(dt.UTC)).serve(listener, path)
    finally:
        listener.close()
        _remove_own(path, listener.identity)  # at its expiry; after a stop it is gone or another's
        vault.close()
    return 0


def _opened(url: str, engineer: str) -> Any:
    """Through the team server pinned for ``url`` (``https://…``), else the database at ``url``."""
    if url.startswith(("https://", "http://")):
        from vault.service.remote import RemoteVault
        from vault.service.serverpins import ServerPins

        return RemoteVault(ServerPins.load().get(url), engineer=engineer)
    from vault import Vault

    return Vault.open(url, engineer=engineer)


def start(url: str, engineer: str, passphrase: str, ttl: dt.timedelta, *, replace: bool = False) -> dict[str, Any]:
    """Start an agent in the background; return its ``ok`` answer or raise its error. With ``replace``, the
    agent running for ``engineer`` on ``url`` is stopped by the new one once it has unlocked (not when the
    passphrase is wrong); else the new one refuses to start beside it (``AlreadyExists``)."""
    import subprocess

    order = json.dumps(
        {
            "url": url,
            "engineer": engineer,
            "passphrase": passphrase,
            "ttl_seconds": ttl.total_seconds(),
            "replace": replace,
        }
    )
    proc = subprocess.Popen(
        # -P: the working directory is not put on sys.path, so a `vault` folder where the user
        # runs `unlock` is never imported into the process that holds the keys
        [sys.executable, "-P", "-m", "vault.service.agent"],
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
        with selectors.DefaultSelector() as waiting:  # poll/epoll: select() fails on a descriptor past 1023
            waiting.register(proc.stdout, selectors.EVENT_READ)
            ready = waiting.select(START_TIMEOUT)
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
