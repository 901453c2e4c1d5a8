"""Running the ``credvault`` command the way a user does, and ``pass show`` next to it.

* ``run`` and ``timed_runs``: one process, or a series, timed from the parent and reaped
  with ``wait4`` (so each run's peak RSS is known);
* ``installed_copy``: the console script as ``pip install .`` makes it, in a throw-away
  venv (the project's editable install runs an import hook at every interpreter start);
* ``pass_show``: the baseline, Debian's password-store with a gpg key without
  passphrase in a throw-away GNUPGHOME and PASSWORD_STORE_DIR, its agent warm;
* ``CliUser``: one engineer at a terminal: a private ``CREDVAULT_HOME``, a file-backed
  keyring (``bench/keyring_file.py``), a file standing in for the clipboard (the
  ``CREDVAULT_CLIPBOARD_FILE`` backend the tests use), a session unlocked with
  ``credvault unlock`` and the agent started with ``credvault agent start``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.step import child_env, log

ROOT = Path(__file__).resolve().parent.parent
KEYRING_MODULE = "cvbench_keyring"
GNU_TIME, RSS_MARK = "/usr/bin/time", "cvbench-maxrss="


def run(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[float, int, str, float]:
    """(seconds, exit status, output, peak RSS MiB) of one process, reaped with wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if stdin is not None:  # a few bytes: written whole before the output is read
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    assert proc.stdout is not None
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    return seconds, proc.returncode, out, usage.ru_maxrss / 1024


def timed_runs(cmd: list[str], env: dict[str, str], reps: int, expect: str) -> tuple[list[float], bool, float]:
    """``reps`` timed runs after one untimed (page cache); all exited 0 and printed ``expect``?"""
    times, ok, peak = [], True, 0.0
    for i in range(reps + 1):  # the first run warms the page cache and is not counted
        seconds, code, out, rss = run(cmd, env)
        ok = ok and code == 0 and expect in out
        peak = max(peak, rss)
        if i:
            times.append(seconds)
    return times, ok, peak


def installed_copy(tmp: Path) -> str | None:
    """``credvault`` as `pip install .` makes it, in a throw-away venv, or None if that fails.

    The project's own .venv holds an editable install, whose import hook runs at every
    interpreter start (about 8 ms here): a user's installed command does not pay it. The
    throw-away venv reaches the same dependencies through a .pth line naming .venv's
    site-packages (a path entry only: .pth files there are not run)."""
    venv = tmp / "installed"
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
        site = next((venv / "lib").glob("python3*/site-packages"))
        deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "sqlalchemy").exists())
        (site / "deps.pth").write_text(f"{deps}\n", encoding="utf-8")
        repo = ROOT
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(venv / "bin" / "python"),
                "install",
                "-q",
                "--no-deps",
                str(repo),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, StopIteration, OSError) as error:
        log(f"could not make an installed copy ({type(error).__name__}); timing the editable install only")
        return None
    command = venv / "bin" / "credvault"
    return str(command) if command.exists() else None


