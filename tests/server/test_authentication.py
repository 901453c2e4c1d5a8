"""Who may call the server: docs/server.md §3's refusals that apply before any noun.

Each attack is an insider's: an engineer with a certified key (alice or bob), or a DBA who
writes rows. Each refusal is asserted as 401, the problem type ``urn:credvault:unauthenticated`` and
the code naming the check, and every table's row count and the audit head unchanged.
"""

from __future__ import annotations

import base64
import time

import httpx
import pytest
from server_harness import JSON, Served, database_state, keyid_of, signed_post, signing_key
from sqlalchemy import create_engine, select, update
from sqlalchemy.pool import NullPool

from vault.authority.engineer_requests import WhoamiAnswer, WhoamiRequest
from vault.crypto.signing import SigningKey
from vault.errors import Locked
from vault.storage import models as m
from vault.transport.https import HttpsTransport
from vault.wire import codec, httpsig

WHOAMI = "/v1/engineers/whoami"


def whoami_body() -> bytes:
    return codec.envelope("engineers.whoami", WhoamiRequest(), b"\x07" * 16)


def assert_refused(served: Served, response: httpx.Response, code: str, before: dict[str, object]) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["type"], problem["status"], problem["error"], problem["code"]) == (
        "urn:credvault:unauthenticated",
        401,
        "Unauthenticated",
        code,
    )
    assert database_state(served.db_url) == before


def test_whoami_end_to_end_through_the_https_transport(served: Served) -> None:
    transport = HttpsTransport(served.url, served.alice.keyholder, ca_file=str(served.ca.ca_file))
    try:
        answer = transport.whoami()
    finally:
        transport.close()
    me = served.alice.keyholder.me()
    assert answer == WhoamiAnswer(me.vault_id, me.engineer_id, "alice", "engineer", me.key_generation)


