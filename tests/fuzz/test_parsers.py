"""Fuzzing (issue 6): every parser of untrusted input fails only with a VaultError.

Hypothesis feeds random and mutated inputs to the parsers of enrolment codes, recovery
shares, key records (Argon2 replaced by a fast stand-in, so that random in-bounds
parameters cost nothing), audit checkpoints, backup files and key exports, and to the
CLI. Each must either succeed or raise a ``vault.errors.VaultError`` subclass: any other
exception, a hang or a traceback is a bug. Mutations start from real, valid inputs so
that the checks past the first few bytes are reached too.

The default run is bounded (200 examples per parser, fewer for the slower ones);
``-m slow`` runs many more, and an atheris run when atheris is installed.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import copy
import hashlib
import json
import os
import shutil
import sqlite3
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import backupdoc
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault import Vault
from vault.crypto import _primitives, keyrecord, shamir, signing
from vault.crypto.keyrecord import FLOOR
from vault.errors import VaultError
from vault.service.sessions import MemorySessionStore
from vault.storage import engine as storage

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
REASON = "T-1 fuzz"
SHORT = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BUG_HINT = "this is a bug in credvault"


def _fake_argon2id(secret: bytes, salt: bytes, memory_kib: int, time_cost: int, parallelism: int) -> bytes:
    """A fast stand-in for Argon2id: the same inputs give the same 32-byte key."""
    return hashlib.sha256(
        b"fake-argon2id" + struct.pack(">III", memory_kib, time_cost, parallelism) + salt + secret
    ).digest()


@contextlib.contextmanager
def fast_argon2() -> Iterator[None]:
    with mock.patch.object(_primitives, "argon2id", _fake_argon2id):
        yield


# -- mutations ------------------------------------------------------------------------------------------


@st.composite
def mutated_text(draw: st.DrawFn, valid: str, alphabet: str | None = None) -> str:
    """``valid`` with a few characters replaced, inserted, deleted, re-cased, or cut."""
    text = list(valid)
    chars = st.characters() if alphabet is None else st.sampled_from(alphabet)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "case", "cut", "whitespace"]))
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        if op == "replace" and text:
            text[at] = draw(chars)
        elif op == "insert":
            text.insert(at, draw(chars))
        elif op == "delete" and text:
            del text[at]
        elif op == "case" and text:
            text[at] = text[at].swapcase()
        elif op == "cut":
            text = text[:at]
        elif op == "whitespace":
            text.insert(at, draw(st.sampled_from([" ", "\t", "\n", "\u00a0", "\u200b", "\u3000"])))
    return "".join(text)


@st.composite
def mutated_bytes(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "extend"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data.insert(at, draw(st.integers(0, 255)))
        elif op == "delete" and data:
            del data[at]
        elif op == "cut":
            del data[at:]
        elif op == "extend":
            data.extend(draw(st.binary(max_size=64)))
    return bytes(data)


def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40),
    _json_containers,
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_paths(value, (*prefix, i)))
    return out


@st.composite
def mutated_document(draw: st.DrawFn, document: dict[str, Any]) -> str:
    """A JSON document with fields replaced, removed, re-typed or mutated; or its text cut/garbled."""
    doc = copy.deepcopy(document)
    paths = _paths(doc)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            old = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue
        op = draw(st.sampled_from(["replace", "delete", "mutate", "retype", "b64"]))
        if op == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif op == "mutate" and isinstance(old, str):
            parent[path[-1]] = draw(mutated_text(old))
        elif op == "retype":
            parent[path[-1]] = {"str": [old], "list": str(old), "int": 7, "none": None}[
                draw(st.sampled_from(["str", "list", "int", "none"]))
            ]
        elif op == "b64" and isinstance(old, str):
            try:
                raw = base64.b64decode(old, validate=True)
            except ValueError:
                continue
            parent[path[-1]] = base64.b64encode(draw(mutated_bytes(raw))).decode("ascii")
    text = json.dumps(doc)
    tail = draw(st.sampled_from(["keep", "keep", "keep", "cut", "garble"]))
    if tail == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif tail == "garble":
        text = draw(mutated_text(text))
    return text


def _assert_vault_error(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except VaultError:
        return None


# -- enrolment codes ------------------------------------------------------------------------------


_ORG = bytes(range(32))
_CODE = signing.make_enrolment_code(bytes(range(100, 100 + signing.INVITE_SECRET_SIZE)), _ORG)
CODE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567abcdefghijklmnopqrstuvwxyz01890-= ÄßİıǅⅧ\u0130\u212a"


def _codes() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=120),
        mutated_text(_CODE),
        mutated_text(_CODE, CODE_ALPHABET),
        st.text(alphabet=CODE_ALPHABET, max_size=80).map(lambda t: "CV1-" + t),
    )


def _parse_code(code: str) -> None:
    result = _assert_vault_error(signing.parse_enrolment_code, code)
    if result is not None:
        secret, org = result
        assert len(secret) == signing.INVITE_SECRET_SIZE and len(org) == 8


def test_a_valid_enrolment_code_parses() -> None:
    secret, org = signing.parse_enrolment_code(_CODE)
    assert secret == bytes(range(100, 100 + signing.INVITE_SECRET_SIZE))
    assert signing.org_matches(_ORG, org)


@SHORT
@given(_codes())
def test_enrolment_code_parser_raises_only_vault_errors(code: str) -> None:
    _parse_code(code)


@pytest.mark.slow
@SLOW
@given(_codes())
def test_enrolment_code_parser_raises_only_vault_errors_long(code: str) -> None:
    _parse_code(code)


# -- recovery shares ------------------------------------------------------------------------------


_VAULT_ID = bytes(range(16))
_SHARE = shamir.encode_share(_VAULT_ID, 3, 5, bytes(range(shamir.BUNDLE_SIZE)))
SHARE_ALPHABET = "cvs1-0123456789abcdefABCDEFGHIJKLMNOPQRSTUVWXYZ=  \u0131\u0130\u212a٣"


def _shares() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=160), mutated_text(_SHARE), mutated_text(_SHARE, SHARE_ALPHABET))


def _decode(text: str) -> None:
    result = _assert_vault_error(shamir.decode_share, _VAULT_ID, text)
    if result is not None:
        k, x, y = result
        assert 2 <= k <= 9 and 1 <= x <= shamir.MAX_SHARES and len(y) == shamir.BUNDLE_SIZE


def test_a_valid_share_decodes() -> None:
    assert shamir.decode_share(_VAULT_ID, _SHARE) == (3, 5, bytes(range(shamir.BUNDLE_SIZE)))


@SHORT
@given(_shares())
def test_share_decoder_raises_only_vault_errors(text: str) -> None:
    _decode(text)


@pytest.mark.slow
@SLOW
@given(_shares())
def test_share_decoder_raises_only_vault_errors_long(text: str) -> None:
    _decode(text)


# -- key records ----------------------------------------------------------------------------------


def _record() -> bytes:
    bundle = keyrecord.PrivateBundle(bytes(32), bytes(range(32)), bytes(range(32, 64)))
    with fast_argon2():
        return keyrecord.lock_record(bundle, "pass ✓", _VAULT_ID, 7, 1, FLOOR)


_RECORD = _record()
_HEADER = struct.calcsize(">BBIII16s")


@st.composite
def _records(draw: st.DrawFn) -> bytes:
    choice = draw(st.sampled_from(["random", "mutated", "params"]))
    if choice == "random":
        return draw(st.binary(max_size=200))
    if choice == "mutated":
        return draw(mutated_bytes(_RECORD))
    # a well-formed header with random (often in-bounds) parameters and a random body
    u32 = st.integers(0, 2**32 - 1)
    memory = draw(st.integers(FLOOR.memory_kib, keyrecord.CEILING.memory_kib) | u32)
    time_cost = draw(st.integers(FLOOR.time_cost, keyrecord.CEILING.time_cost) | u32)
    parallelism = draw(st.integers(FLOOR.parallelism, keyrecord.CEILING.parallelism) | u32)
    version, kind = _RECORD[0], _RECORD[1]
    header = struct.pack(
        ">BBIII16s", version, kind, memory, time_cost, parallelism, draw(st.binary(min_size=16, max_size=16))
    )
    return header + draw(st.binary(max_size=160))


def _open_record(record: bytes, passphrase: str, engineer_id: int, generation: int) -> None:
    with fast_argon2():
        result = _assert_vault_error(keyrecord.open_record, record, passphrase, _VAULT_ID, engineer_id, generation)
    if result is not None:
        assert record == _RECORD and (engineer_id, generation) == (7, 1)


def test_the_unmodified_record_opens_with_the_fast_argon2() -> None:
    with fast_argon2():
        bundle = keyrecord.open_record(_RECORD, "pass ✓", _VAULT_ID, 7, 1)
    assert bundle.signing_seed == bytes(range(32))


RECORD_ARGS = (
    _records(),
    st.sampled_from(["pass ✓", "pass \u2713", ""]) | st.text(max_size=30),
    st.sampled_from([7]) | st.integers(0, 2**31 - 1),
    st.sampled_from([1]) | st.integers(0, 2**31 - 1),
)


@SHORT
@given(*RECORD_ARGS)
def test_key_record_parser_raises_only_vault_errors(record: bytes, passphrase: str, engineer_id: int, gen: int) -> None:
    _open_record(record, passphrase, engineer_id, gen)


@pytest.mark.slow
@SLOW
@given(*RECORD_ARGS)
def test_key_record_parser_raises_only_vault_errors_long(
    record: bytes, passphrase: str, engineer_id: int, gen: int
) -> None:
    _open_record(record, passphrase, engineer_id, gen)


# -- a small vault, its checkpoint, a backup and a key export ---------------------------------------


class Small:
    """A small vault made with the fast Argon2 stand-in, and files taken from it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="credvault-fuzz-"))
        atexit.register(shutil.rmtree, self.dir, ignore_errors=True)
        with fast_argon2():
            self.admin, _ = Vault.create(
                f"sqlite:///{self.dir / 'vault.db'}", admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FLOOR
            )
            self.admin.engineers.unlock(ADMIN, ADMIN_PASS)
            self.admin.clients.add("acme", "Acme")
            self.admin.secrets.add("acme/fw01", password="fw password ✓", username="admin")
            self.admin.clients.add("globex", "Globex")
            self.admin.secrets.add("globex/vpn", password="vpn password ✓")
            self.checkpoint = self.admin.audit.checkpoint()
            self.admin.backups.create(self.dir / "backup.json")
            self.admin.backups.export_keys(self.dir / "keys.json")
        # The backup as one document (the format-1 reader's input, which mutated documents
        # exercise), and its format-2 text (JSON Lines, which mutated text exercises).
        self.backup = {**backupdoc.read(self.dir / "backup.json"), "format": 1}
        self.backup_lines = (self.dir / "backup.json").read_text(encoding="utf-8")
        self.keys = json.loads((self.dir / "keys.json").read_text(encoding="utf-8"))
        self.empty = self.dir / "empty.db"
        store = storage.Store(f"sqlite:///{self.empty}")
        storage.upgrade(store)
        store.close()
        self.runs = 0

    def restore(self, backup_text: str, keys_text: str) -> None:
        """Restore the two documents into a fresh copy of an empty, migrated database."""
        self.runs += 1
        work = self.dir / f"run{self.runs}"
        work.mkdir()
        try:
            (work / "backup.json").write_text(backup_text, encoding="utf-8")
            (work / "keys.json").write_text(keys_text, encoding="utf-8")
            shutil.copy(self.empty, work / "target.db")
            target = Vault.open(f"sqlite:///{work / 'target.db'}", sessions=MemorySessionStore(), kdf_params=FLOOR)
            try:
                with fast_argon2():
                    target.backups.restore(work / "backup.json", work / "keys.json", admin=ADMIN, passphrase=ADMIN_PASS)
            except VaultError:
                # a refused restore writes nothing
                if _restored_rows(work / "target.db"):
                    raise AssertionError("a refused restore left rows in the target database") from None
            finally:
                target.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _restored_rows(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("SELECT count(*) FROM vault_info").fetchone()[0])
    finally:
        con.close()


