"""Rotating the server key: ``credvault serve rotate-key`` and the certification of the next version.

docs/server.md §5. ``rotate-key`` adds signing key v+1 and master key M+1 to the key file
(atomically, 0600), keeping v and M; the server signs events, answers and ``/v1/identity`` with
the version the vault holds active, so with v until an admin certifies v+1 (``server certify``),
then with v+1 without a restart; ``/readyz`` stays ready meanwhile (v signs), and says
``server-key-not-certified`` for a server whose file holds no active version; and
``--drop-old`` removes v and M only once v+1 is certified and active (every server client key
moved to M+1 first). Both engines.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from server_harness import JSON, asgi_call, database_state, envelope
from sqlalchemy import select

from vault.authority.engineer_requests import WhoamiRequest
from vault.crypto import serverlayer
from vault.errors import ConfigurationError
from vault.server import keyfile_rotation
from vault.server.app import build_app
from vault.server.keyfile import read_server_keys
from vault.server.layer import ServerLayer
from vault.storage import models as m
from vault.storage.engine import Store
from vault.wire import httpsig, httpsig_response
from vault.wire.nonces import DbNonceStore

PUBLIC_URL = "https://127.0.0.1:8443"


def run(*args: str) -> Result:
    from vault.cli.main import cli

    return CliRunner().invoke(cli, list(args))


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def refused(result: Result, *words: str) -> str:
    assert result.exit_code == 1, result.output
    assert "credvault: error: " in result.stderr and "\nhint: " in result.stderr, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def new_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "server-key.json"
    ok(run("server", "keygen", str(path)))
    return path


def pass_file(tmp_path: Path, team, name: str) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / f"{name}.pass"
    path.write_text(team.passphrases[name] + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def certify(team, tmp_path: Path, key_file: Path, *, name: str | None = None) -> Result:  # type: ignore[no-untyped-def]
    """``server certify FILE`` as ``name`` (the admin), the key file given only as the argument."""
    who = name or team.admin.engineer_name
    return run("--db", team.url, "--as", who, "--passphrase-file", pass_file(tmp_path, team, who), "server", "certify",
               str(key_file))  # fmt: skip


def server_keys(store: Store) -> list[tuple[int, bytes, str]]:
    with store.read() as s:
        return [
            (k.version, bytes(k.signing_public), k.state)
            for k in s.scalars(select(m.ServerKey).order_by(m.ServerKey.version))
        ]


def last_event(store: Store) -> m.AuditEvent:
    with store.read() as s:
        event = s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq.desc()).limit(1)).one()
        s.expunge(event)
    return event


def whoami_keyid(app: object, vault) -> str:  # type: ignore[no-untyped-def]
    """The server key version named by the signature of the answer to a signed whoami."""
    me = vault.keyholder.me()
    body = envelope("engineers.whoami", WhoamiRequest())
    path = "/v1/engineers/whoami"
    headers = httpsig.sign_request(
        "POST",
        "127.0.0.1:8443",
        path,
        JSON,
        body,
        vault.keyholder.my_signing_key(),
        f"e:{me.engineer_id}:{me.key_generation}",
    )
    response: httpx.Response = asgi_call(app, "POST", path, body, {"Content-Type": JSON, **headers})
    assert response.status_code == 200, response.text
    version = httpsig_response.signed_version(response.headers.multi_items())
    return f"s:{version}"


# -- the key file ----------------------------------------------------------------------------------------------------


def test_rotate_key_adds_the_next_versions_and_keeps_the_old(tmp_path: Path, cli_home: Path) -> None:
    path = new_key_file(tmp_path)
    before = read_server_keys(path)
    result = ok(run("serve", "rotate-key", "--server-key", str(path)))
    after = read_server_keys(path)
    assert after.signing.version == 2 and after.signing.public != before.signing.public
    assert [(k.version, k.key.seed) for k in after.previous_signing] == [(1, before.signing.key.seed)]
    assert after.master is not None and before.master is not None
    assert after.master.version == 2 and after.master.key != before.master.key
    assert after.previous == (before.master,)
    assert [k.version for k in after.signing_keys.keys] == [1, 2]
    assert path.stat().st_mode & 0o777 == 0o600
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert "version 2" in result.output
    for secret in (after.signing.key.seed, after.master.key, before.master.key):  # never printed
        assert secret.hex() not in result.output and secret.hex() not in repr(after)


def test_a_second_rotation_before_the_old_key_is_dropped_is_refused(tmp_path: Path, cli_home: Path) -> None:
    path = new_key_file(tmp_path)
    ok(run("serve", "rotate-key", "--server-key", str(path)))
    kept = path.read_bytes()
    refused(run("serve", "rotate-key", "--server-key", str(path)), "rotation under way", "--drop-old")
    assert path.read_bytes() == kept


def test_a_failed_write_leaves_the_key_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = new_key_file(tmp_path)
    kept = path.read_bytes()

    def failing(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keyfile_rotation.os, "replace", failing)
    with pytest.raises(ConfigurationError, match="cannot be written"):
        keyfile_rotation.rotate(path)
    assert path.read_bytes() == kept
    assert [p.name for p in tmp_path.iterdir()] == ["server-key.json"]  # no temporary file left


@pytest.mark.parametrize("older", [{"2": "x"}, {"3": None}, {"01": None}, {"1": 7}, []], ids=str)
def test_a_key_file_whose_older_signing_keys_are_not_older_or_not_keys_is_refused(
    tmp_path: Path, older: object
) -> None:
    path = new_key_file(tmp_path)
    document = json.loads(path.read_text())
    seed = document["signing_seed"]
    if isinstance(older, dict):
        older = {version: (seed if value is None else value) for version, value in older.items()}
    document["version"] = 2
    document["previous_signing_keys"] = older
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError) as raised:
        read_server_keys(path)
    assert seed not in str(raised.value) and raised.value.hint


# -- the server and the vault ------------------------------------------------------------------------------------


def test_the_server_signs_with_the_old_version_until_the_new_one_is_certified(
    team, tmp_path: Path, cli_home: Path
) -> None:  # type: ignore[no-untyped-def]
    path = new_key_file(tmp_path)
    ok(certify(team, tmp_path, path))
    admin = team.admin
    ok(run("serve", "rotate-key", "--server-key", str(path)))
    keys = read_server_keys(path)
    admin.core.server_key = keys.signing_keys  # the admin on the host, with the rotated file
    store = Store(team.url)
    try:
        app = build_app(store, public_url=PUBLIC_URL, nonce_store=DbNonceStore(store), server_key=keys.signing_keys)
        ready = asgi_call(app, "GET", "/readyz")  # a restart before the certification: v1 signs, still ready
        assert ready.status_code == 200 and ready.json()["reasons"] == []
        assert asgi_call(app, "GET", "/v1/identity").json()["server_key"]["version"] == 1
        admin.clients.add("acme", "Acme Ltd")
        assert last_event(store).server_key_version == 1
        assert whoami_keyid(app, admin) == "s:1"

        ok(certify(team, tmp_path, path))  # the next version: the file's newest
        certification = last_event(store)
        assert (certification.action, certification.server_key_version) == ("server-key-certify", 1)
        assert [(v, state) for v, _, state in server_keys(store)] == [(1, "retired"), (2, "active")]
        assert server_keys(store)[1][1] == keys.signing.public
        admin.clients.add("beta", "Beta GmbH")  # the same process, no restart: the next unit signs with 2
        assert last_event(store).server_key_version == 2
        time.sleep(1.05)  # the answers' choice is read again after a second
        assert whoami_keyid(app, admin) == "s:2"
        identity = asgi_call(app, "GET", "/v1/identity").json()["server_key"]
        assert identity["version"] == 2 and "certificate" in identity
        assert asgi_call(app, "GET", "/readyz").status_code == 200
        # a server (or an admin) still on the old file: named by /readyz, and it signs no event
        old = keys.signing_keys.keys[0]
        stale = build_app(store, public_url=PUBLIC_URL, nonce_store=DbNonceStore(store), server_key=old)
        assert asgi_call(stale, "GET", "/readyz").json()["reasons"] == ["server-key-not-certified"]
        admin.core.server_key = old
        seq = last_event(store).seq
        with pytest.raises(ConfigurationError, match="not the vault's active"):
            admin.clients.add("gamma", "Gamma AG")
        assert last_event(store).seq == seq
    finally:
        store.close()
        admin.core.server_key = None
    result = admin.audit.verify()
    assert result.ok, result


def test_an_engineer_cannot_certify_the_next_version(team, tmp_path: Path, cli_home: Path) -> None:  # type: ignore[no-untyped-def]
    """An insider with a valid engineer key certifies the rotated file's key: refused, nothing stored,
    and the server goes on signing with version 1."""
    team.engineer("mallory")
    path = new_key_file(tmp_path)
    ok(certify(team, tmp_path, path))
    ok(run("serve", "rotate-key", "--server-key", str(path)))
    before = database_state(team.url)
    store = Store(team.url)
    try:
        seq = last_event(store).seq
        refused(certify(team, tmp_path, path, name="mallory"))
        after = database_state(team.url)
        with store.read() as s:  # the one event: mallory's unlock for the command (--passphrase-file)
            added = [e.action for e in s.scalars(select(m.AuditEvent).where(m.AuditEvent.seq > seq))]
        assert added == ["unlock"]
        assert {k: v for k, v in after.items() if not k.startswith("audit_")} == {
            k: v for k, v in before.items() if not k.startswith("audit_")
        }
        assert [(v, state) for v, _, state in server_keys(store)] == [(1, "active")]
        app = build_app(store, public_url=PUBLIC_URL, nonce_store=DbNonceStore(store),
                        server_key=read_server_keys(path).signing_keys)  # fmt: skip
        assert asgi_call(app, "GET", "/readyz").json()["reasons"] == []  # version 1 still signs
        assert asgi_call(app, "GET", "/v1/identity").json()["server_key"]["version"] == 1
        uncertified = read_server_keys(path).signing  # a server given only the uncertified version
        alone = build_app(store, public_url=PUBLIC_URL, nonce_store=DbNonceStore(store), server_key=uncertified)
        assert asgi_call(alone, "GET", "/readyz").json()["reasons"] == ["server-key-not-certified"]
    finally:
        store.close()


def test_drop_old_waits_for_the_certification_then_moves_the_layer_and_drops(
    team, tmp_path: Path, cli_home: Path
) -> None:  # type: ignore[no-untyped-def]
    path = new_key_file(tmp_path)
    ok(certify(team, tmp_path, path))
    first = read_server_keys(path)
    assert first.master is not None
    admin = team.admin
    admin.core.server_key = first.signing_keys
    store = Store(team.url)
    try:
        admin.clients.add("acme", "Acme Ltd")
        admin.secrets.add("acme/fw01", password="pw of acme/fw01")
        assert ServerLayer(first.master).layer_on(store).rows == 1
        ok(run("serve", "rotate-key", "--server-key", str(path)))
        rotated = path.read_bytes()
        refused(
            run("serve", "rotate-key", "--server-key", str(path), "--drop-old", "--db", team.url),
            "not the vault's active",
        )
        assert path.read_bytes() == rotated  # nothing dropped before the certification

        admin.core.server_key = read_server_keys(path).signing_keys
        ok(certify(team, tmp_path, path))
        result = ok(run("serve", "rotate-key", "--server-key", str(path), "--drop-old", "--db", team.url))
        assert "Dropped signing key version(s) 1 and master key version(s) 1" in result.output
        dropped = read_server_keys(path)
        assert dropped.previous_signing == () and dropped.previous == ()
        assert dropped.master is not None and dropped.master.version == 2 and dropped.signing.version == 2
        assert path.stat().st_mode & 0o777 == 0o600
        with store.read() as s:
            blobs = [bytes(b) for b in s.scalars(select(m.ServerClientKey.blob))]
            vault_id, client_id = admin.core.vid(s), s.scalar(select(m.Client.id))
        assert blobs and {serverlayer.smk_version(b) for b in blobs} == {2}
        with store.read() as s:  # the new master key alone opens the client's layer
            ServerLayer(dropped.master).client_key(s, vault_id, client_id)
        for layer, status in ((ServerLayer(first.master), 503), (ServerLayer(dropped.master), 200)):
            app = build_app(store, public_url=PUBLIC_URL, nonce_store=DbNonceStore(store),
                            server_key=dropped.signing_keys, layer=layer)  # fmt: skip
            assert asgi_call(app, "GET", "/readyz").status_code == status
        ok(run("serve", "rotate-key", "--server-key", str(path), "--drop-old", "--db", team.url))  # again: nothing
    finally:
        store.close()
        admin.core.server_key = None
    assert admin.audit.verify().ok


def test_rotate_key_help_has_an_example() -> None:
    result = ok(run("serve", "rotate-key", "--help"))
    assert "credvault serve rotate-key --server-key" in result.output.split("Example", 1)[1]


def test_serve_still_runs_without_a_subcommand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vault.server import running

    started: list[object] = []

    class FakeServer:
        def __init__(self, config: object) -> None:
            started.append(config)

        def run(self) -> None:
            pass

    monkeypatch.setattr(running.uvicorn, "Server", FakeServer)
    ok(run("serve", "--db", f"sqlite:///{tmp_path / 'v.db'}", "--bind", "127.0.0.1:9443"))
    assert len(started) == 1
