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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import selectors
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from vault import errors
from vault.service.agentclient import (
    CONNECT_TIMEOUT,
    REPLY_TIMEOUT,
    UNKNOWN_REQUEST,
    AgentAbsent,
    _error_from,
    _read_line,
    request,
    socket_path,
)

ACCEPT_POLL = 0.5  # how often the server looks at the clock while idle
REQUEST_TIMEOUT = 5.0  # a client has this long to send its request line (one connection at a time)
READS = ("whoami", "client-list", "secret-list", "secret-show", "audit-log", "status")
REQUEST_HINT = "see the agent's socket protocol in docs/format.md §12"
START_TIMEOUT = 120.0  # Argon2id and opening the database
SERVER_BUDGET = REPLY_TIMEOUT - 5.0  # a request's time at a team server, its retries included


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
        if not isinstance(op, str):
            raise errors.InvalidInput("the agent request has no op", hint=REQUEST_HINT)
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
        if op in READS:
            return {"ok": True, "result": self._read(op, message)}
        if op == "checkin":
            return self._checkin(message)
        if op == "secret-add":
            return self._add_secret(message)
        if op == "call":  # any other call the agent makes (vault/service/agent_calls.py)
            from vault.service import agent_calls

            return {"ok": True, "result": agent_calls.serve(self.vault, message)}
        from vault.service.validation import shown

        raise errors.InvalidInput(f"{UNKNOWN_REQUEST} {shown(op)}", hint=REQUEST_HINT)

    def _checkout(self, message: dict[str, Any]) -> dict[str, Any]:
        """A checkout request, each member of the type docs/format.md §12 gives it (a wrong
        type is refused, never read as "absent"), the values checked by the library."""
        from vault.service.validation import duration

        hold_for = _optional(message, "hold_for", str)  # as the user typed it, e.g. "2h"
        version = _optional(message, "version", int)
        hold = _optional(message, "hold", bool)
        revealed = self.vault.checkouts.checkout(
            _text(message, "ref"),
            reason=_optional(message, "reason", str),
            field=_text(message, "field"),
            version=version,
            hold=hold is not False,
            hold_for=duration(hold_for) if hold_for is not None else None,
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

    def _read(self, op: str, message: dict[str, Any]) -> Any:
        """A read op's records as JSON (``to_json`` of each): the CLI prints them as the
        click command would print the records themselves."""
        vault = self.vault
        if op == "whoami":
            return vault.engineers.whoami().to_json()
        if op == "client-list":
            return [c.to_json() for c in vault.clients.list()]
        if op == "secret-list":
            return [s.to_json() for s in vault.secrets.list(_optional(message, "client", str))]
        if op == "secret-show":
            return vault.secrets.show(_text(message, "ref")).to_json()
        if op == "status":
            return vault.reports.status().to_json()
        limit = _optional(message, "limit", int)
        if limit is not None and limit < 1:
            raise errors.InvalidInput("the agent request's limit is below 1", hint=REQUEST_HINT)
        since = _optional(message, "since", str)
        entries = vault.audit.log(
            client=_optional(message, "client", str),
            engineer=_optional(message, "engineer", str),
            since=_point(since) if since is not None else None,
            limit=limit,
        )
        return [e.to_json() for e in entries]

    def _checkin(self, message: dict[str, Any]) -> dict[str, Any]:
        result = self.vault.checkouts.checkin(
            _text(message, "ref"),
            new_password=_optional(message, "new_password", str),
            generate=_optional(message, "generate", bool) is True,
            length=_optional(message, "length", int),
        )
        if result is None:
            return {"ok": True, "result": None}
        expires = result.expires_at.isoformat() if result.expires_at else None
        fields = {"ref": result.ref, "field": result.field, "version": result.version, "expires_at": expires}
        return {"ok": True, "result": {**fields, "must_change": result.must_change}}  # never the value

    def _add_secret(self, message: dict[str, Any]) -> dict[str, Any]:
        """``secret add``: the password comes in the request (from the CLI's stdin or its
        generator), never from the CLI's argv."""
        info = self.vault.secrets.add(
            _text(message, "ref"),
            password=_text(message, "password"),
            kind=_text(message, "kind"),
            username=_optional(message, "username", str),
            url=_optional(message, "url", str),
            host=_optional(message, "host", str),
            note=_optional(message, "note", str),
            fields=_texts(message, "fields") or {},
            sensitive_fields=_texts(message, "sensitive_fields") or None,
            public_fields=_texts(message, "public_fields") or None,
        )
        return {"ok": True, "result": info.to_json()}

    def answer(self, message: dict[str, Any]) -> dict[str, Any]:
        """``handle``, every failure an error answer (no traceback); a server's time within
        SERVER_BUDGET, except for a call that may run long (``agent_calls.Call.long``)."""
        from vault.service.agent_calls import runs_long

        within = None if runs_long(message) else getattr(self.vault, "within", None)  # RemoteVault's
        try:
            with within(SERVER_BUDGET) if within is not None else contextlib.nullcontext():
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

    def serve(self, listener: socket.socket, path: str | os.PathLike[str] | None = None) -> None:
        """Answer one connection at a time until the session ends, a stop request, or (with
        ``path``, the socket file) the file at ``path`` is no longer this agent's socket (a
        newer agent renamed its own over it: nobody can reach this one any more)."""
        listener.settimeout(ACCEPT_POLL)
        own = getattr(listener, "identity", None) or (_identity(path) if path is not None else None)
        while self.running and self.clock() < self.expires_at:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if path is not None and _identity(path) != own:
                    self.running = False
                continue
            with conn, contextlib.suppress(Exception):  # no request, however malformed, ends the agent
                self._converse(conn, listener, path, own)

    def _converse(
        self,
        conn: socket.socket,
        listener: socket.socket,
        path: str | os.PathLike[str] | None,
        own: tuple[int, int] | None = None,
    ) -> None:
        """One connection: read the request line, answer it (a malformed one with InvalidInput)."""
        conn.settimeout(REQUEST_TIMEOUT)
        if peer_uid(conn) not in (None, os.getuid()):
            return  # another user's process: say nothing
        try:
            message = _read_line(conn)
        except OSError:
            return  # the client went away (or sent nothing in time)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, too deep, too long, not an object
            answer = _failure(
                errors.InvalidInput(
                    "the agent request is not one JSON object on one line of at most 64 KiB", hint=REQUEST_HINT
                )
            )
        else:
            if message is None:
                return
            answer = self.answer(message)
        reply = json.dumps(answer).encode("utf-8") + b"\n"
        if not self.running:  # stop before saying so: no later request may be left unheard
            listener.close()
            if path is not None:
                _remove_own(path, own)
            if isinstance(listener, Listener):
                listener.identity = None  # removed (or another's): never looked at again
        conn.settimeout(REPLY_TIMEOUT)
        with contextlib.suppress(OSError):  # the client went away; the checkout stays on record
            conn.sendall(reply)


class Listener(socket.socket):
    """The agent's listening socket and ``identity``: (st_dev, st_ino) of the socket file
    it was bound to, so that the agent removes that file only while it is still its own."""

    identity: tuple[int, int] | None = None


def _text(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise errors.InvalidInput(f"the agent request has no {key}", hint=REQUEST_HINT)
    return value


def _point(text: str) -> dt.datetime:
    """An aware ISO-8601 time (audit-log's ``since``), else InvalidInput."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise errors.InvalidInput("the agent request's since is not an ISO-8601 time with a zone", hint=REQUEST_HINT)
    return value


def _texts(message: dict[str, Any], key: str) -> dict[str, str] | None:
    """``message[key]``: absent, null, or an object of strings; else InvalidInput."""
    value = _optional(message, key, dict)
    if value is not None and not all(isinstance(v, str) for v in value.values()):
        raise errors.InvalidInput(f"the agent request's {key} holds a value that is not a str", hint=REQUEST_HINT)
    return None if value is None else {str(k): str(v) for k, v in value.items()}


def _optional(message: dict[str, Any], key: str, kind: type) -> Any:
    """``message[key]`` if it is absent or null (None) or of type ``kind``, else InvalidInput
    (a bool is not taken for an int)."""
    value = message.get(key)
    if value is None or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
        return value
    raise errors.InvalidInput(f"the agent request's {key} is not a {kind.__name__}", hint=REQUEST_HINT)


def _failure(error: errors.VaultError) -> dict[str, Any]:
    return {"ok": False, "error": type(error).__name__, "message": str(error), "hint": error.hint}


def _identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at ``path``, or None when there is none."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _remove_own(path: str | os.PathLike[str], own: tuple[int, int] | None) -> None:
    """Remove ``path`` only if it is still the socket this agent bound (``own``): a newer
    agent that renamed its socket over it keeps its own."""
    if own is not None and _identity(path) == own:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


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