_SMALL: dict[str, Small] = {}


def _small() -> Small:
    if "small" not in _SMALL:
        _SMALL["small"] = Small()
    return _SMALL["small"]


def test_the_unmodified_backup_restores_and_the_checkpoint_verifies() -> None:
    small = _small()
    assert small.admin.audit.verify(checkpoints=[small.checkpoint]).ok
    target_path = small.dir / "whole.db"
    shutil.copy(small.empty, target_path)
    target = Vault.open(f"sqlite:///{target_path}", sessions=MemorySessionStore(), kdf_params=FLOOR)
    with fast_argon2():
        info = target.backups.restore(
            small.dir / "backup.json", small.dir / "keys.json", admin=ADMIN, passphrase=ADMIN_PASS
        )
    target.close()
    assert info.secrets == 2
    restored = Vault.open(f"sqlite:///{target_path}", engineer=ADMIN, sessions=MemorySessionStore(), kdf_params=FLOOR)
    with fast_argon2():
        restored.engineers.unlock(ADMIN, ADMIN_PASS)
    assert restored.checkouts.reveal("acme/fw01", reason=REASON) == "fw password ✓"
    restored.close()


@pytest.mark.parametrize("file_format", [1, 2])
@pytest.mark.parametrize("audit_head", ["x", None, [], "delete"])
def test_a_restore_refused_for_a_malformed_audit_head_writes_nothing(audit_head: Any, file_format: int) -> None:
    small = _small()
    backup = {**copy.deepcopy(small.backup), "format": file_format}
    if audit_head == "delete":
        del backup["audit_head"]
    else:
        backup["audit_head"] = audit_head
    work = Path(tempfile.mkdtemp(prefix="credvault-head-", dir=small.dir))
    backupdoc.write(backup, work / "backup.json")
    shutil.copy(small.empty, work / "target.db")
    target = Vault.open(f"sqlite:///{work / 'target.db'}", sessions=MemorySessionStore(), kdf_params=FLOOR)
    try:
        with fast_argon2(), pytest.raises(VaultError):
            target.backups.restore(work / "backup.json", small.dir / "keys.json", admin=ADMIN, passphrase=ADMIN_PASS)
    finally:
        target.close()
    assert _restored_rows(work / "target.db") == 0