def pass_show(reps: int, ref: str, password: str, tmp: Path) -> dict[str, Any]:
    if not (shutil.which("pass") and shutil.which("gpg")):
        return {"available": False, "why": "pass unavailable (apt-get install pass gnupg)"}
    gnupg, store = tmp / "gnupg", tmp / "store"
    gnupg.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(gnupg), "PASSWORD_STORE_DIR": str(store)}
    try:
        subprocess.run(
            [
                "gpg",
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                "credvault bench <bench@example.invalid>",
                "future-default",
                "default",
                "never",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        listing = subprocess.run(
            ["gpg", "--batch", "--with-colons", "--list-secret-keys"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        algos = {line.split(":")[16] for line in listing.splitlines() if line.startswith(("sec:", "ssb:"))}
        subprocess.run(["pass", "init", fpr], env=env, check=True, capture_output=True)
        subprocess.run(
            ["pass", "insert", "--multiline", ref],
            env=env,
            input=password + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
        times, ok, _ = timed_runs(["pass", "show", ref], env, reps, password)
        return {"available": True, "times": times, "ok": ok, "curves": sorted(a for a in algos if a)}
    except (subprocess.CalledProcessError, StopIteration) as error:
        return {"available": False, "why": f"pass could not be set up ({type(error).__name__})"}
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True)


class CliUser:
    """One engineer at a terminal on this machine (see the module docstring).

    ``command`` is the console script to run: an installed copy (``installed_copy``) or
    the project's .venv one. The keyring backend is copied next to nothing else into a
    directory of its own on ``PYTHONPATH``, so that an installed copy imports its own
    ``vault`` package and not the source tree's."""

    def __init__(self, tmp: Path, url: str, engineer: str, passphrase: str, command: str) -> None:
        self.url, self.engineer, self.command = url, engineer, command
        self.clipboard = tmp / "clipboard.txt"
        self.secret_file = tmp / f"passphrase-{engineer}"
        self.secret_file.write_text(passphrase + "\n")
        self.secret_file.chmod(0o600)
        modules = tmp / "keyring-backend"
        modules.mkdir(exist_ok=True)
        shutil.copy(ROOT / "bench" / "keyring_file.py", modules / f"{KEYRING_MODULE}.py")
        env = {k: v for k, v in child_env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "PYTHONPATH")}
        env.update(
            {
                "PYTHONPATH": str(modules),
                "CREDVAULT_HOME": str(tmp / f"home-{engineer}"),
                "PYTHON_KEYRING_BACKEND": f"{KEYRING_MODULE}.FileKeyring",
                "CREDVAULT_BENCH_KEYRING": str(tmp / f"keyring-{engineer}.json"),
                "CREDVAULT_CLIPBOARD_FILE": str(self.clipboard),
            }
        )
        self.env = env
        self.agent = False

    def argv(self, *args: str) -> list[str]:
        return [self.command, "--db", self.url, "--as", self.engineer, *args]

    def run(self, *args: str, stdin: str | None = None) -> tuple[float, int, str, float]:
        return run(self.argv(*args), self.env, stdin)

    def peak_rss(self, *args: str, stdin: str | None = None) -> tuple[float, int, str, float | None]:
        """(seconds, exit status, output, peak RSS MiB) of one run under GNU time (None without it).

        ``wait4`` cannot give a command's own peak here: a child forked from a large
        process is charged that process's pages until its exec, so the command runs
        under ``/usr/bin/time``, a small process, and its report is read back."""
        if not Path(GNU_TIME).exists():
            seconds, code, out, _r = self.run(*args, stdin=stdin)
            return seconds, code, out, None
        seconds, code, out, _r = run([GNU_TIME, "-f", f"{RSS_MARK}%M", *self.argv(*args)], self.env, stdin)
        lines = out.splitlines(keepends=True)
        marks = [line for line in lines if line.startswith(RSS_MARK)]
        rest = "".join(line for line in lines if not line.startswith(RSS_MARK))
        return seconds, code, rest, int(marks[-1][len(RSS_MARK) :]) / 1024 if marks else None

    def start(self) -> list[tuple[str, bool]]:
        """``credvault unlock``, then ``credvault agent start`` where the CLI has it; the checks."""
        who = self.engineer
        unlock = [self.command, "--db", self.url, "unlock", who, "--passphrase-file", str(self.secret_file)]
        _s, code, out, _r = run(unlock, self.env)
        checks = [(f"`credvault unlock {who}` keeps a session ({out.strip()[:60]!r})", code == 0)]
        if run([self.command, "agent", "--help"], self.env)[1] == 0:
            _s, code, out, _r = self.run("agent", "start", "--passphrase-file", str(self.secret_file))
            checks.append((f"`credvault agent start` for {who} ({out.strip()[:60]!r})", code == 0))
            self.agent = code == 0
        else:
            log("this CLI has no `agent` command: the commands read the keyring session")
        return checks

    def stop(self) -> None:
        if self.agent:
            self.run("agent", "stop")
        self.run("lock")


def console_script(tmp: Path, installed: bool) -> tuple[str, bool]:
    """(the command to run, whether it is an installed copy): the installed copy if asked
    and it can be made, else the project's .venv one."""
    if installed:
        copy = installed_copy(tmp)
        if copy is not None:
            return copy, True
    return str(Path(sys.executable).parent / "credvault"), False


def pass_summary(result: dict[str, Any]) -> dict[str, Any]:
    """``pass_show``'s answer without its sample list, with a summary of it if it ran."""
    from bench.timing import summary

    return {k: v for k, v in result.items() if k != "times"} | (
        {"summary": summary(result["times"])} if result.get("available") else {}
    )
