"""The server signing key and format-3 hashing (vault/crypto/serverkey.py, chain.py;
docs/format.md §5 "Server signing keys", §8.2).

The insider here holds a certified engineer key, database access, or a retired organisation
key: each certificate or signature is moved, re-labelled or made under another key, and must
not verify.
"""

from __future__ import annotations

import pytest

from vault.crypto import blobs, chain, serverkey
from vault.crypto.labels import LABEL_SIG_AUDIT_SERVER, LABEL_SIG_ENGINEER, LABEL_SIG_SERVER_KEY
from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.errors import UntrustedRecord

VAULT = bytes(range(16))
ORG = SigningKey(bytes([7]) * 32)
SERVER = ServerSigningKey(3, SigningKey(bytes([9]) * 32))
AT = 1_733_400_000
SMALL_ORDER = b"\x01" + bytes(31)  # the identity point
FIELDS = (AT, 4, 1, "checkout", 12, 34, 2, b"sealed details", None)
REQUEST_ID, DIGEST, PREV = bytes([5]) * 16, bytes([6]) * 32, bytes([8]) * 32


def _certificate(**change: object) -> dict[str, object]:
    fields: dict[str, object] = {"vault_id": VAULT, "version": 3, "public": SERVER.public, "certified_at": AT}
    fields["certificate"] = serverkey.certify(ORG, VAULT, 3, SERVER.public, AT)
    return fields | change


def _verify(org_public: bytes, fields: dict[str, object]) -> None:
    serverkey.verify_certificate(
        org_public,
        fields["certificate"],  # type: ignore[arg-type]
        fields["vault_id"],  # type: ignore[arg-type]
        fields["version"],  # type: ignore[arg-type]
        fields["public"],  # type: ignore[arg-type]
        fields["certified_at"],  # type: ignore[arg-type]
    )


def test_a_certificate_verifies_under_the_organisation_key() -> None:
    _verify(ORG.public, _certificate())


@pytest.mark.parametrize(
    "change",
    [
        {"vault_id": bytes(16)},
        {"version": 4},
        {"public": ServerSigningKey.generate(3).public},
        {"certified_at": AT - 1},
        {"certificate": None},
        {"certificate": bytes(64)},
    ],
    ids=["another vault", "another version", "public key swapped", "earlier time", "none", "zeros"],
)
def test_a_certificate_over_other_fields_does_not_verify(change: dict[str, object]) -> None:
    with pytest.raises(UntrustedRecord):
        _verify(ORG.public, _certificate(**change))


def test_a_certificate_by_another_key_or_for_another_purpose_does_not_verify() -> None:
    with pytest.raises(UntrustedRecord):
        _verify(SigningKey(bytes([1]) * 32).public, _certificate())  # a retired or rogue organisation key
    relabelled = ORG.sign(LABEL_SIG_ENGINEER, VAULT, 3, SERVER.public, AT)  # an engineer certificate's label
    with pytest.raises(UntrustedRecord):
        _verify(ORG.public, _certificate(certificate=relabelled))


def test_a_small_order_server_key_is_refused_when_certified_and_when_verified() -> None:
    with pytest.raises(UntrustedRecord):
        serverkey.certify(ORG, VAULT, 3, SMALL_ORDER, AT)
    certificate = ORG.sign(LABEL_SIG_SERVER_KEY, VAULT, 3, SMALL_ORDER, AT)
    with pytest.raises(UntrustedRecord):
        serverkey.verify_certificate(ORG.public, certificate, VAULT, 3, SMALL_ORDER, AT)


def test_the_server_signature_binds_vault_version_seq_and_hash() -> None:
    digest = chain.event_hash_v3(VAULT, 10, *FIELDS, request_id=REQUEST_ID, request_digest=DIGEST, prev_hash=PREV)
    signature = SERVER.sign_event(VAULT, 10, digest)
    assert chain.server_signature_valid(SERVER.public, signature, VAULT, 3, 10, digest)
    codec = chain.EventCodec(VAULT)
    assert codec.server_signature_valid(SERVER.public, signature, 3, 10, digest)
    for public, vault, version, seq, hashed in [
        (ServerSigningKey.generate(3).public, VAULT, 3, 10, digest),
        (SERVER.public, bytes(16), 3, 10, digest),
        (SERVER.public, VAULT, 2, 10, digest),
        (SERVER.public, VAULT, 3, 11, digest),
        (SERVER.public, VAULT, 3, 10, PREV),
    ]:
        assert not chain.server_signature_valid(public, signature, vault, version, seq, hashed)
        assert not chain.EventCodec(vault).server_signature_valid(public, signature, version, seq, hashed)


