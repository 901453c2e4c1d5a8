"""A flipped bit in any blob, or a blob moved to another row, client or version, is
rejected with the single opaque DecryptionFailed, and nothing is revealed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select, update

from vault import Vault
from vault.errors import DecryptionFailed, IntegrityError
from vault.storage import models as m


@pytest.fixture
def shared(shared3):  # type: ignore[no-untyped-def]
    """The module's vault in each of ``shared3``'s modes (SQLite, PostgreSQL, through a team server)."""
    return shared3


OPAQUE = str(DecryptionFailed())
# the header's format version and key version, the nonce, the ciphertext, the tag
POSITIONS = (0, 5, 6, 18, -1)
SECRET_COLUMNS = ("password_blob", "metadata_blob", "wrapped_dek")
CLIENT_COLUMNS = ("slug_blob", "name_blob", "lookup_key_blob")
PLAINTEXTS = ("pw-one-v1", "pw-one-v2", "pw-two", "user-one", "Tamper Client")


@dataclass
class Scene:
    c: str
    other: str
    client_id: int
    other_id: int
    one: int  # secret ids
    two: int
    foreign: int
    alice: Vault


@pytest.fixture
def scene(shared) -> Scene:  # type: ignore[no-untyped-def]
    admin, db = shared.admin, shared.db
    c = shared.client("acme", "Tamper Client")
    client_id = db.newest_client_id()
    other = shared.client("globex", "Other Client")
    other_id = db.newest_client_id()
    admin.secrets.add(f"{c}/one", password="pw-one-v1", username="user-one", host="10.0.0.1")
    admin.secrets.update(f"{c}/one", password="pw-one-v2")
    admin.secrets.add(f"{c}/two", password="pw-two", username="user-two")
    admin.secrets.add(f"{other}/one", password="pw-foreign", username="user-foreign")
    alice = shared.engineer("alice")
    admin.grants.grant(alice.engineer_name, c)
    one, two = db.secret_ids(client_id)
    (foreign,) = db.secret_ids(other_id)
    return Scene(c, other, client_id, other_id, one, two, foreign, alice)


@contextlib.contextmanager
def altered(db, model: Any, where: Any, **values: Any) -> Iterator[None]:  # type: ignore[no-untyped-def]
    columns = [getattr(model, name) for name in values]
    (old,) = db.all(select(*columns).where(where))
    db.run(update(model).where(where).values(**values))
    try:
        yield
    finally:
        db.run(update(model).where(where).values(**dict(zip(values, old, strict=True))))


def flip(raw: bytes, index: int) -> bytes:
    out = bytearray(raw)
    out[index] ^= 0x01
    return bytes(out)


def version_where(secret_id: int, version: int) -> Any:
    return (m.SecretVersion.secret_id == secret_id) & (m.SecretVersion.version == version)


def version_blobs(db, secret_id: int, version: int) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    (row,) = db.all(
        select(*(getattr(m.SecretVersion, c) for c in SECRET_COLUMNS)).where(version_where(secret_id, version))
    )
    return dict(zip(SECRET_COLUMNS, row, strict=True))


def assert_opaque_failure(call: Callable[[], Any]) -> None:
    with pytest.raises(DecryptionFailed) as caught:
        call()
    assert type(caught.value) is DecryptionFailed
    assert str(caught.value) == OPAQUE
    assert not any(p in f"{caught.value!r} {caught.value.hint}" for p in PLAINTEXTS)


def _reveal(vault: Vault, ref: str, field: str = "password") -> str:
    return vault.checkouts.reveal(ref, field, reason="T-1")


def test_a_flipped_bit_in_a_secret_version_blob_is_rejected(shared, scene, reopen):
    db, c = shared.db, scene.c
    current = version_blobs(db, scene.one, 2)
    readers = (shared.admin, scene.alice)
    for column in SECRET_COLUMNS:
        for index in POSITIONS:
            with altered(db, m.SecretVersion, version_where(scene.one, 2), **{column: flip(current[column], index)}):
                for vault in readers:
                    assert_opaque_failure(lambda: _reveal(vault, f"{c}/one"))
                if column != "password_blob":  # showing and listing never decrypt the password
                    alice = scene.alice
                    assert_opaque_failure(lambda: alice.secrets.show(f"{c}/one"))
                    assert_opaque_failure(lambda: alice.secrets.list(c))  # no partial list either
                    assert_opaque_failure(lambda: _reveal(alice, f"{c}/one", "username"))
        for broken in (current[column][:-1], current[column][:6], b"", current[column] + b"\x00"):
            with altered(db, m.SecretVersion, version_where(scene.one, 2), **{column: broken}):
                assert_opaque_failure(lambda: _reveal(reopen(scene.alice), f"{c}/one"))
    for vault in readers:  # control: restored, everything reads again
        assert _reveal(vault, f"{c}/one") == "pw-one-v2"
        assert vault.secrets.show(f"{c}/one").username == "user-one"


def test_a_flipped_bit_in_a_client_blob_is_rejected(shared, scene, reopen):
    db, c = shared.db, scene.c
    (row,) = db.all(select(*(getattr(m.Client, col) for col in CLIENT_COLUMNS)).where(m.Client.id == scene.client_id))
    original = dict(zip(CLIENT_COLUMNS, row, strict=True))
    for column in CLIENT_COLUMNS:
        for index in POSITIONS:
            with altered(db, m.Client, m.Client.id == scene.client_id, **{column: flip(original[column], index)}):
                admin, alice = reopen(shared.admin), reopen(scene.alice)
                if column == "lookup_key_blob":
                    for vault in (admin, alice):
                        assert_opaque_failure(lambda: vault.secrets.show(f"{c}/one"))
                        assert_opaque_failure(lambda: _reveal(vault, f"{c}/one"))
                else:
                    assert_opaque_failure(lambda: admin.clients.show(c))
                    assert_opaque_failure(alice.clients.list)
                    if column == "slug_blob":  # an engineer finds the client by its slug
                        assert_opaque_failure(lambda: _reveal(alice, f"{c}/one"))
    assert reopen(scene.alice).clients.show(c).name == "Tamper Client"


def test_a_secret_blob_moved_to_another_row_client_or_version_is_rejected(shared, scene):
    db, c = shared.db, scene.c
    one_v1, one_v2 = version_blobs(db, scene.one, 1), version_blobs(db, scene.one, 2)
    two, foreign = version_blobs(db, scene.two, 1), version_blobs(db, scene.foreign, 1)
    moves = {
        "password from another secret of the client": dict(password_blob=two["password_blob"]),
        "whole version from another secret": two,
        "whole version from another client": foreign,
        "password from another client": dict(password_blob=foreign["password_blob"]),
        "older version's password over the current": dict(password_blob=one_v1["password_blob"]),
        "older version over the current": one_v1,
        "password and metadata swapped": dict(
            password_blob=one_v2["metadata_blob"], metadata_blob=one_v2["password_blob"]
        ),
        "key version changed": dict(key_version=2),
        "key version zero": dict(key_version=0),
    }
    for what, values in moves.items():
        with altered(db, m.SecretVersion, version_where(scene.one, 2), **values):
            for vault in (shared.admin, scene.alice):
                try:
                    assert_opaque_failure(lambda: _reveal(vault, f"{c}/one"))
                except AssertionError as error:
                    raise AssertionError(f"{what}: {error}") from None
    assert _reveal(scene.alice, f"{c}/one") == "pw-one-v2"
    assert _reveal(scene.alice, f"{c}/two") == "pw-two"


def test_a_client_blob_moved_to_another_client_or_purpose_is_rejected(shared, scene, reopen):
    db, c = shared.db, scene.c
    (mine,) = db.all(
        select(m.Client.slug_blob, m.Client.name_blob, m.Client.lookup_key_blob).where(m.Client.id == scene.client_id)
    )
    (theirs,) = db.all(
        select(m.Client.slug_blob, m.Client.name_blob, m.Client.lookup_key_blob).where(m.Client.id == scene.other_id)
    )
    moves = [
        dict(name_blob=theirs[1]),
        dict(slug_blob=theirs[0], name_blob=theirs[1], lookup_key_blob=theirs[2]),
        dict(name_blob=mine[0], slug_blob=mine[1]),
    ]
    for values in moves:
        with altered(db, m.Client, m.Client.id == scene.client_id, **values):
            assert_opaque_failure(lambda: reopen(shared.admin).clients.show(c))
            assert_opaque_failure(reopen(scene.alice).clients.list)
    for values in (dict(lookup_key_blob=mine[1]), dict(lookup_key_blob=theirs[2])):
        with altered(db, m.Client, m.Client.id == scene.client_id, **values):
            assert_opaque_failure(lambda: reopen(shared.admin).secrets.show(f"{c}/one"))
            assert_opaque_failure(lambda: _reveal(reopen(scene.alice), f"{c}/one"))
    # the write key comes from signed client-key records, and the column must agree (issue 12, item 6)
    with (
        altered(db, m.Client, m.Client.id == scene.client_id, current_key_version=2),
        pytest.raises(IntegrityError, match="not its newest admin-signed key version"),
    ):
        reopen(shared.admin).secrets.add(f"{c}/three", password="pw-three")
    assert reopen(scene.alice).clients.show(c).name == "Tamper Client"