def test_the_transport_refuses_a_server_its_pinned_ca_did_not_certify(served: Served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from served import name

    key = ec.generate_private_key(ec.SECP256R1())
    other = (
        x509.CertificateBuilder()
        .subject_name(name("another CA"))
        .issuer_name(name("another CA"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(served.admin.core.clock())
        .not_valid_after(served.admin.core.clock().replace(year=2100))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "other-ca.pem"
    pem.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    transport = HttpsTransport(served.url, served.alice.keyholder, ca_file=str(pem))
    try:
        with pytest.raises(Exception) as refused:
            transport.whoami()
    finally:
        transport.close()
    assert type(refused.value).__name__ == "StoreUnavailable"


def test_a_signed_request_is_answered_and_writes_nothing(served: Served) -> None:
    before = database_state(served.db_url)
    response = signed_post(served, WHOAMI, whoami_body(), served.bob)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    answer = codec.open_envelope(response.content, "engineers.whoami.response")
    assert answer.request_id == b"\x07" * 16
    assert isinstance(answer.body, WhoamiAnswer) and answer.body.name == "bob"
    assert database_state(served.db_url) == before


def test_unsigned_is_refused(served: Served) -> None:
    before = database_state(served.db_url)
    with served.client() as client:
        response = client.post(WHOAMI, content=whoami_body(), headers={"Content-Type": JSON})
    assert_refused(served, response, "unsigned", before)


def test_signed_by_another_engineers_key_is_refused(served: Served) -> None:
    before = database_state(served.db_url)
    response = signed_post(served, WHOAMI, whoami_body(), served.alice, key=signing_key(served.bob))
    assert_refused(served, response, "bad-signature", before)


def test_old_key_generation_is_refused(served: Served) -> None:
    before = database_state(served.db_url)
    generation = served.alice.keyholder.me().key_generation
    response = signed_post(served, WHOAMI, whoami_body(), served.alice, keyid=keyid_of(served.alice, generation - 1))
    assert_refused(served, response, "unknown-key", before)


def test_an_engineer_id_the_vault_does_not_hold_is_refused(served: Served) -> None:
    before = database_state(served.db_url)
    response = signed_post(served, WHOAMI, whoami_body(), served.alice, keyid="e:999999:1")
    assert_refused(served, response, "unknown-key", before)


def test_replayed_is_refused(served: Served) -> None:
    body = whoami_body()
    headers = {"Content-Type": JSON} | httpsig.sign_request(
        "POST", served.authority, WHOAMI, JSON, body, signing_key(served.alice), keyid_of(served.alice)
    )
    with served.client() as client:
        assert client.post(WHOAMI, content=body, headers=headers).status_code == 200
        before = database_state(served.db_url)
        again = client.post(WHOAMI, content=body, headers=headers)
    assert_refused(served, again, "replayed", before)


def test_stale_timestamp_is_refused(served: Served) -> None:
    before = database_state(served.db_url)
    response = signed_post(served, WHOAMI, whoami_body(), served.alice, created=int(time.time()) - 120)
    assert_refused(served, response, "stale", before)


def test_timestamp_from_the_future_is_refused(served: Served) -> None:
    before = database_state(served.db_url)
    response = signed_post(served, WHOAMI, whoami_body(), served.alice, created=int(time.time()) + 120)
    assert_refused(served, response, "stale", before)


def _signed(served: Served, body: bytes, path: str = WHOAMI) -> dict[str, str]:
    return {"Content-Type": JSON} | httpsig.sign_request(
        "POST", served.authority, path, JSON, body, signing_key(served.alice), keyid_of(served.alice)
    )


def test_changed_body_is_refused(served: Served) -> None:
    body = whoami_body()
    headers = _signed(served, body)
    changed = codec.envelope("engineers.whoami", WhoamiRequest(), b"\x08" * 16)
    before = database_state(served.db_url)
    with served.client() as client:
        response = client.post(WHOAMI, content=changed, headers=headers)
    assert_refused(served, response, "bad-signature", before)  # the digest no longer matches


def test_changed_body_and_digest_is_refused(served: Served) -> None:
    body = whoami_body()
    changed = codec.envelope("engineers.whoami", WhoamiRequest(), b"\x08" * 16)
    headers = _signed(served, body) | {"Content-Digest": httpsig.content_digest(changed)}
    before = database_state(served.db_url)
    with served.client() as client:
        response = client.post(WHOAMI, content=changed, headers=headers)
    assert_refused(served, response, "bad-signature", before)  # the signature covers the digest


def test_sent_to_another_route_is_refused(served: Served) -> None:
    body = whoami_body()
    headers = _signed(served, body, path="/v1/engineers/list")  # made for another operation
    before = database_state(served.db_url)
    with served.client() as client:
        response = client.post(WHOAMI, content=body, headers=headers)
    assert_refused(served, response, "bad-signature", before)


def test_made_for_another_server_is_refused(served: Served) -> None:
    before = database_state(served.db_url)
    response = signed_post(served, WHOAMI, whoami_body(), served.alice, authority="vault.other.example:8443")
    assert_refused(served, response, "bad-signature", before)


def _raw_signature(served: Served, body: bytes, components: list[tuple[str, str]], alg: str) -> dict[str, str]:
    """Headers of a request signed (validly) over another profile than credvault's."""
    digest = httpsig.content_digest(body)
    params: list[tuple[str, int | str]] = [
        ("created", int(time.time())),
        ("nonce", httpsig.new_nonce()),
        ("keyid", keyid_of(served.alice)),
        ("alg", alg),
        ("tag", httpsig.TAG),
    ]
    base = httpsig.signature_base(components, params)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = signing_key(served.alice).seed
    signature = base64.b64encode(Ed25519PrivateKey.from_private_bytes(seed).sign(base)).decode()
    names = [name for name, _ in components]
    return {
        "Content-Type": JSON,
        "Content-Digest": digest,
        "Signature-Input": f"cv={httpsig.signature_params(names, params)}",
        "Signature": f"cv=:{signature}:",
    }


def test_fewer_covered_components_is_refused(served: Served) -> None:
    body = whoami_body()
    components = [("@method", "POST"), ("@authority", served.authority), ("@path", WHOAMI)]  # no digest, no type
    headers = _raw_signature(served, body, components, httpsig.ALG)
    before = database_state(served.db_url)
    with served.client() as client:
        response = client.post(WHOAMI, content=body, headers=headers)
    assert_refused(served, response, "bad-signature", before)


def test_other_alg_is_refused(served: Served) -> None:
    body = whoami_body()
    digest = httpsig.content_digest(body)
    components = [
        ("@method", "POST"),
        ("@authority", served.authority),
        ("@path", WHOAMI),
        ("content-type", JSON),
        ("content-digest", digest),
    ]
    headers = _raw_signature(served, body, components, "hmac-sha256")
    before = database_state(served.db_url)
    with served.client() as client:
        response = client.post(WHOAMI, content=body, headers=headers)
    assert_refused(served, response, "bad-signature", before)


def test_the_same_profile_signed_this_way_is_accepted(served: Served) -> None:
    """The two tests above build their requests by hand: built this way over credvault's own
    profile, the request is answered (so what refused them is the profile, not the builder)."""
    body = whoami_body()
    digest = httpsig.content_digest(body)
    components = [
        ("@method", "POST"),
        ("@authority", served.authority),
        ("@path", WHOAMI),
        ("content-type", JSON),
        ("content-digest", digest),
    ]
    with served.client() as client:
        response = client.post(WHOAMI, content=body, headers=_raw_signature(served, body, components, httpsig.ALG))
    assert response.status_code == 200, response.text


def test_removed_engineer_is_refused(served: Served, module_team) -> None:  # type: ignore[no-untyped-def]
    leaver = module_team.engineer("leaver")
    key, keyid = signing_key(leaver), keyid_of(leaver)
    assert signed_post(served, WHOAMI, whoami_body(), leaver).status_code == 200
    served.admin.engineers.remove("leaver")
    before = database_state(served.db_url)
    response = signed_post(served, WHOAMI, whoami_body(), leaver, key=key, keyid=keyid)
    assert_refused(served, response, "unknown-key", before)


def test_rewritten_certificate_is_refused(served: Served, module_team) -> None:  # type: ignore[no-untyped-def]
    """A DBA swaps an engineer's signing key for one of their own and keeps the certificate."""
    victim = module_team.engineer("victim")
    dba_key = SigningKey.generate()
    engine = create_engine(served.db_url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(update(m.Engineer).where(m.Engineer.name == "victim").values(signing_public=dba_key.public))
        before = database_state(served.db_url)
        response = signed_post(served, WHOAMI, whoami_body(), victim, key=dba_key)
    finally:
        engine.dispose()
    assert_refused(served, response, "unknown-key", before)


def test_the_transport_raises_the_refusal_as_its_class(served: Served) -> None:
    class Imposter:
        """alice's keyid, bob's key: what a stolen keyid without its key gives."""

        def me(self):  # type: ignore[no-untyped-def]
            return served.alice.keyholder.me()

        def my_signing_key(self) -> SigningKey:
            return signing_key(served.bob)

    transport = HttpsTransport(served.url, Imposter(), ca_file=str(served.ca.ca_file))
    try:
        with pytest.raises(Locked, match=r"^bad-signature$"):
            transport.whoami()
    finally:
        transport.close()


def test_an_organisation_key_the_dba_swapped_in_is_refused(served: Served, module_team) -> None:  # type: ignore[no-untyped-def]
    """A DBA writes their own organisation key into the vault row and certifies a key of theirs for
    an engineer under it: every signature checks out, but the key is on no chain from the one the
    server pinned (here at its first request), so the request is refused and nothing is written."""
    from vault.authority.certificates import certificate_fields
    from vault.crypto.labels import LABEL_SIG_ENGINEER
    from vault.storage.rows import EngineerRow

    target = module_team.engineer("target")
    assert signed_post(served, WHOAMI, whoami_body(), target).status_code == 200  # the server has pinned by now
    dba_org, dba_key = SigningKey.generate(), SigningKey.generate()
    engine = create_engine(served.db_url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            info = conn.execute(select(m.VaultInfo.__table__)).one()
            row = conn.execute(select(m.Engineer.__table__).where(m.Engineer.name == "target")).one()
            forged = EngineerRow(*(getattr(row, f) for f in EngineerRow._fields))._replace(
                signing_public=dba_key.public
            )
            certificate = dba_org.sign(LABEL_SIG_ENGINEER, *certificate_fields(info.vault_id, forged))
            conn.execute(update(m.VaultInfo).values(org_signing_public=dba_org.public))
            conn.execute(
                update(m.Engineer)
                .where(m.Engineer.name == "target")
                .values(signing_public=dba_key.public, certificate=certificate)
            )
        try:
            before = database_state(served.db_url)
            response = signed_post(served, WHOAMI, whoami_body(), target, key=dba_key)
        finally:
            with engine.begin() as conn:
                conn.execute(update(m.VaultInfo).values(org_signing_public=info.org_signing_public))
                conn.execute(
                    update(m.Engineer)
                    .where(m.Engineer.name == "target")
                    .values(signing_public=row.signing_public, certificate=row.certificate)
                )
    finally:
        engine.dispose()
    assert_refused(served, response, "unknown-key", before)
    assert signed_post(served, WHOAMI, whoami_body(), target).status_code == 200  # the vault is as it was


def test_a_schema_credvault_did_not_make_is_a_server_error_not_a_refusal(team) -> None:  # type: ignore[no-untyped-def]
    """A DBA's trigger found while checking the caller is the server's 500 (``TamperedSchema``),
    not a 401 that would send the engineer to unlock again."""
    from server_harness import asgi_call
    from sqlalchemy import text

    from vault.server.app import build_app
    from vault.storage.engine import Store
    from vault.wire.httpsig import MemoryNonceStore

    engine = create_engine(team.url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE copied_rows (x INTEGER)"))
    engine.dispose()
    store = Store(team.url)
    try:
        app = build_app(store, public_url="http://127.0.0.1:8443", nonce_store=MemoryNonceStore())
        body = whoami_body()
        headers = {"Content-Type": JSON} | httpsig.sign_request(
            "POST", "127.0.0.1:8443", WHOAMI, JSON, body, signing_key(team.admin), keyid_of(team.admin)
        )
        response = asgi_call(app, "POST", WHOAMI, content=body, headers=headers)
    finally:
        store.close()
    assert response.status_code == 500
    assert (response.json()["type"], response.json()["error"]) == ("urn:credvault:tampered-schema", "TamperedSchema")
