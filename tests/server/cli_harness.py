"""Running the CLI against a team server in tests (``CliRunner``): a command, its success or its
refusal (the CLI's error contract), a pass file, and an engineer's ``server trust`` then ``server join``.
The config folder and keyring of a test are ``home`` (test_cli_over_server.py) or ``cli_home`` (conftest.py)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result
from server_harness import Keyed
from vault.cli.main import cli


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def refused(result: Result, *words: str) -> str:
    """The CLI's error contract: exit 1, an error line and a hint, no traceback."""
    assert result.exit_code == 1, result.output
    assert "credvault: error: " in result.stderr and "\nhint: " in result.stderr, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def passfile(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.pass"
    path.write_text(f"pass of {name}\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def joined(keyed: Keyed, tmp_path: Path, name: str = "alice") -> str:
    """``server trust`` then ``server join`` for ``name``: their pass file."""
    served = keyed.served
    ok(run("server", "trust", served.url, "--ca-file", str(served.ca.ca_file), "--yes"))
    secret = passfile(tmp_path, name)
    ok(run("--db", served.db_url, "server", "join", served.url, name, "--passphrase-file", secret))
    return secret