def test_an_engineers_event_signature_is_not_a_server_signature_and_back() -> None:
    """Same key, same (vault, seq, hash): the labels keep the two signatures apart."""
    digest = bytes([3]) * 32
    engineer_sig = chain.sign_event(SERVER.key.seed, VAULT, 10, digest)
    assert not chain.server_signature_valid(SERVER.public, engineer_sig, VAULT, 3, 10, digest)
    server_sig = SERVER.sign_event(VAULT, 10, digest)
    assert not chain.EventCodec(VAULT).signature_valid(SERVER.public, server_sig, 10, digest)
    assert chain.server_signature_message(VAULT, 3, 10, digest).startswith(
        len(LABEL_SIG_AUDIT_SERVER).to_bytes(4, "big") + LABEL_SIG_AUDIT_SERVER
    )


def test_the_format_3_hash_differs_from_format_2_and_covers_the_request() -> None:
    v3 = chain.event_hash_v3(VAULT, 10, *FIELDS, request_id=REQUEST_ID, request_digest=DIGEST, prev_hash=PREV)
    assert v3 != chain.event_hash(VAULT, 10, *FIELDS, prev_hash=PREV)
    assert v3 != chain.event_hash_v3(VAULT, 10, *FIELDS, request_id=bytes(16), request_digest=DIGEST, prev_hash=PREV)
    assert v3 != chain.event_hash_v3(VAULT, 10, *FIELDS, request_id=REQUEST_ID, request_digest=PREV, prev_hash=PREV)
    # the request's id and digest in each other's place: typed items, a different encoding
    swapped = chain.event_hash_v3(VAULT, 10, *FIELDS, request_id=DIGEST, request_digest=REQUEST_ID, prev_hash=PREV)
    assert v3 != swapped


@pytest.mark.parametrize("details_json", [None, "", '{"k": "é"}'])
def test_the_unrolled_format_3_hash_is_the_reference_one(details_json: str | None) -> None:
    fields = (*FIELDS[:-1], details_json)
    reference = chain.event_hash_v3(VAULT, 10, *fields, request_id=REQUEST_ID, request_digest=DIGEST, prev_hash=PREV)
    assert chain.EventCodec(VAULT).audit_event_hash_v3((10, *fields), REQUEST_ID, DIGEST, PREV) == reference


def test_a_server_key_never_shows_its_seed() -> None:
    assert SERVER.key.seed.hex() not in repr(SERVER) and "version=3" in repr(SERVER)
    with pytest.raises(ValueError):
        ServerSigningKey(0, SERVER.key)
    with pytest.raises(TypeError):
        ServerSigningKey(1, SERVER.key.seed)  # type: ignore[arg-type]


def test_format_3_details_open_only_with_their_request_and_never_as_format_2(rejects) -> None:  # type: ignore[no-untyped-def]
    """The details a keyholder sealed for one request: moved to another request, another client
    or action, or read as a format-2 blob (bound to a seq) they do not open, and back."""
    key, plain = bytes([40]) * 32, b'{"reason": "T-7"}'
    blob = blobs.encrypt_audit_detail_v3(key, 2, plain, 12, REQUEST_ID, "checkout")
    assert blobs.decrypt_audit_detail_v3(key, 2, blob, 12, REQUEST_ID, "checkout") == plain
    rejects(lambda: blobs.decrypt_audit_detail_v3(key, 2, blob, 12, bytes(16), "checkout"), plain, key)
    rejects(lambda: blobs.decrypt_audit_detail_v3(key, 2, blob, 13, REQUEST_ID, "checkout"), plain, key)
    rejects(lambda: blobs.decrypt_audit_detail_v3(key, 2, blob, 12, REQUEST_ID, "reveal"), plain, key)
    rejects(lambda: blobs.decrypt_audit_detail(key, 2, blob, 12, 10, "checkout"), plain, key)
    old = blobs.encrypt_audit_detail(key, 2, plain, 12, 10, "checkout")
    rejects(lambda: blobs.decrypt_audit_detail_v3(key, 2, old, 12, REQUEST_ID, "checkout"), plain, key)
