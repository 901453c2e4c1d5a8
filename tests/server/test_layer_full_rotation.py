"""``credvault serve rotate-key --full``: every client's server client key rotated, every data key
re-layered, the old keys deleted, with a server running (``vault/server/layer_rotation.py``).

The attack it answers: a thief holds the old key file (its master key opens every server client
key of a database copy). After the full rotation, a copy of the database opens nothing under the
old server client keys, and the running server (its own process, its own cache of the old keys)
keeps releasing through the new ones. A run cut short resumes without making a second key; a key
that a slow server still wrote under is kept, not deleted, and the next run moves it. Both engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from served import ServedTeam, ServedVault
from sqlalchemy import select

from vault.crypto import serverlayer
from vault.errors import DecryptionFailed
from vault.server import layer_rotation
from vault.server.keyfile import ServerKeyFile
from vault.server.keyfile_rotation import replace_key_file
from vault.server.layer import ServerLayer
from vault.service.remote import RemoteVault
from vault.storage import models as m
from vault.storage.engine import Store

PASSWORDS = {"acme/fw01": "acme fw pw 1", "acme/sw02": "acme sw pw 2", "globex/mail": "globex mail pw"}


@dataclass
class Rotating:
    team: ServedTeam
    layer: ServerLayer  # the running server's (its cache holds the old keys)
    bob: RemoteVault
    url: str


@pytest.fixture
def rotating(served_vault: ServedVault) -> Rotating:
    team, admin = served_vault.team, served_vault.admin
    layer = admin.core.host_layer
    assert isinstance(layer, ServerLayer)
    for slug in ("acme", "globex"):
        admin.clients.add(slug, slug.title())
    for ref, password in PASSWORDS.items():
        admin.secrets.add(ref, password=password, kind="equipment")
    bob = team.engineer("bob")
    for slug in ("acme", "globex"):
        admin.grants.grant("bob", slug)
    assert checked_out(bob) == PASSWORDS  # the server's cache now holds every old key
    return Rotating(team, layer, bob, served_vault.url)


def checked_out(bob: RemoteVault) -> dict[str, str]:
    found = {}
    for ref in PASSWORDS:
        found[ref] = bob.checkouts.checkout(ref, reason="T-7 rotation").value
        bob.checkouts.checkin(ref)
    return found


def stored(store: Store) -> tuple[dict[int, list[tuple[int, str, bytes]]], dict[tuple[int, int], tuple[int, bytes]]]:
    """Each client's server client key rows, and each data key (client, blob) by (secret, version)."""
    with store.read() as s:
        keys: dict[int, list[tuple[int, str, bytes]]] = {}
        for r in s.scalars(select(m.ServerClientKey).order_by(m.ServerClientKey.version)):
            keys.setdefault(r.client_id, []).append((r.version, r.state, bytes(r.blob)))
        rows = s.execute(
            select(m.SecretVersion.secret_id, m.SecretVersion.version, m.Secret.client_id, m.SecretVersion.wrapped_dek)
            .join(m.Secret, m.Secret.id == m.SecretVersion.secret_id)
        ).all()
    return keys, {(r[0], r[1]): (r[2], bytes(r[3])) for r in rows}


def a_new_process(rotating: Rotating) -> ServerLayer:
    """The layer as ``credvault serve rotate-key --full`` holds it: the same file, another process."""
    return ServerLayer(rotating.layer.master)


def test_a_full_rotation_leaves_no_data_key_that_the_old_server_client_keys_open(rotating: Rotating) -> None:
    store = rotating.team.server_store
    old_keys, old_rows = stored(store)
    with store.read() as s:  # what a thief with the old file opens from a database copy made before
        vault_id = bytes(s.get(m.VaultInfo, 1).vault_id)  # type: ignore[union-attr]
        stolen = {c: a_new_process(rotating).version_key(s, vault_id, c, 1) for c in old_keys}
    done = layer_rotation.relayer(a_new_process(rotating), store)
    assert (done.clients, done.rows, done.retired, done.left) == (2, len(PASSWORDS), 2, 0)
    new_keys, new_rows = stored(store)
    assert {c: [(v, state) for v, state, _ in rows] for c, rows in new_keys.items()} == {
        c: [(2, "active")] for c in old_keys
    }
    assert all(serverlayer.sck_version(blob) == 2 for _, blob in new_rows.values())
    assert all(new_rows[row][1] != old_rows[row][1] for row in old_rows)
    for (secret_id, version), (client_id, blob) in new_rows.items():
        with pytest.raises(DecryptionFailed):
            serverlayer.unlayer(
                stolen[client_id], 2, blob,
                vault_id=vault_id, client_id=client_id, secret_id=secret_id, version=version, key_version=1,
            )  # fmt: skip
    assert checked_out(rotating.bob) == PASSWORDS  # the running server opens the new keys by their version
    assert rotating.team.admin.audit.verify().ok


