"""An engineer without a grant for a client, holding their own unlocked keys and a
full read copy of the database, learns nothing of that client: not its name, not its
slug, not a secret's name or value, and no sealed key opens for them."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from vault.crypto import blobs, sealing
from vault.crypto.labels import BLOB_SERVER_LAYER, LABEL_CLIENT_KEY_SEAL, LABEL_INVITE, LABEL_ROOT_BUNDLE
from vault.errors import DecryptionFailed, NotFound
from vault.server.layer import is_layered
from vault.service.remote import RemoteVault


@pytest.fixture
def team(team3):  # type: ignore[no-untyped-def]
    """In each of ``team3``'s modes: SQLite, PostgreSQL, through a team server."""
    return team3


ACME_PLAINTEXTS = [
    "acme",
    "Acme Industrial Holdings",
    "fw01-admin",
    "vpn-gateway",
    "core-switch",
    "acme-root-user",
    "svc-backup-acme",
    "fw01.acme.example",
    "vpn.acme.example",
    "10.77.31.9",
    "Rack 7, cage 3 — behind the blue door",
    "SN-ACME-99172",
    "Acme-Pw-7f3a!",
    "Acme-Pw-v2-8c1d!",
    "VpnPass-42-ü",
    "SwitchPw#5520",
]


@pytest.fixture
def scene(team):  # type: ignore[no-untyped-def]
    admin = team.admin
    admin.clients.add("acme", "Acme Industrial Holdings")
    admin.clients.add("globex", "Globex Corp")
    admin.secrets.add(
        "acme/fw01-admin",
        password="Acme-Pw-7f3a!",
        kind="equipment",
        username="acme-root-user",
        host="fw01.acme.example",
        note="Rack 7, cage 3 — behind the blue door",
        fields={"serial": "SN-ACME-99172"},
    )
    admin.secrets.add(
        "acme/vpn-gateway",
        password="VpnPass-42-ü",
        kind="service",
        username="svc-backup-acme",
        url="https://vpn.acme.example/",
    )
    admin.secrets.add("acme/core-switch", password="SwitchPw#5520", host="10.77.31.9")
    admin.secrets.update("acme/fw01-admin", password="Acme-Pw-v2-8c1d!")
    admin.secrets.add("globex/sw01", password="globex-pw", host="sw01.globex.example")
    team.engineer("bob")
    admin.grants.grant("bob", "acme")  # someone else does hold acme's key
    alice = team.engineer("alice")
    admin.grants.grant("alice", "globex")  # alice holds a key, just not acme's
    admin.engineers.invite("carol")  # a pending invite: its secret is sealed too
    return alice


def _ids(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, set[Any]]:
    def col(table: str, column: str) -> set[Any]:
        return {row[column] for t, row in rows if t == table}

    return {
        "clients": col("clients", "id"),
        "engineers": col("engineers", "id") | {0},
        "secrets": col("secrets", "id"),
        "versions": col("secret_versions", "version") | {0},
        "roots": col("root_keys", "version"),
        "key_versions": col("client_keys", "version") | {0},
    }


