"""Thin-CLI timings (issue 13): everyday commands through the agent vs main vs `pass show`.

    python bench/thincli.py --main /work/main [--runs 20]

Builds a throwaway vault (SQLite, one client, a few secrets) in a temporary directory,
unlocks it with this tree's `credvault unlock` (the agent) and, for the baseline,
with main's `credvault unlock` (a keyring session in a file backend, bench/keyring_file.py)
and main's `agent start`; sets up `pass` with a throwaway no-passphrase GnuPG key.
Every figure is the median wall time of ``--runs`` runs of a fresh process (after 2
warm-up runs), measured in the same run. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
REF = "acme/fw01-admin"


def timed(argv: list[str], env: dict[str, str], runs: int, before: list[str] | None = None, stdin: str = "") -> float:
    """Median milliseconds of ``argv`` (``before`` runs untimed ahead of each run)."""
    samples = []
    for i in range(runs + 2):
        if before:
            subprocess.run(before, env=env, check=True, capture_output=True)
        args = [a.replace("{i}", str(i)) for a in argv]
        start = time.perf_counter()
        proc = subprocess.run(args, env=env, input=stdin, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed: {proc.stderr}")
        if i >= 2:
            samples.append(elapsed * 1000)
    return statistics.median(samples)


def _run(argv: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, input=stdin, check=True, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--main", type=Path, required=True, help="a checkout of main with its .venv")
    parser.add_argument("--runs", type=int, default=20)
    opts = parser.parse_args()
    new_cv = str(HERE / ".venv" / "bin" / "credvault")
    old_cv = str(opts.main / ".venv" / "bin" / "credvault")
    tmp = Path(tempfile.mkdtemp(prefix="cvthin"))
    try:
        db = f"sqlite:///{tmp / 'v.db'}"
        passfile = tmp / "pass"
        passfile.write_text("bench passphrase\n", encoding="utf-8")
        passfile.chmod(0o600)
        base = {k: v for k, v in os.environ.items() if not k.startswith("CREDVAULT_")}
        new_env = {**base, "CREDVAULT_HOME": str(tmp / "h2"), "CREDVAULT_DB": db, "CREDVAULT_ENGINEER": "admin"}
        old_env = {
            **base,
            "CREDVAULT_HOME": str(tmp / "main"),
            "CREDVAULT_DB": db,
            "CREDVAULT_ENGINEER": "admin",
            "PYTHONPATH": str(opts.main),
            "PYTHON_KEYRING_BACKEND": "bench.keyring_file.FileKeyring",
            "CREDVAULT_BENCH_KEYRING": str(tmp / "keyring.json"),
        }
        pf = ["--passphrase-file", str(passfile)]
        run = _run
        run([new_cv, "init", "--admin", "admin", *pf], new_env)
        run([new_cv, *pf, "client", "add", "acme", "--name", "Acme Ltd"], new_env)
        run(
            [new_cv, *pf, "secret", "add", REF, "--kind", "equipment", "--username", "u", "--password-stdin"],
            new_env,
            "pw-1\n",
        )
        for n in range(8):
            run([new_cv, *pf, "secret", "add", f"acme/s{n}", "--kind", "other", "--generate"], new_env)
        run([new_cv, "unlock", "--ttl", "1h", *pf], new_env)
        run([old_cv, "--trust-new-vault", "unlock", "--ttl", "1h", *pf], old_env)
        results: dict[str, dict[str, float]] = {}

        def both(name: str, args: list[str], **kw: object) -> None:
            results.setdefault(name, {})["h2"] = timed([new_cv, *args], new_env, opts.runs, **kw)  # type: ignore[arg-type]

        clip = {**new_env, "CREDVAULT_CLIPBOARD_FILE": str(tmp / "clip")}
        both("whoami", ["whoami"])
        both("client list", ["client", "list"])
        both("secret list", ["secret", "list"])
        both("secret show", ["secret", "show", REF])
        both("checkout --show", ["checkout", REF, "-r", "T-1", "--show"])
        results["checkout (clipboard)"] = {
            "h2": timed([new_cv, "checkout", REF, "-r", "T-1", "--clear-after", "5"], clip, opts.runs)
        }
        both("audit log --limit 20", ["audit", "log", "--limit", "20"])
        both("checkin", ["checkin", REF], before=[new_cv, "checkout", REF, "-r", "T-1", "--json"])
        both("secret add", ["secret", "add", "acme/new-h2-{i}", "--kind", "other", "--generate"])
        for name, args in (
            ("whoami", ["whoami"]),
            ("secret show", ["secret", "show", REF]),
            ("checkout --show", ["checkout", REF, "-r", "T-1", "--show"]),
            ("secret list", ["secret", "list"]),
        ):
            results[name]["main (keyring)"] = timed([old_cv, *args], old_env, opts.runs)
        run([old_cv, "agent", "start", "--ttl", "1h", *pf], old_env)
        results["checkout --show"]["main (agent)"] = timed(
            [old_cv, "checkout", REF, "-r", "T-1", "--show"], old_env, opts.runs
        )
        run([old_cv, "lock"], old_env)
        run([new_cv, "lock"], new_env)
        pass_ms = pass_show(tmp, opts.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"`pass show`: {pass_ms:.1f} ms (median of {opts.runs})\n")
    print("| command | h2 through the agent (ms) | ratio to pass show | main (ms) |")
    print("|---|---|---|---|")
    for name, row in results.items():
        mains = ", ".join(f"{k.removeprefix('main ')} {v:.0f}" for k, v in row.items() if k.startswith("main"))
        print(f"| {name} | {row['h2']:.1f} | {row['h2'] / pass_ms:.2f}x | {mains or '-'} |")
    return 0


def pass_show(tmp: Path, runs: int) -> float:
    if shutil.which("pass") is None or shutil.which("gpg") is None:
        raise SystemExit("pass and gpg are needed for the baseline")
    gnupg, store = tmp / "gnupg", tmp / "store"
    gnupg.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(gnupg), "PASSWORD_STORE_DIR": str(store)}

    def run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
        return _run(argv, env, stdin)

    try:
        run(
            [
                "gpg",
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                "bench@example.invalid",
                "default",
                "default",
                "never",
            ]
        )
        fpr = next(
            line.split(":")[9]
            for line in run(["gpg", "--list-secret-keys", "--with-colons"]).stdout.splitlines()
            if line.startswith("fpr:")
        )
        run(["pass", "init", fpr])
        run(["pass", "insert", "-m", REF], "pw-1\n")
        return timed(["pass", "show", REF], env, runs)
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
