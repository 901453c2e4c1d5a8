"""W17's step: the engineer's CLI checkout through a team server, whole processes, against ``pass show``.

``cli_step`` makes a small vault on SQLite (a client, a secret, alice granted it), certifies a
server key and starts one ``credvault serve`` subprocess on loopback over TLS (the server key
file made by ``credvault server keygen``). Alice's machine is a home folder of its own: she
pins the server (``server trust --yes``), copies her key record once (``server join``, the one
command that reads the database), and from then on her commands name no database. Timed, each
a whole ``credvault checkout acme/fw01 --reason … --show`` process (one untimed run first):

* **keyring session, no agent**: ``unlock --keyring`` first (a file-backed test keyring,
  ``bench/keyring_file.py``); each process reads the session and talks to the server;
* **agent**: ``unlock`` (the default: the session in ``credvault agent``, which keeps one
  connection to the server); each process is the fast path's one request to the agent.

The commands are those of a ``pip install .`` copy (``bench/clitools.installed_copy``, as W2's),
else the development venv's (whose editable-install hook costs every start several ms).

Baseline: ``pass show`` of the same value (``bench/clitools.pass_show``), in the same run.
Checks: every run printed the value; the server's log holds one ``checkout`` event per run.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.clitools import installed_copy, pass_show, run, timed_runs
from bench.server_checkout import make_certificates, make_vault
from bench.server_team import _free_port, _wait_healthy, credvault_command
from bench.step import child_env, log
from vault.server.keyfile import new_key_file
from vault.service.serverkeys import certify_server_key
from vault.storage import models as m

REF, VALUE = "acme/fw01", "pw"
KEYRING_BACKEND = "bench.keyring_file.FileKeyring"


def _checkouts(admin: Any) -> int:
    with admin.store.read() as s:
        return int(s.scalar(select(func.count()).select_from(m.AuditEvent).where(m.AuditEvent.action == "checkout")))


def cli_step(params: dict[str, Any]) -> dict[str, Any]:
    reps = int(params["reps"])
    checks: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="cvbench-w17-") as name:
        tmp = Path(name)
        url = f"sqlite:///{tmp / 'vault.db'}"
        admin, alice = make_vault(url)
        alice.close()
        key_file = tmp / "server-key.json"
        made = new_key_file(key_file)
        certify_server_key(admin, made.signing.version, made.signing.public)
        ca, cert, tls_key = make_certificates(tmp)
        port = _free_port()
        base = f"https://127.0.0.1:{port}"
        serve = [*credvault_command(), "serve", "--db", url, "--bind", f"127.0.0.1:{port}", "--tls-cert", str(cert)]
        serve += ["--tls-key", str(tls_key), "--server-key", str(key_file), "--public-url", base]
        log_file = (tmp / "serve.log").open("wb")
        server = subprocess.Popen(serve, stdout=log_file, stderr=log_file)
        try:
            _wait_healthy(server, base, ca)
            result = _engineer(admin, url, base, ca, tmp, reps, checks)
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log_file.close()
        result["pass"] = {k: v for k, v in pass_show(reps, REF, VALUE, tmp).items()}
        if result["pass"].get("available"):
            checks.append(("W17: `pass show` printed the value", bool(result["pass"]["ok"])))
        admin.close()
    result["checks"] = checks
    return result


def _engineer(
    admin: Any, url: str, base: str, ca: Path, tmp: Path, reps: int, checks: list[tuple[str, bool]]
) -> dict[str, Any]:
    env = child_env(
        {
            "CREDVAULT_HOME": str(tmp / "alice-home"),
            "PYTHON_KEYRING_BACKEND": KEYRING_BACKEND,
            "CREDVAULT_BENCH_KEYRING": str(tmp / "keyring.json"),
        }
    )
    secret = tmp / "alice.pass"
    secret.write_text("alice pass\n")
    secret.chmod(0o600)
    cmd = credvault_command()
    setup = [
        [*cmd, "server", "trust", base, "--ca-file", str(ca), "--yes"],
        [*cmd, "--db", url, "server", "join", base, "alice", "--passphrase-file", str(secret)],
        [*cmd, "unlock", "alice", "--keyring", "--passphrase-file", str(secret)],
    ]
    for args in setup:
        _s, code, out, _r = run(args, env)
        checks.append((f"W17: `credvault {' '.join(args[len(cmd) : len(cmd) + 2])}` ({out.strip()[:50]!r})", code == 0))
    checkout = [*cmd, "checkout", REF, "--reason", "W17 bench", "--show"]
    before = _checkouts(admin)
    log(f"W17: {reps} CLI checkouts through the server, keyring session")
    keyring_times, ok1, peak1 = timed_runs(checkout, env, reps, VALUE)
    _s, code, out, _r = run([*cmd, "unlock", "alice", "--passphrase-file", str(secret)], env)
    checks.append((f"W17: `credvault unlock` into the agent ({out.strip()[:50]!r})", code == 0))
    # as W2: the timed command from a `pip install .` copy (no editable-install hook at each start);
    # the agent it asks is the one `unlock` started
    installed = installed_copy(tmp)
    if installed is not None:
        own_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}  # not the source tree's vault/
        checkout_installed = [installed, *checkout[len(cmd) :]]
    log(f"W17: {reps} CLI checkouts through the server, agent")
    if installed is not None:
        agent_times, ok2, peak2 = timed_runs(checkout_installed, own_env, reps, VALUE)
    else:
        agent_times, ok2, peak2 = timed_runs(checkout, env, reps, VALUE)
    run([*cmd, "lock"], env)
    recorded = _checkouts(admin) - before
    runs = 2 * (reps + 1)
    checks.append(("W17: every CLI checkout through the server exited 0 and printed the value", ok1 and ok2))
    checks.append((f"W17: the {runs} CLI checkouts wrote {recorded} checkout events", recorded == runs))
    return {
        "keyring": keyring_times,
        "agent": agent_times,
        "peak_mib": max(peak1, peak2),
        "installed": installed is not None,
    }