def _seal_contexts(vault_id: bytes, ids: dict[str, set[Any]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [()]
    for cid, version in itertools.product(ids["clients"], ids["key_versions"]):
        recipients = [("engineer", e) for e in ids["engineers"]] + [("recovery", r) for r in ids["roots"]]
        out.extend((LABEL_CLIENT_KEY_SEAL, vault_id, cid, version, kind, rid) for kind, rid in recipients)
    for root, eid in itertools.product(ids["roots"], ids["engineers"]):
        out.append((LABEL_ROOT_BUNDLE, vault_id, root, eid))
        out.append((LABEL_INVITE, vault_id, eid, root))
    return out


def _field_contexts(blob_type: int, ids: dict[str, set[Any]]) -> list[tuple[Any, ...]]:
    if blob_type == 0x03:
        return [(c, p) for c in ids["clients"] for p in ("slug", "name", "lookup-key", "audit-keys")]
    triples = list(itertools.product(ids["clients"], ids["secrets"], ids["versions"]))
    if blob_type == 0x02:
        return triples
    return [(*t, p) for t in triples for p in ("password", "metadata")]


def _layer_contexts(vault_id: bytes, ids: dict[str, set[Any]]) -> list[tuple[Any, ...]]:
    keyed = itertools.product(ids["clients"], ids["secrets"], ids["versions"], ids["key_versions"])
    return [(vault_id, *t) for t in keyed]


def _owned_by(table: str, row: dict[str, Any], client_id: int, secret_ids: set[int], engineer_id: int) -> bool:
    """Whether a row is one the engineer may legitimately open (her own grant's client)."""
    if table == "clients":
        return bool(row["id"] == client_id)
    if table == "secret_versions":
        return row["secret_id"] in secret_ids
    if table == "client_key_seals":
        return (
            row["recipient_kind"] == "engineer" and row["recipient_id"] == engineer_id and row["client_id"] == client_id
        )
    return row.get("client_id") == client_id


def test_an_engineer_without_a_grant_finds_no_plaintext_and_opens_no_blob(team, scene, db):  # type: ignore[no-untyped-def]
    alice = scene
    me = alice.keyholder.me()
    rows = db.rows()
    ids = _ids(rows)
    vault_id = alice.vault_id()
    globex_id = max(ids["clients"])
    globex_secrets = {row["id"] for t, row in rows if t == "secrets" and row["client_id"] == globex_id}

    # 1. No plaintext of acme anywhere, in any column of any row.
    for table, row in rows:
        for column, value in row.items():
            if isinstance(value, (bytes, bytearray, memoryview)):
                raw = bytes(value)
                found = [p for p in ACME_PLAINTEXTS if p.encode() in raw or p.encode("utf-16-le") in raw]
            elif isinstance(value, str):
                found = [p for p in ACME_PLAINTEXTS if p in value]
            else:
                found = [p for p in ACME_PLAINTEXTS if p in str(value)]
            assert not found, f"{found} in clear in {table}.{column}"

    # 2. Every sealed blob she does not legitimately hold stays shut, under every context.
    mine = [sealing.KeyPair(me.sealing_private), sealing.KeyPair(me.signing_seed)]
    # through a team server her machine keeps no store: the same client key, as the admin holds it
    holder = team.admin if isinstance(alice, RemoteVault) else alice
    with holder.store.transaction() as s:
        globex_key = holder.keyholder.client_key(s, globex_id, 1)  # the key she does hold
    symmetric_keys = [globex_key, me.sealing_private, me.signing_seed]
    seal_contexts = _seal_contexts(vault_id, ids)
    sealed_tried = fields_tried = layered_tried = 0
    for table, row in rows:
        if _owned_by(table, row, globex_id, globex_secrets, me.engineer_id):
            continue
        for column, value in row.items():
            if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) < 6 or bytes(value[:1]) != b"\x01":
                continue
            blob, blob_type = bytes(value), value[1]
            if is_layered(blob):  # a data key under a served vault's layer (its server client key)
                layered_tried += 1
                version = blobs.blob_key_version(blob)  # its server client key's
                for key, context in itertools.product(symmetric_keys, _layer_contexts(vault_id, ids)):
                    with pytest.raises(DecryptionFailed):
                        blobs.decrypt_blob(key, BLOB_SERVER_LAYER, version, blob, context)
                continue
            key_version = blobs.blob_key_version(blob)
            if blob_type == 0x04:
                sealed_tried += 1
                for keypair, context in itertools.product(mine, seal_contexts):
                    with pytest.raises(DecryptionFailed):
                        sealing.open_sealed(keypair, key_version, blob, context)
            elif blob_type in (0x01, 0x02, 0x03):
                fields_tried += 1
                for key, context in itertools.product(symmetric_keys, _field_contexts(blob_type, ids)):
                    with pytest.raises(DecryptionFailed):
                        blobs.decrypt_blob(key, blob_type, key_version, blob, context)
    # root seal, acme's recovery and bob's seals, globex's recovery seal, carol's invite
    assert sealed_tried >= 5
    # acme's client fields and secret versions at least (a served vault's data keys under its layer)
    assert fields_tried + layered_tried >= 4 * 3 + 4

    # 3. And through the service she is told nothing either.
    assert [c.slug for c in alice.clients.list()] == ["globex"]
    assert {s.client for s in alice.secrets.list()} == {"globex"}
    for call in (
        lambda: alice.clients.show("acme"),
        lambda: alice.secrets.list("acme"),
        lambda: alice.secrets.show("acme/fw01-admin"),
        lambda: alice.checkouts.reveal("acme/fw01-admin", reason="T-1"),
        lambda: alice.grants.list(client="acme"),
    ):
        with pytest.raises(NotFound) as caught:
            call()
        assert not any(p in str(caught.value) for p in ACME_PLAINTEXTS if p != "acme")
