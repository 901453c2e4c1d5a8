"""docs/examples/server_key.py, the stand-in docs/deployment.md §8 gives for the missing
master-key rotation command: it adds a master key and keeps the old one as previous (the
file still owner-only and read as ``credvault serve`` reads it), refuses a file others may
read or one without a master key, and never leaves a half-written file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from vault.errors import ConfigurationError
from vault.server.keyfile import new_key_file, read_server_keys

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "server_key.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("server_key_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rotate_master_keeps_the_old_key_as_previous(script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "server-key.json"
    old = new_key_file(path)
    script.main(["rotate-master", str(path)])
    new = read_server_keys(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert new.master is not None and old.master is not None
    assert new.master.version == 2 and new.master.key != old.master.key
    assert [(k.version, k.key) for k in new.previous] == [(1, old.master.key)]
    assert new.signing.key.seed == old.signing.key.seed  # the signing key is not rotated by it
    script.main(["rotate-master", str(path)])
    again = read_server_keys(path)
    assert again.master is not None and again.master.version == 3
    assert [k.version for k in again.previous] == [1, 2]
    assert not list(tmp_path.glob("*.new"))


def test_rotate_master_refuses_a_file_others_may_read(script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "server-key.json"
    new_key_file(path)
    path.chmod(0o644)
    before = path.read_bytes()
    with pytest.raises(ConfigurationError, match="may be read by others"):
        script.main(["rotate-master", str(path)])
    assert path.read_bytes() == before and json.loads(before)["master_version"] == 1


def test_rotate_master_refuses_a_file_without_a_master_key(script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "server-key.json"
    new_key_file(path)
    document = json.loads(path.read_text())
    signing_only = {"version": document["version"], "signing_seed": document["signing_seed"]}
    path.write_text(json.dumps(signing_only))
    with pytest.raises(SystemExit, match="no master key"):
        script.main(["rotate-master", str(path)])
    assert json.loads(path.read_text()) == signing_only


def test_rotate_master_leaves_the_file_alone_when_a_staged_copy_exists(script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "server-key.json"
    new_key_file(path)
    before = path.read_bytes()
    (tmp_path / "server-key.json.new").write_text("left from a stopped run")
    with pytest.raises(SystemExit, match="exists"):
        script.main(["rotate-master", str(path)])
    assert path.read_bytes() == before


def test_anything_but_rotate_master_prints_the_usage(script: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="rotate-master FILE"):
        script.main(["new", str(tmp_path / "server-key.json")])
    assert not (tmp_path / "server-key.json").exists()