# -- audit checkpoints ----------------------------------------------------------------------------


@st.composite
def _checkpoints(draw: st.DrawFn) -> str:
    valid = _small().checkpoint
    return draw(st.one_of(st.text(max_size=200), mutated_text(valid), st.just(valid.replace(":1", ":2", 1))))


def _verify_checkpoint(text: str) -> None:
    result = _assert_vault_error(_small().admin.audit.verify, checkpoints=[text])
    if result is not None and text.strip() == _small().checkpoint:
        assert result.ok


@SHORT
@given(_checkpoints())
def test_checkpoint_parser_raises_only_vault_errors(text: str) -> None:
    _verify_checkpoint(text)


@pytest.mark.slow
@SLOW
@given(_checkpoints())
def test_checkpoint_parser_raises_only_vault_errors_long(text: str) -> None:
    _verify_checkpoint(text)


# -- backups and key exports -------------------------------------------------------------------------


@st.composite
def _restore_inputs(draw: st.DrawFn) -> tuple[str, str]:
    small = _small()
    backup, keys = json.dumps(small.backup), json.dumps(small.keys)
    which = draw(st.sampled_from(["backup", "keys", "both", "random", "lines", "line"]))
    if which in ("backup", "both"):
        backup = draw(mutated_document(small.backup))
    if which == "lines":  # the format-2 file, its text mutated
        backup = draw(mutated_text(small.backup_lines))
    if which == "line":  # one of its lines replaced by a mutated JSON object
        lines = small.backup_lines.splitlines()
        at = draw(st.integers(0, len(lines) - 1))
        lines[at] = draw(mutated_document(json.loads(lines[at])))
        backup = "\n".join(lines) + "\n"
    if which in ("keys", "both"):
        keys = draw(mutated_document(small.keys))
    if which == "random":
        backup = draw(st.sampled_from([backup, json.dumps(draw(JSON_VALUES)), draw(st.text(max_size=50))]))
        keys = draw(st.sampled_from([keys, json.dumps(draw(JSON_VALUES))]))
    return backup, keys


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_restore_inputs())
def test_restore_raises_only_vault_errors_on_mutated_files(inputs: tuple[str, str]) -> None:
    _small().restore(*inputs)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_restore_inputs())
