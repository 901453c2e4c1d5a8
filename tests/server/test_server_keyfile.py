"""``credvault serve --server-key FILE``: the server key file (vault/server/keyfile.py).

Refused, with a hint and without its contents, unless only its owner may read it (0600) and
it is exactly ``{"version": N, "signing_seed": "<32 bytes b64url>"}``; read, it is the key the
app signs format-3 events with and names in ``/v1/identity``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from vault.cli.main import cli

from vault.crypto.serverkey import ServerKeyring, ServerSigningKey
from vault.errors import ConfigurationError
from vault.server import running
from vault.server.keyfile import read_server_key, read_server_keys

SEED = bytes(range(32))
TEXT = base64.urlsafe_b64encode(SEED).rstrip(b"=").decode()


def key_file(folder: Path, document: object, mode: int = 0o600) -> Path:
    path = folder / "server-key.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    path.chmod(mode)
    return path


def test_a_0600_file_gives_the_key(tmp_path: Path) -> None:
    key = read_server_key(key_file(tmp_path, {"version": 3, "signing_seed": TEXT}))
    assert (key.version, key.key.seed) == (3, SEED)
    assert TEXT not in repr(key)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_a_file_others_may_read_is_refused_with_a_hint(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, {"version": 1, "signing_seed": TEXT}, mode)
    with pytest.raises(ConfigurationError) as refused:
        read_server_key(path)
    assert "chmod 600" in str(refused.value.hint) and TEXT not in str(refused.value)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param("not json", id="not_json"),
        pytest.param([1, TEXT], id="not_an_object"),
        pytest.param({"version": 1}, id="no_seed"),
        pytest.param({"version": 1, "signing_seed": TEXT, "extra": 1}, id="unknown_field"),
        pytest.param({"version": True, "signing_seed": TEXT}, id="bool_version"),
        pytest.param({"version": 0, "signing_seed": TEXT}, id="version_zero"),
        pytest.param({"version": "1", "signing_seed": TEXT}, id="string_version"),
        pytest.param({"version": 1, "signing_seed": TEXT[:-2]}, id="short_seed"),
        pytest.param({"version": 1, "signing_seed": TEXT + "=="}, id="padded_seed"),
        pytest.param({"version": 1, "signing_seed": "!" * 43}, id="not_base64url"),
    ],
)
def test_a_file_that_is_not_a_server_key_is_refused_without_its_contents(tmp_path: Path, document: object) -> None:
    with pytest.raises(ConfigurationError) as refused:
        read_server_key(key_file(tmp_path, document))
    assert TEXT not in str(refused.value) and refused.value.hint


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        read_server_key(tmp_path / "absent.json")


def test_serve_reads_the_key_file_and_gives_the_key_to_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    build = running.build_app

    def recording(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        return build(*args, **kwargs)  # type: ignore[arg-type]

    class FakeServer:
        def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
            pass

        def run(self) -> None:
            pass

    monkeypatch.setattr(running, "build_app", recording)
    monkeypatch.setattr(running.uvicorn, "Server", FakeServer)
    path = key_file(tmp_path, {"version": 2, "signing_seed": TEXT})
    args = ["serve", "--db", f"sqlite:///{tmp_path / 'v.db'}", "--bind", "127.0.0.1:9443", "--server-key", str(path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    ring = seen["server_key"]  # every signing key of the file: the version the vault holds active signs
    assert isinstance(ring, ServerKeyring) and len(ring) == 1
    key = ring.newest
    assert isinstance(key, ServerSigningKey) and (key.version, key.key.seed) == (2, SEED)


def test_serve_refuses_a_key_file_others_may_read(tmp_path: Path) -> None:
    path = key_file(tmp_path, {"version": 1, "signing_seed": TEXT}, 0o644)
    args = ["serve", "--db", f"sqlite:///{tmp_path / 'v.db'}", "--server-key", str(path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "chmod 600" in result.stderr and TEXT not in result.stderr and "Traceback" not in result.stderr


MASTER = bytes(range(32, 64))
MASTER_TEXT = base64.urlsafe_b64encode(MASTER).rstrip(b"=").decode()


def test_a_file_with_a_master_key_gives_both_and_shows_neither(tmp_path: Path) -> None:
    path = key_file(tmp_path, {"version": 2, "signing_seed": TEXT, "master_version": 4, "master_key": MASTER_TEXT})
    read = read_server_keys(path)
    signing, master = read.signing, read.master
    assert (signing.version, signing.key.seed) == (2, SEED) and read.previous == ()
    assert master is not None and (master.version, master.key) == (4, MASTER)
    assert MASTER_TEXT not in repr(master) and MASTER.hex() not in repr(master)
    assert read_server_keys(key_file(tmp_path, {"version": 2, "signing_seed": TEXT})).master is None


def test_older_master_keys_of_a_rotation_are_read_oldest_first(tmp_path: Path) -> None:
    older = {"2": base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode(), "1": MASTER_TEXT}
    document = {
        "version": 1,
        "signing_seed": TEXT,
        "master_version": 3,
        "master_key": TEXT,
        "previous_master_keys": older,
    }
    read = read_server_keys(key_file(tmp_path, document))
    assert read.master is not None and read.master.version == 3
    assert [(k.version, k.key) for k in read.previous] == [(1, MASTER), (2, bytes(32))]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"master_key": MASTER_TEXT}, id="key_without_version"),
        pytest.param({"master_version": 1}, id="version_without_key"),
        pytest.param({"master_version": 0, "master_key": MASTER_TEXT}, id="version_zero"),
        pytest.param({"master_version": True, "master_key": MASTER_TEXT}, id="bool_version"),
        pytest.param({"master_version": 1, "master_key": MASTER_TEXT[:-2]}, id="short_key"),
        pytest.param({"master_version": 1, "master_key": MASTER_TEXT + "="}, id="padded_key"),
        pytest.param({"master_version": 1, "master_key": 7}, id="not_a_string"),
        pytest.param({"previous_master_keys": {"1": MASTER_TEXT}}, id="previous_without_master"),
        pytest.param(
            {"master_version": 2, "master_key": TEXT, "previous_master_keys": {"2": MASTER_TEXT}},
            id="previous_not_older",
        ),
        pytest.param(
            {"master_version": 2, "master_key": TEXT, "previous_master_keys": {"01": MASTER_TEXT}},
            id="previous_version_not_canonical",
        ),
        pytest.param(
            {"master_version": 2, "master_key": TEXT, "previous_master_keys": [MASTER_TEXT]},
            id="previous_not_an_object",
        ),
        pytest.param(
            {"master_version": 2, "master_key": TEXT, "previous_master_keys": {"1": "short"}}, id="previous_short"
        ),
    ],
)
def test_a_bad_master_key_is_refused_without_its_contents(tmp_path: Path, extra: dict[str, object]) -> None:
    path = key_file(tmp_path, {"version": 1, "signing_seed": TEXT, **extra})
    with pytest.raises(ConfigurationError) as refused:
        read_server_keys(path)
    assert MASTER_TEXT not in str(refused.value) and TEXT not in str(refused.value)
