"""repr() and str() of every object that holds or describes keys never show a key,
a password or a passphrase; neither do the errors the library raises."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from sqlalchemy import select, update

from vault import Vault
from vault.crypto import keyrecord, sealing, signing
from vault.crypto.keyrecord import FLOOR
from vault.errors import VaultError
from vault.service import records
from vault.storage import models as m

PASSWORD = "Sup3r-Secret-Pw-Ωmega-77"
PASSPHRASE_MARK = "pass of"  # the shared fixture's passphrases all contain it


def forms(raw: bytes) -> list[str]:
    """Every way a key could be rendered in text."""
    b64 = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    return [
        raw.hex(),
        raw.hex().upper(),
        raw.hex()[:16],
        b64,
        b64.rstrip("="),
        url,
        url.rstrip("="),
        repr(raw)[2:-1][:24],
        base64.b32encode(raw).decode().rstrip("="),
    ]


def assert_hides(obj: Any, secrets: list[bytes], texts: list[str] = ()) -> None:  # type: ignore[assignment]
    for rendering in (repr(obj), str(obj), f"{obj}", f"{obj!r}"):
        for raw in secrets:
            for form in forms(raw):
                assert form not in rendering, f"{type(obj).__name__} shows a key: {rendering!r}"
        for text in texts:
            assert text not in rendering, f"{type(obj).__name__} shows {text!r}: {rendering!r}"


@pytest.fixture
def scene(shared, reveal):  # type: ignore[no-untyped-def]
    c = shared.client("acme", "Acme Ltd")
    shared.admin.secrets.add(f"{c}/fw01", password=PASSWORD, username="u", note="n", fields={"pin": "0042"})
    alice = shared.engineer("alice")
    shared.admin.grants.grant(alice.engineer_name, c)
    assert reveal(alice, f"{c}/fw01") == PASSWORD
    return c, alice


def test_sessions_keys_and_bundles_never_show_their_secrets(shared, scene):
    _, alice = scene
    me = alice.keyholder.me()
    session_secrets = [me.sealing_private, me.signing_seed]
    assert_hides(me, session_secrets, [shared.passphrases[alice.engineer_name]])
    assert_hides(alice, session_secrets, [PASSWORD, PASSPHRASE_MARK])
    assert_hides(
        shared.admin,
        [shared.admin.keyholder.me().sealing_private, shared.admin.keyholder.me().signing_seed],
        [PASSWORD],
    )

    client_id = shared.db.newest_client_id()
    with shared.admin.store.transaction() as s:
        bundle = shared.admin.keyholder.root_bundle(s)
        client_key = shared.admin.keyholder.client_key(s, client_id, 1)
    assert_hides(
        bundle, [bundle.root_secret, bundle.org.seed, bundle.recovery.private, bundle.lookup_key, bundle.to_bytes()]
    )
    assert_hides(bundle.recovery, [bundle.recovery.private])
    assert_hides(bundle.org, [bundle.org.seed])
    assert_hides(shared.admin, [client_key, bundle.root_secret])

    pair, signer = sealing.KeyPair.generate(), signing.SigningKey.generate()
    assert_hides(pair, [pair.private])
    assert_hides(signer, [signer.seed])
    private = keyrecord.PrivateBundle(pair.private, signer.seed, signer.public)
    assert_hides(private, [pair.private, signer.seed])


def test_a_database_password_in_the_url_is_not_shown():
    vault = Vault.open("postgresql+psycopg://credvault:Db-Pw-Hunter2@127.0.0.1:1/vault")
    try:
        assert_hides(vault, [], ["Db-Pw-Hunter2"])
    finally:
        vault.close()


def test_init_result_never_shows_its_recovery_shares(tmp_path):
    url = f"sqlite:///{tmp_path / 'v.db'}"
    vault, result = Vault.create(
        url, admin="root-admin", passphrase="the admin passphrase", kdf_params=FLOOR, shares=(2, 3)
    )
    try:
        assert len(result.shares) == 3
        share_bodies = [share.rsplit("-", 1)[1][:20] for share in result.shares]
        assert_hides(result, [], [*result.shares, *share_bodies, "the admin passphrase"])
    finally:
        vault.close()


def test_record_types_never_show_a_password_or_key(shared, scene, reveal):
    c, alice = scene
    admin = shared.admin
    me = alice.keyholder.me()
    secrets = [me.sealing_private, me.signing_seed]
    texts = [PASSWORD, PASSPHRASE_MARK]
    values: list[Any] = [
        alice.engineers.whoami(),
        admin.clients.show(c),
        *admin.grants.list(client=c),
        admin.secrets.show(f"{c}/fw01"),
        *admin.secrets.list(c),
        *admin.secrets.history(f"{c}/fw01"),
        *admin.engineers.list(),
        alice.checkouts.checkout(f"{c}/fw01", reason="T-1") if hasattr(alice, "checkout") else None,
    ]
    values = [v for v in values if v is not None]
    seen = {type(v).__name__ for v in values}
    assert {"SessionInfo", "ClientInfo", "GrantInfo", "SecretInfo", "VersionInfo", "EngineerInfo"} <= seen
    for value in values:
        assert_hides(value, secrets, texts)
        if hasattr(value, "to_json"):
            assert PASSWORD not in str(value.to_json())
    declared = {name for name, obj in vars(records).items() if dataclasses.is_dataclass(obj)}
    assert {
        "SessionInfo",
        "ClientInfo",
        "GrantInfo",
        "SecretInfo",
        "VersionInfo",
        "EngineerInfo",
        "InitResult",
    } <= declared


def test_errors_never_contain_the_password_or_passphrase(shared, scene, reveal):
    c, alice = scene
    admin, db = shared.admin, shared.db
    name = alice.engineer_name
    passphrase = shared.passphrases[name]
    caught: list[VaultError] = []

    def capture(call: Any) -> None:
        try:
            call()
        except VaultError as error:
            caught.append(error)
        else:
            raise AssertionError("expected an error")

    capture(lambda: shared.open(name).engineers.unlock(name, passphrase + "x"))
    capture(lambda: shared.open(name).engineers.unlock(name, PASSWORD))
    capture(lambda: admin.secrets.add(f"{c}/fw01", password=PASSWORD))  # exists
    capture(lambda: admin.secrets.add(f"{c}/fw02", password=PASSWORD + "\x00"))
    capture(lambda: admin.secrets.add(f"{c}/fw02", password=PASSWORD * 3000))
    capture(lambda: admin.secrets.add(f"{c}/fw02", password=PASSWORD, username=PASSWORD + "\x1b"))
    capture(lambda: admin.secrets.update(f"{c}/fw01", password=PASSWORD, url="https://x", host="y"))
    capture(lambda: reveal(alice, f"{c}/fw01", "host"))
    capture(lambda: alice.checkouts.reveal(f"{c}/fw01", reason=PASSWORD + "\x1b"))
    secret_id = db.secret_ids(db.newest_client_id())[0]
    (blob,) = db.all(select(m.SecretVersion.password_blob).where(m.SecretVersion.secret_id == secret_id))[0]
    db.run(
        update(m.SecretVersion)
        .where(m.SecretVersion.secret_id == secret_id)
        .values(password_blob=blob[:-1] + bytes([blob[-1] ^ 1]))
    )
    try:
        capture(lambda: reveal(alice, f"{c}/fw01"))
    finally:
        db.run(update(m.SecretVersion).where(m.SecretVersion.secret_id == secret_id).values(password_blob=blob))
    assert len(caught) == 10
    for error in caught:
        chain = [error, error.__cause__, error.__context__]
        text = " ".join(f"{e!s} {e!r} {getattr(e, 'hint', '')} {e.args!r}" for e in chain if e is not None)
        assert PASSWORD not in text, f"{type(error).__name__} shows the password"
        assert passphrase not in text, f"{type(error).__name__} shows the passphrase"