def test_restore_raises_only_vault_errors_on_mutated_files_long(inputs: tuple[str, str]) -> None:
    _small().restore(*inputs)


# -- the CLI --------------------------------------------------------------------------------------


# each command with its positional arguments and the options it takes a value for
COMMANDS: dict[tuple[str, ...], tuple[int, tuple[str, ...]]] = {
    ("engineer", "enroll"): (1, ("--code",)),
    ("grant",): (2, ("--until", "--reason")),
    ("revoke",): (2, ()),
    ("secret", "show"): (1, ("--field",)),
    ("secret", "add"): (1, ("--username", "--url", "--host", "--note", "--kind")),
    ("checkout",): (1, ("--reason", "--for", "--field")),
    ("audit", "verify"): (0, ()),
    ("audit", "log"): (0, ("--since", "--engineer", "--client", "--limit")),
    ("receipts", "verify"): (1, ()),
    ("purge", "client"): (1, ("--request",)),
    ("policy", "set"): (1, ("--for", "--stale-after")),
    ("unlock",): (0, ("--ttl",)),
}
KNOWN = [
    "acme",
    "acme/fw01",
    "globex/vpn",
    "root-admin",
    "bob",
    "1",
    "0",
    "-1",
    "2h",
    "7d",
    "T-1",
    "2030-01-01",
    "2000-01-01T00:00",
    "CV1-AAAA",
    "--json",
    "-h",
    "--",
    "-",
]
VALUE = st.sampled_from(KNOWN) | st.text(max_size=40).filter(lambda t: "\x00" not in t)


