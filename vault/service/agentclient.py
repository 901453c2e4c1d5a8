"""The client side of the credvault agent: where its socket is, and one request.

Imported by the command-line fast path (``cli/fast.py``) for every checkout, so it
imports only what a request needs (no typing, dataclasses, datetime or threads): each
millisecond of import is paid by every command. The server is ``vault.service.agent``;
the protocol is in docs/format.md §12.
"""

from __future__ import annotations

import json
import os
import stat

from vault import errors

# The socket and SHA-256 without their wrappers: ``socket`` builds its enums at import and
# ``hashlib`` loads OpenSSL, together about 5 ms of every command's start (measured with
# valgrind: 26 M instructions of a 106 M ``whoami``). ``_socket.socket`` is the class
# ``socket.socket`` extends (the same connect, sendall, recv, settimeout and close) and
# ``_sha256``/``_sha2`` is hashlib's own built-in SHA-256.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from hashlib import sha256
    from socket import AF_UNIX, SOCK_STREAM
    from socket import socket as Socket
    from typing import Any
else:
    try:
        from _socket import AF_UNIX, SOCK_STREAM
        from _socket import socket as Socket
    except ImportError:  # an interpreter without the C module
        from socket import AF_UNIX, SOCK_STREAM
        from socket import socket as Socket
    try:
        from _sha256 import sha256  # Python 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # Python 3.12 and later
        except ImportError:
            from hashlib import sha256

MAX_LINE = 64 * 1024
MAX_REPLY = 512 * 1024 * 1024  # an answer: a listing of 100,000 secrets is about 60 MiB of JSON
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 30.0  # a checkout may wait on a busy database (BEGIN IMMEDIATE, 10 s)


# -- where the socket lives ----------------------------------------------------------------------


def runtime_dir() -> str:
    """A private directory for sockets: 0700 and owned by us, or an error. (Paths here are
    strings: importing pathlib would cost the checkout fast path several milliseconds.)"""
    home = os.environ.get("CREDVAULT_HOME")
    if home:
        base = os.path.join(os.path.expanduser(home), "run")
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = os.path.join(os.environ["XDG_RUNTIME_DIR"], "credvault")
    else:
        base = f"/tmp/credvault-{os.getuid()}"  # noqa: S108 - checked to be ours and private below
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        info = os.lstat(base)
    except OSError:
        raise errors.ConfigurationError(f"cannot create the agent directory {base}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise errors.ConfigurationError(
            f"the agent directory {base} is not a private directory of this user",
            hint=f"remove it, or make it yours with mode 0700 (chmod 700 {base})",
        )
    return base


def socket_path(url: str, engineer: str) -> str:
    """The socket of the agent for ``engineer`` on the database ``url``."""
    # surrogatepass: a name that is not valid text (undecodable argv) still has a path, never an error
    digest = sha256(f"{url}\0{engineer}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
    path = os.path.join(runtime_dir(), f"agent-{digest}.sock")
    if len(os.fsencode(path)) > 100:  # sun_path is 104–108 bytes
        raise errors.ConfigurationError(
            "the agent's socket path is too long", hint="set CREDVAULT_HOME or XDG_RUNTIME_DIR to a shorter path"
        )
    return path


# -- the client ------------------------------------------------------------------------------------


class AgentAbsent(Exception):
    """No agent answers on that socket (none started, or it has ended)."""


UNKNOWN_REQUEST = "unknown agent request"  # how vault.service.agent begins that refusal


def unknown_request(error: errors.VaultError) -> bool:
    """Whether ``error`` is an agent's refusal of a request it does not know (an agent of an
    earlier release): for that request there is no agent, and the caller does the work."""
    return isinstance(error, errors.InvalidInput) and str(error).startswith(UNKNOWN_REQUEST)


def request(path: str | os.PathLike[str], message: dict[str, Any], *, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """Send one request; return the agent's answer, or raise the ``VaultError`` it reported.

    ``AgentAbsent`` when nobody listens, so that the caller can do the work itself.
    """
    sock = Socket(AF_UNIX, SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(os.fspath(path))
        except OSError:  # no file, nobody listening, not ours to open: no agent of ours
            raise AgentAbsent() from None
        sock.settimeout(timeout)
        try:
            sock.sendall(json.dumps(message).encode("utf-8") + b"\n")
            answer = _read_line(sock, MAX_REPLY)
        except ValueError:  # an answer that is not one JSON object, or past the bound
            raise errors.StoreUnavailable(
                "the credvault agent's answer was malformed or too large",
                hint="run the command with --passphrase-file PATH, or narrow it (e.g. --limit)",
            ) from None
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


def _read_line(sock: Socket, limit: int = MAX_LINE) -> dict[str, Any] | None:
    """One JSON object on one line, of at most ``limit`` bytes (a request: ``MAX_LINE``; an
    answer, which may carry a listing of thousands of records: ``MAX_REPLY``)."""
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError("line too long")
    if not data.strip():
        return None
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def checkout(
    url: str, engineer: str, *, ref: str, reason: str | None, field: str, version: int | None, hold_for: str | None
) -> dict[str, Any] | None:
    """The answer of ``engineer``'s agent on ``url`` to a checkout (``hold_for`` as typed,
    e.g. "2h"), or None when no agent of theirs runs here; its errors are raised."""
    try:
        path = socket_path(url, engineer)
    except errors.ConfigurationError:
        return None  # no usable private directory: no agent can be running there
    if not os.path.exists(path):
        return None
    message = {"op": "checkout", "ref": ref, "reason": reason, "field": field, "version": version, "hold_for": hold_for}
    try:
        return request(path, message)
    except AgentAbsent:
        return None