def test_a_run_cut_short_resumes_without_a_second_new_key(rotating: Rotating, monkeypatch: pytest.MonkeyPatch) -> None:
    store = rotating.team.server_store
    real = layer_rotation._relayer_rows

    def cut(*args: Any, **kwargs: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(layer_rotation, "_relayer_rows", cut)
    with pytest.raises(KeyboardInterrupt):
        layer_rotation.relayer(a_new_process(rotating), store)
    keys, _ = stored(store)
    assert {c: [(v, s) for v, s, _ in rows] for c, rows in keys.items()} == {
        c: [(1, "retiring"), (2, "active")] for c in keys
    }
    assert checked_out(rotating.bob) == PASSWORDS  # mid-rotation: the old layers still open
    monkeypatch.setattr(layer_rotation, "_relayer_rows", real)
    done = layer_rotation.relayer(a_new_process(rotating), store)
    assert (done.clients, done.retired, done.left) == (0, 2, 0)
    keys, rows = stored(store)
    assert {c: [v for v, _, _ in r] for c, r in keys.items()} == {c: [2] for c in keys}
    assert {serverlayer.sck_version(blob) for _, blob in rows.values()} == {2}
    assert checked_out(rotating.bob) == PASSWORDS


def test_a_key_a_slow_server_wrote_under_is_kept_and_moved_next_time(
    rotating: Rotating, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row written under the old key after its page was re-layered (a server that had not seen the
    new key): deleting the old key would lose that secret, so the client's old key stays."""
    store = rotating.team.server_store
    _, before = stored(store)
    real = layer_rotation._relayer_rows
    slow_client, other = sorted({c for c, _ in before.values()})
    slow = next(row for row, (client, _) in before.items() if client == slow_client)

    def then_a_slow_write(*args: Any, **kwargs: Any) -> int:
        moved = real(*args, **kwargs)
        with store.transaction() as s:  # the bytes that server wrote: its layer under version 1
            s.execute(
                m.SecretVersion.__table__.update()  # type: ignore[attr-defined]
                .where(m.SecretVersion.secret_id == slow[0], m.SecretVersion.version == slow[1])
                .values(wrapped_dek=before[slow][1])
            )
        return moved

    monkeypatch.setattr(layer_rotation, "_relayer_rows", then_a_slow_write)
    done = layer_rotation.relayer(a_new_process(rotating), store)
    assert (done.retired, done.left) == (1, 1)
    assert checked_out(rotating.bob) == PASSWORDS  # nothing lost
    monkeypatch.setattr(layer_rotation, "_relayer_rows", real)
    again = layer_rotation.relayer(a_new_process(rotating), store)
    # the kept client is finished (its slow row moved, its old key deleted); the other, whose
    # rotation was complete, is rotated once more (a new run is a new rotation for it)
    assert (again.clients, again.rows, again.retired, again.left) == (1, 2, 2, 0)
    keys, rows = stored(store)
    assert {c: [v for v, _, _ in r] for c, r in keys.items()} == {slow_client: [2], other: [3]}
    assert {c: serverlayer.sck_version(blob) for c, blob in rows.values()} == {slow_client: 2, other: 3}
    assert checked_out(rotating.bob) == PASSWORDS


def run(*args: str) -> Result:
    from vault.cli.main import cli

    return CliRunner().invoke(cli, list(args))


def test_the_cli_runs_it_and_refuses_it_with_drop_old(rotating: Rotating, tmp_path: Path) -> None:
    path = tmp_path / "server-key.json"
    replace_key_file(path, ServerKeyFile(rotating.team.server_key, rotating.layer.master))
    result = run("serve", "rotate-key", "--server-key", str(path), "--full", "--db", rotating.url)
    assert result.exit_code == 0, result.output
    said = "New server client keys for 2 client(s); 3 data key(s) re-layered; 2 old server client key(s) deleted"
    assert said in result.output
    keys, _ = stored(rotating.team.server_store)
    assert {c: [v for v, _, _ in r] for c, r in keys.items()} == {c: [2] for c in keys}
    both = run("serve", "rotate-key", "--server-key", str(path), "--full", "--drop-old", "--db", rotating.url)
    assert both.exit_code == 2 and "separate steps" in both.output
    assert checked_out(rotating.bob) == PASSWORDS