@st.composite
def _argv(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    positional, options = COMMANDS[command]
    argv = ["--passphrase-file", str(_cli_files()[1])] if draw(st.booleans()) else []
    argv += [*command, *(draw(VALUE) for _ in range(positional))]
    for _ in range(draw(st.integers(0, 3))):
        if options and draw(st.integers(0, 3)):
            argv += [draw(st.sampled_from(options)), draw(VALUE)]
        elif not draw(st.integers(0, 3)):
            argv.append(draw(VALUE))
    return argv


def _cli_files() -> tuple[Path, Path]:
    """A copy of the small vault for the CLI to change, and the admin's passphrase file."""
    small = _small()
    db, passphrase = small.dir / "cli.db", small.dir / "passphrase"
    if not db.exists():
        db.touch(mode=0o600)  # a vault file others may read is refused
        source, copy_ = sqlite3.connect(small.dir / "vault.db"), sqlite3.connect(db)
        source.backup(copy_)  # the live vault may still hold pages in its WAL
        source.close()
        copy_.close()
        passphrase.write_text(ADMIN_PASS, encoding="utf-8")
        passphrase.chmod(0o600)
    return db, passphrase


def _run_cli(argv: list[str]) -> None:
    import keyring
    from memory_keyring import MemoryKeyring
    from vault.cli.main import cli

    small = _small()
    home = small.dir / "home"
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    env = {
        "CREDVAULT_HOME": str(home),
        "CREDVAULT_DB": f"sqlite:///{_cli_files()[0]}",
        "CREDVAULT_ENGINEER": ADMIN,
        "CREDVAULT_DEBUG": None,
        "CREDVAULT_SESSION_TTL": None,
    }
    try:
        with mock.patch.object(keyrecord, "DEFAULT_PARAMS", FLOOR), fast_argon2():
            result = CliRunner().invoke(cli, argv, env=env, input="")
    finally:
        keyring.set_keyring(previous)
    output = result.output  # click >= 8.2: stdout and stderr as the user sees them
    assert result.exit_code in (0, 1, 2), (argv, result.exit_code, output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), (argv, repr(result.exception))
    assert "Traceback" not in output, (argv, output)
    assert BUG_HINT not in output, (argv, output)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_argv())
def test_the_cli_exits_cleanly_on_random_arguments(argv: list[str]) -> None:
    _run_cli(argv)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_argv())
def test_the_cli_exits_cleanly_on_random_arguments_long(argv: list[str]) -> None:
    _run_cli(argv)


# -- atheris (when installed) ---------------------------------------------------------------------------


ATHERIS_TARGET = """
import sys
import atheris

with atheris.instrument_imports():
    from vault.crypto import shamir, signing
    from vault.errors import VaultError

VAULT_ID = bytes(range(16))


def one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(200)
    for call in (lambda: signing.parse_enrolment_code(text), lambda: shamir.decode_share(VAULT_ID, text)):
        try:
            call()
        except VaultError:
            pass


atheris.Setup(sys.argv, one)
atheris.Fuzz()
"""


@pytest.mark.slow
def test_atheris_finds_no_crash_in_the_code_and_share_parsers(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    import subprocess

    target = tmp_path / "target.py"
    target.write_text(ATHERIS_TARGET, encoding="utf-8")
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, str(target), "-runs=200000", "-max_total_time=60", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
