"""Small filesystems for the full-disk tests: mount one, fill it, unmount it.

``mount_small(where, size)`` mounts a tmpfs of ``size`` at ``where`` (failing that, a
loop-mounted ext4 image of twice the size) and returns None, or the reason it could
not (callers skip with it): mounting needs root. ``fill(where)`` takes every free block
with a filler file; deleting that file gives the space back. ``unmount(where)`` always
detaches, lazily if something still holds the filesystem. ``assert_clean(error, *secrets)``
is what both full-disk tests ask of every refusal: no driver text, no secret.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import traceback
from pathlib import Path

from vault.errors import VaultError

DRIVER_WORDS = (
    "Traceback",
    "sqlite3",
    "psycopg",
    "Error:",
    "errno",
    "Background on this error",
    "sqlalche.me",
    "[SQL:",
)


def assert_clean(error: VaultError, *never: str) -> None:
    """No driver text in the message or hint; no secret anywhere in the exception."""
    for word in DRIVER_WORDS:
        assert word.lower() not in (str(error) + error.hint).lower(), f"driver text {word!r} in {error!r}"
    shown = "\n".join([str(error), error.hint, repr(error), *map(str, error.args), *traceback.format_exception(error)])
    for secret in never:
        assert secret not in shown, "a secret is in the exception"
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def mount_small(where: Path, size_mib: int, mode: str = "0700") -> str | None:
    """Mount a ``size_mib`` MiB filesystem at ``where``; None on success, else why not."""
    if os.geteuid() != 0:
        return "mounting a small filesystem needs root"
    tried = run("mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode={mode}", "tmpfs", str(where))
    if tried.returncode == 0:
        return None
    image = where.parent / f"{where.name}.img"
    steps = [("truncate", "-s", f"{2 * size_mib}M", str(image)), ("mkfs.ext4", "-q", "-F", str(image))]
    steps.append(("mount", "-o", "loop", str(image), str(where)))
    for step in steps:
        looped = run(*step)
        if looped.returncode != 0:
            return (
                f"cannot mount a small filesystem: tmpfs: {tried.stderr.strip()!r}; "
                f"loop ext4 ({step[0]}): {looped.stderr.strip()!r}"
            )
    where.chmod(int(mode, 8))
    return None


def unmount(where: Path) -> None:
    if run("umount", str(where)).returncode != 0:
        run("umount", "-l", str(where))  # something still holds it: detach now, free when released


def fill(where: Path) -> Path:
    """Take every free block of the filesystem with a filler file."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            chunk = b"\xff" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    return filler
