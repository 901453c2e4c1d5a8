"""The clipboard: copy a checked-out value, and clear it later from a detached process.

``copy_with_clear`` puts the value on the clipboard and starts a small detached
process (``python -m vault.cli.clipclear``) that sleeps, then clears the clipboard
**only if it still holds our value**. The clearer gets a random key and a MAC of the
value (keyed BLAKE2b) on its standard input, never the value and never on its command
line, so it survives the command exiting and leaks nothing to ``ps``. It is started by a
double fork (``spawn_detached``): init reaps it, so a long-lived caller such as the agent
is left no zombie per copy.

Backends, first found wins: ``CREDVAULT_CLIPBOARD_FILE`` (a file standing in for the
clipboard, for tests and headless demos), Wayland (wl-copy/wl-paste), X11 (xclip or
xsel), macOS (pbcopy/pbpaste).

The thin CLI (cli/fast/) imports this module for a clipboard checkout, so it imports
only what that needs: no dataclasses, pathlib, shutil, secrets or hmac (with hashlib,
OpenSSL), which together cost the command about 15 ms of start-up; the clipboard tools'
``subprocess`` and the clearer's comparison import theirs when they run.
"""

from __future__ import annotations

import os
import sys

try:
    from _blake2 import blake2b  # hashlib's own built-in BLAKE2b, without loading OpenSSL
except ImportError:  # pragma: no cover - an interpreter without the C module
    from hashlib import blake2b

FILE_ENV = "CREDVAULT_CLIPBOARD_FILE"
DEFAULT_CLEAR_SECONDS = 30
_TIMEOUT = 5


