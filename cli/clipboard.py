"""The clipboard: copy a checked-out value, and clear it later from a detached process.

``copy_with_clear`` puts the value on the clipboard and starts a small detached
process (``python -m vault.cli.clipclear``) that sleeps, then clears the clipboard
**only if it still holds our value**. The clearer gets a random key and an HMAC of the
value on its standard input, never the value and never on its command line, so it
survives the command exiting and leaks nothing to ``ps``.

Backends, first found wins: ``CREDVAULT_CLIPBOARD_FILE`` (a file standing in for the
clipboard, for tests and headless demos), Wayland (wl-copy/wl-paste), X11 (xclip or
xsel), macOS (pbcopy/pbpaste).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FILE_ENV = "CREDVAULT_CLIPBOARD_FILE"
DEFAULT_CLEAR_SECONDS = 30
_TIMEOUT = 5


@dataclass(frozen=True)
class Clipboard:
    """One clipboard backend: commands that copy from stdin and paste to stdout."""

    name: str
    copy_cmd: tuple[str, ...] = ()
    paste_cmd: tuple[str, ...] = ()
    path: Path | None = None

    def copy(self, text: str) -> None:
        if self.path is not None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            return
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
                return self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return ""
        result = subprocess.run(self.paste_cmd, capture_output=True, check=False, timeout=_TIMEOUT)  # noqa: S603
        return result.stdout.decode("utf-8", "replace")


def find() -> Clipboard | None:
    """The clipboard of this session, or None where there is none (a server, CI)."""
    path = os.environ.get(FILE_ENV)
    if path:
        return Clipboard("file", path=Path(path))
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
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def copy_with_clear(board: Clipboard, text: str, seconds: int = DEFAULT_CLEAR_SECONDS) -> None:
    """Copy ``text`` and arrange for it to be cleared after ``seconds``, if still there."""
    board.copy(text)
    key = secrets.token_bytes(32)
    clearer = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [sys.executable, "-m", "vault.cli.clipclear", str(int(seconds))],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    assert clearer.stdin is not None
    clearer.stdin.write(f"{key.hex()} {fingerprint(key, text)}\n".encode("ascii"))
    clearer.stdin.close()


def clear_if_ours(board: Clipboard, key: bytes, digest: str) -> bool:
    """Clear the clipboard if it still holds the value whose HMAC is ``digest``."""
    if not hmac.compare_digest(fingerprint(key, board.paste()), digest):
        return False
    board.copy("")
    return True
