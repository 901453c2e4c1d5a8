"""The credvault agent's answers: one connection at a time on its Unix socket, each request a public call.

``Agent`` holds one engineer's unlocked ``Vault`` (or ``RemoteVault``) and answers the requests of
docs/format.md §12 (checkout, checkin, whoami, client and secret listings, secret show and add, audit
log, an admin's status, ping and stop, and ``call``: the table of ``agent_calls``) with the same
audited public call the command would have made;
a peer of another uid gets nothing, a malformed line ``InvalidInput``, and no request ends the agent
(only ``stop``, its expiry or a ``Locked`` session does). Through a team server every request but a
call that may run long is given ``SERVER_BUDGET`` in all (``RemoteVault.within``). The process around
it (the start order, the socket file's binding and replacement, ``credvault agent start``) is
``vault/service/agent.py``.

This module imports only the standard library and ``vault.errors`` at the top.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from vault import errors
from vault.service.agentclient import REPLY_TIMEOUT, UNKNOWN_REQUEST, _read_line

ACCEPT_POLL = 0.5  # how often the server looks at the clock while idle
REQUEST_TIMEOUT = 5.0  # a client has this long to send its request line (one connection at a time)
READS = ("whoami", "client-list", "secret-list", "secret-show", "audit-log", "status")
REQUEST_HINT = "see the agent's socket protocol in docs/format.md §12"
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
