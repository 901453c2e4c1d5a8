"""The CLI as a program: help texts, layering, start-up cost, the console script, the demo."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from cli_workspace import ok, run
from vault.cli.main import cli

CLI_DIR = Path(__file__).resolve().parents[2] / "cli"
FORBIDDEN = ("vault.crypto", "vault.storage")


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


ALL_COMMANDS = list(_commands(cli))


def test_the_command_set_is_complete() -> None:
    names = {" ".join(path) for path in ALL_COMMANDS}
    expected = {
        "init",
        "unlock",
        "lock",
        "whoami",
        "engineer invite",
        "engineer enroll",
        "engineer confirm",
        "engineer list",
        "client add",
        "client list",
        "client show",
        "grant",
        "revoke",
        "grants",
        "secret add",
        "secret list",
        "secret show",
        "secret update",
        "secret history",
        "db upgrade",
        "db status",
        "demo",
    }
    assert expected <= names


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "credvault")
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = ok(run(*path, "--help"))
    assert "Example" in result.stdout
    assert "credvault " in result.stdout.split("Example", 1)[1]


def _imports(source: Path) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield (node.module or "", node.level)


def test_cli_uses_only_the_service_api() -> None:
    sources = sorted(CLI_DIR.glob("*.py"))
    assert len(sources) >= 8
    for source in sources:
        for module, level in _imports(source):
            assert level <= 1, f"{source.name} reaches out of the cli package: {'.' * level}{module}"
            absolute = f"vault.cli.{module}" if level == 1 else module
            assert not absolute.startswith(FORBIDDEN), f"{source.name} imports {absolute}"
            assert not absolute.startswith(("sqlalchemy", "cryptography", "argon2")), (
                f"{source.name} imports {absolute}"
            )


def test_importing_the_cli_loads_no_heavy_module() -> None:
    heavy = ("sqlalchemy", "keyring", "cryptography", "argon2", "alembic", "platformdirs")
    code = f"import sys, vault.cli.main; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("credvault")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from vault.cli.main import main; main()"]


def test_demo_runs_a_real_workflow_and_finds_no_plaintext(tmp_path: Path) -> None:
    env = {**os.environ, "CREDVAULT_HOME": str(tmp_path / "home")}
    out = subprocess.run([*_console_script(), "demo"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no plaintext found" in out.stdout
    assert "FOUND" not in out.stdout and "Traceback" not in out.stderr
    assert not (tmp_path / "home").exists()  # the demo touches no real config or data


def test_demo_keep_leaves_a_database_without_plaintext(tmp_path: Path) -> None:
    from vault.cli import demo

    kept = tmp_path / "kept"
    result = ok(run("demo", "--keep", str(kept)))
    assert "no plaintext found" in result.stdout
    raw = b"".join(path.read_bytes() for path in kept.iterdir())
    assert (kept / demo.DB_NAME).exists()
    for plaintext in (demo.CLIENT_NAME, "nwfw-operator", "Demo-Backup-Passw0rd!", "printer-lobby.nw-demo.internal"):
        assert plaintext.encode() not in raw
    again = run("demo", "--keep", str(kept))
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_version_option() -> None:
    assert "credvault" in ok(run("--version")).stdout