class Clipboard:
    """One clipboard backend: commands that copy from stdin and paste to stdout, or a
    file (``path``) standing in for the clipboard."""

    __slots__ = ("copy_cmd", "name", "paste_cmd", "path")

    def __init__(
        self,
        name: str,
        copy_cmd: tuple[str, ...] = (),
        paste_cmd: tuple[str, ...] = (),
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name, self.copy_cmd, self.paste_cmd = name, copy_cmd, paste_cmd
        self.path = None if path is None else os.fspath(path)

    def __repr__(self) -> str:
        return f"Clipboard({self.name!r})"

    def copy(self, text: str) -> None:
        if self.path is not None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            return
        import subprocess

        subprocess.run(  # noqa: S603 - fixed argv of a known clipboard tool
            self.copy_cmd,
            input=text.encode("utf-8"),
            check=True,
            timeout=_TIMEOUT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def paste(self) -> str:
        if self.path is not None:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    return handle.read()
            except FileNotFoundError:
                return ""
        import subprocess

        result = subprocess.run(self.paste_cmd, capture_output=True, check=False, timeout=_TIMEOUT)  # noqa: S603
        return result.stdout.decode("utf-8", "replace")


def find() -> Clipboard | None:
    """The clipboard of this session, or None where there is none (a server, CI)."""
    path = os.environ.get(FILE_ENV)
    if path:
        return Clipboard("file", path=path)
    import shutil

    if os.environ.get("WAYLAND_DISPLAY") and shutil.which("wl-copy") and shutil.which("wl-paste"):
        return Clipboard("wayland", ("wl-copy",), ("wl-paste", "--no-newline"))
    if os.environ.get("DISPLAY"):
        if shutil.which("xclip"):
            return Clipboard(
                "xclip", ("xclip", "-selection", "clipboard", "-in"), ("xclip", "-selection", "clipboard", "-out")
            )
        if shutil.which("xsel"):
            return Clipboard("xsel", ("xsel", "--clipboard", "--input"), ("xsel", "--clipboard", "--output"))
    if sys.platform == "darwin" and shutil.which("pbcopy"):
        return Clipboard("macos", ("pbcopy",), ("pbpaste",))
    return None


def fingerprint(key: bytes, text: str) -> str:
    """The MAC of ``text`` under ``key``: keyed BLAKE2b (RFC 7693), 32 bytes, in hex."""
    return blake2b(text.encode("utf-8"), key=key, digest_size=32).hexdigest()


def copy_with_clear(board: Clipboard, text: str, seconds: int = DEFAULT_CLEAR_SECONDS) -> None:
    """Copy ``text`` and arrange for it to be cleared after ``seconds``, if still there."""
    board.copy(text)
    key = os.urandom(32)  # what secrets.token_bytes returns, without importing secrets
    line = f"{key.hex()} {fingerprint(key, text)}\n".encode("ascii")
    try:
        # -P: the working directory is not put on sys.path (no `vault` folder there is imported)
        spawn_detached([sys.executable, "-P", "-m", "vault.cli.clipclear", str(int(seconds))], line)
    except OSError as error:  # no clearer: the value must not stay on the clipboard
        try:
            board.copy("")
            after = "the value was taken off the clipboard"
        except Exception:  # the tool failed too: say so rather than hide it
            after = "clear the clipboard yourself"
        from vault import errors

        raise errors.ConfigurationError(
            f"the clipboard clearer did not start ({error.strerror or 'error'}); {after}",
            hint="print the value with --show instead, or try again",
        ) from None


def spawn_detached(argv: list[str], stdin: bytes) -> int:
    """Start ``argv`` in a session of its own (no hangup or Ctrl-C of the terminal reaches
    it), ``stdin`` (at most a pipe's atomic write) on its standard input, its output to
    /dev/null and no other descriptor of ours; its pid, once it has started (an error to
    start it is raised here). What ``subprocess.Popen(..., start_new_session=True,
    close_fds=True)`` does, without importing subprocess (about 5 ms of the command).

    It is started by a short-lived intermediate child (a double fork), which is reaped here
    before this returns: the program is then an orphan, reparented to init (or the nearest
    subreaper), which reaps it when it ends. A long-lived caller (the agent, a program using
    the library) is left no zombie per copy, and no other child of the caller is waited for."""
    limit = os.sysconf("SC_OPEN_MAX")
    data_r, data_w = os.pipe()  # both non-inheritable (close-on-exec), as every descriptor of ours
    try:
        status_r, status_w = os.pipe()  # the program's pid, or an error to start it; closed by its exec
    except OSError:
        os.close(data_r)
        os.close(data_w)
        raise
    try:
        if min(data_r, data_w, status_r, status_w) <= 2:  # we run with stdin/out/err closed
            data_r, data_w, status_r, status_w = (_above_2(fd) for fd in (data_r, data_w, status_r, status_w))
        middle = os.fork()
    except BaseException:  # no child: none of the four may leak into a long-lived caller
        for fd in (data_r, data_w, status_r, status_w):
            try:  # noqa: SIM105 - contextlib costs the fast path an import
                os.close(fd)
            except OSError:
                pass
        raise
    if middle == 0:  # the intermediate child: only system calls, then _exit, never back into this code
        try:
            pid = os.fork()
            if pid == 0:
                _exec_detached(argv, data_r, status_w, limit)  # never returns
            os.write(status_w, b"P%d;" % pid)
        except OSError as error:
            os.write(status_w, b"E%d;" % (error.errno or 0))
        finally:
            os._exit(0)
    os.close(data_r)
    os.close(status_w)
    try:
        os.write(data_w, stdin)  # an empty pipe takes PIPE_BUF (4 KiB) bytes at once: no wait
    except OSError:
        pass  # it did not start: the error is read below
    finally:
        os.close(data_w)
    _reap(middle)  # it has only to fork: it ends at once
    with os.fdopen(status_r, "rb") as status:
        said = status.read()  # until the program's exec (or its exit): end of file
    pid, failed = 0, None
    for item in said.split(b";"):
        if item.startswith(b"P"):
            pid = int(item[1:])
        elif item.startswith(b"E"):
            failed = int(item[1:])
    if failed is not None or not pid:
        if pid:
            _reap(pid)  # ours only if we are a subreaper; else init's, which reaps it
        errno = failed or 0
        raise OSError(errno, os.strerror(errno), argv[0])
    return pid


def _exec_detached(argv: list[str], data_r: int, status_w: int, limit: int) -> None:
    """In the program's child, after the second fork: a session of its own, ``data_r`` as
    its standard input, /dev/null as its output, no other descriptor; exec ``argv``. On an
    error, its errno goes to ``status_w`` and the child ends."""
    try:
        os.setsid()
        os.dup2(data_r, 0)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        for fd in (0, 1, 2):  # dup2 onto itself (null landed on a closed 1 or 2) keeps close-on-exec
            os.set_inheritable(fd, True)
        os.closerange(3, status_w)
        os.closerange(status_w + 1, limit)
        os.execv(argv[0], argv)  # noqa: S606 - our own interpreter and module, fixed arguments
    except OSError as error:
        os.write(status_w, b"E%d;" % (error.errno or 0))
    finally:
        os._exit(127)


def _reap(pid: int) -> None:
    """Wait for ``pid`` if it is our child; nothing otherwise (then it is not ours to reap)."""
    try:  # noqa: SIM105 - contextlib costs the fast path an import
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _above_2(fd: int) -> int:
    """``fd`` moved past the standard descriptors (close-on-exec): a pipe end the child
    ``dup2``s onto 0 must not already be 0, or the child starts with no stdin (and one it
    keeps must not be overwritten by those ``dup2``s)."""
    if fd > 2:
        return fd
    import fcntl

    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def clear_if_ours(board: Clipboard, key: bytes, digest: str) -> bool:
    """Clear the clipboard if it still holds the value whose MAC is ``digest``."""
    import hmac  # the clearer's, not the command's: it loads OpenSSL

    if not hmac.compare_digest(fingerprint(key, board.paste()), digest):
        return False
    board.copy("")
    return True
