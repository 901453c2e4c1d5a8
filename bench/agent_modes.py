"""`checkout --show` through the agent, embedded (``--db``) and through a team server, side by side.

Session 16, helper H (docs/server.md, "Session 16 — helper H"): W10 has no through-the-server
variant and W17 compares the served agent with ``pass show`` only, so this one-off measure times
the same whole ``credvault checkout REF --reason … --show`` process, the session in
``credvault agent`` both times, once against a vault on SQLite that the agent opened itself and
once against a ``credvault serve`` subprocess (loopback TLS, its own SQLite vault, a certified
server key) whose pinned server the agent talks HTTPS to. The runs alternate (one embedded, one
served) so that the shared machine's load falls on both alike; one untimed run of each first.

    .venv/bin/python -m bench.agent_modes [--reps 15]

Prints the median and p90 of each, and the ratio; checks that every run printed the value.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from bench.clitools import run
from bench.server_checkout import make_certificates, make_vault
from bench.server_team import _free_port, _wait_healthy, credvault_command
from bench.step import child_env
from bench.timing import median, percentile
from vault.server.keyfile import new_key_file
from vault.service.serverkeys import certify_server_key

REF, VALUE = "acme/fw01", "pw"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    reps = parser.parse_args().reps
    cmd = credvault_command()
    with tempfile.TemporaryDirectory(prefix="cvam") as name:
        tmp = Path(name)
        secret = tmp / "alice.pass"
        secret.write_text("alice pass\n")
        secret.chmod(0o600)
        local_url = f"sqlite:///{tmp / 'local.db'}"
        admin, alice = make_vault(local_url)
        admin.close(), alice.close()
        local_env = child_env({"CREDVAULT_HOME": str(tmp / "l")})
        _must(run([*cmd, "--db", local_url, "unlock", "alice", "--passphrase-file", str(secret)], local_env))

        served_url = f"sqlite:///{tmp / 'served.db'}"
        admin, alice = make_vault(served_url)
        alice.close()
        key_file = tmp / "server-key.json"
        made = new_key_file(key_file)
        certify_server_key(admin, made.signing.version, made.signing.public)
        admin.close()
        ca, cert, tls_key = make_certificates(tmp)
        port = _free_port()
        base = f"https://127.0.0.1:{port}"
        serve = [*cmd, "serve", "--db", served_url, "--bind", f"127.0.0.1:{port}", "--tls-cert", str(cert)]
        serve += ["--tls-key", str(tls_key), "--server-key", str(key_file), "--public-url", base]
        log_file = (tmp / "serve.log").open("wb")
        server = subprocess.Popen(serve, stdout=log_file, stderr=log_file)
        served_env = child_env({"CREDVAULT_HOME": str(tmp / "s")})
        try:
            _wait_healthy(server, base, ca)
            for args in (
                ["server", "trust", base, "--ca-file", str(ca), "--yes"],
                ["--db", served_url, "server", "join", base, "alice", "--passphrase-file", str(secret)],
                ["unlock", "alice", "--passphrase-file", str(secret)],
            ):
                _must(run([*cmd, *args], served_env))
            checkout = ["--as", "alice", "checkout", REF, "--reason", "agent modes", "--show"]
            times: dict[str, list[float]] = {"embedded": [], "served": []}
            for i in range(reps + 1):
                for mode, where, env in (("embedded", ["--db", local_url], local_env), ("served", [], served_env)):
                    seconds, code, out, _rss = run([*cmd, *where, *checkout], env)
                    assert code == 0 and VALUE in out, out
                    if i:
                        times[mode].append(seconds)
            run([*cmd, "--db", local_url, "--as", "alice", "lock"], local_env)
            run([*cmd, "--as", "alice", "lock"], served_env)
        finally:
            server.terminate()
            server.wait(20)
            log_file.close()
    for mode, values in times.items():
        print(f"{mode:9} median {median(values) * 1000:6.1f} ms  p90 {percentile(values, 90) * 1000:6.1f} ms  n={reps}")
    print(f"served / embedded: {median(times['served']) / median(times['embedded']):.2f}x")


def _must(result: tuple[float, int, str, float]) -> None:
    assert result[1] == 0, result[2]


if __name__ == "__main__":
    main()
