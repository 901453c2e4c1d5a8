"""RFC 9421 response signatures (vault/wire/httpsig_response.py, docs/server.md §3).

The negative tests play whoever sits between the server and the keyholder (a TLS-terminating
proxy, a server that is not the pinned one) or the server replaying one of its own answers.
Where the attack allows it each forged answer is *genuinely signed* (by the server key, under
a profile credvault refuses), so that only the check under test stops it.
"""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.errors import InvalidInput, Locked, UntrustedRecord
from vault.wire import httpsig, httpsig_response
from vault.wire.httpsig import MemoryNonceStore, content_digest, sign_request, verify_request
from vault.wire.httpsig_response import (
    request_signature,
    sign_response,
    signature_base,
    verify_response,
)

NOW = 1_733_400_000
SERVER = ServerSigningKey(1, SigningKey(bytes(range(64, 96))))
OTHER = ServerSigningKey(1, SigningKey(bytes(range(96, 128))))
PIN = (1, SERVER.public)
ALICE = SigningKey(bytes(range(32)))
HOST = "vault.example.net"
BODY = b'{"body":{"seq":7},"request_id":"AAAAAAAAAAAAAAAAAAAAAA","type":"checkouts.checkout.response","v":1}'


def _request(body: bytes = b'{"a":1}', nonce: str = "AAECAwQFBgcICQoLDA0ODw") -> dict[str, str]:
    return sign_request("POST", HOST, "/v1/checkouts/checkout", "application/json", body, ALICE, "e:1:1", NOW, nonce)


REQUEST = _request()
ANOTHER_REQUEST = _request(nonce="DwAODQwLCgkIBwYFBAMCAQ")
REQUEST_SIG = request_signature(REQUEST)


def _sign(status: int = 200, body: bytes = BODY, *, key: ServerSigningKey = SERVER,
          request: dict[str, str] = REQUEST) -> dict[str, str]:
    found = request_signature(request)
    assert found is not None
    return sign_response(status, body, found, key, NOW)


def _verify(headers: object, status: int = 200, body: bytes = BODY, *, request: dict[str, str] = REQUEST,
            pin: tuple[int, bytes] = PIN) -> httpsig_response.VerifiedResponse:
    return verify_response(status, headers, body, request["Signature"], pin)  # type: ignore[arg-type]


def _refusal(headers: object, **kwargs: object) -> UntrustedRecord:
    with pytest.raises(UntrustedRecord) as caught:
        _verify(headers, **kwargs)  # type: ignore[arg-type]
    return caught.value


def _forge(lines: list[tuple[str, str]], params: str, *, label: str = "sv", body: bytes = BODY,
           key: ServerSigningKey = SERVER) -> dict[str, str]:
    """An answer genuinely signed by ``key`` over ``lines`` (serialised identifier, value) and
    ``params`` (the inner list and parameters, serialised): RFC 9421, not credvault's profile."""
    base = "".join(f"{name}: {value}\n" for name, value in lines) + f'"@signature-params": {params}'
    signature = base64.b64encode(httpsig._ed25519_sign(key.key.seed, base.encode())).decode()
    return {"Content-Digest": content_digest(body), "Signature-Input": f"{label}={params}",
            "Signature": f"{label}=:{signature}:"}


STATUS_LINE = ('"@status"', "200")
DIGEST_LINE = ('"content-digest"', content_digest(BODY))
REQ_LINE = ('"signature";req;key="cv"', str(REQUEST_SIG))
FULL = '("@status" "content-digest" "signature";req;key="cv")'
PARAMS = f';created={NOW};keyid="s:1";alg="ed25519";tag="credvault/v1/response"'


# --- the profile -------------------------------------------------------------------------------

def test_the_profile_base_has_the_documented_layout() -> None:
    headers = _sign()
    assert headers["Signature-Input"] == f"sv={FULL}{PARAMS}"
    assert headers["Content-Digest"] == content_digest(BODY)
    base = signature_base(200, content_digest(BODY), str(REQUEST_SIG), NOW, 1)
    assert base.decode().splitlines() == [
        '"@status": 200',
        f'"content-digest": {content_digest(BODY)}',
        f'"signature";req;key="cv": {REQUEST_SIG}',
        f'"@signature-params": {FULL}{PARAMS}',
    ]
    assert REQUEST["Signature"].removeprefix("cv=") == REQUEST_SIG  # the member's value, ":base64:"
    signature = base64.b64decode(headers["Signature"].removeprefix("sv=:").removesuffix(":"))
    Ed25519PublicKey.from_public_bytes(SERVER.public).verify(signature, base)


def test_the_forging_helper_reproduces_the_profile() -> None:
    """The control for every forged answer below: with the profile's own lines it verifies."""
    assert _verify(_forge([STATUS_LINE, DIGEST_LINE, REQ_LINE], FULL + PARAMS)).created == NOW


def test_a_response_base_is_never_a_labelled_context_of_the_same_key() -> None:
    base = signature_base(200, content_digest(BODY), str(REQUEST_SIG), NOW, 1)
    (first_length,) = struct.unpack(">I", base[:4])
    assert first_length > len(base)


def test_a_response_signature_is_never_a_request_signature() -> None:
    """Its base does not start as a request base, and the request verifier refuses its label."""
    base = signature_base(200, content_digest(BODY), str(REQUEST_SIG), NOW, 1)
    assert base.startswith(b'"@status"') and not base.startswith(b'"@method"')
    headers = {"Content-Type": "application/json", **_sign()}
    with pytest.raises(Locked) as caught:
        verify_request("POST", HOST, "/v1/checkouts/checkout", headers, BODY, {"s:1": SERVER.public}.get, NOW,
                       nonces=MemoryNonceStore())
    assert str(caught.value) == httpsig.BAD_SIGNATURE


# --- the round trip -----------------------------------------------------------------------------

@pytest.mark.parametrize("status", [200, 401, 409, 413, 500, 503])
def test_a_signed_response_verifies_whatever_its_status(status: int) -> None:
    verified = _verify(_sign(status), status)
    assert (verified.key_version, verified.created) == (1, NOW)


def test_headers_are_matched_whatever_their_case_and_as_raw_pairs() -> None:
    pairs = [(name.upper(), value) for name, value in _sign().items()] + [("Content-Type", "application/json")]
    assert _verify(pairs).key_version == 1


def test_an_empty_body_is_signed_too() -> None:
    assert _verify(_sign(body=b""), body=b"").created == NOW


# --- tampering ------------------------------------------------------------------------------------

def test_a_changed_body_under_the_old_digest_is_refused() -> None:
    assert "Content-Digest does not match" in str(_refusal(_sign(), body=BODY.replace(b"7", b"8")))


def test_a_changed_body_with_a_recomputed_digest_under_the_old_signature_is_refused() -> None:
    changed = BODY.replace(b"7", b"8")
    headers = _sign() | {"Content-Digest": content_digest(changed)}
    assert "does not verify" in str(_refusal(headers, body=changed))


def test_a_changed_digest_header_is_refused() -> None:
    headers = _sign() | {"Content-Digest": content_digest(b"something else")}
    assert "Content-Digest does not match" in str(_refusal(headers))


@pytest.mark.parametrize(("signed", "shown"), [(200, 409), (409, 200), (503, 500)])
def test_a_changed_status_is_refused(signed: int, shown: int) -> None:
    assert "does not verify" in str(_refusal(_sign(signed), status=shown))


def test_a_response_signed_by_another_key_is_refused() -> None:
    assert "does not verify" in str(_refusal(_sign(key=OTHER)))


def test_a_response_signed_by_another_version_of_the_key_is_refused() -> None:
    newer = ServerSigningKey(2, SERVER.key)  # the same key material, another version
    assert "version 2, not the pinned version 1" in str(_refusal(_sign(key=newer)))
    assert "version 1, not the pinned version 2" in str(_refusal(_sign(), pin=(2, SERVER.public)))


def test_a_response_replayed_to_another_request_is_refused() -> None:
    answer = _sign(request=REQUEST)
    assert _verify(answer, request=REQUEST).created == NOW
    assert "does not verify" in str(_refusal(answer, request=ANOTHER_REQUEST))


@pytest.mark.parametrize("dropped", ["Content-Digest", "Signature-Input", "Signature"])
def test_a_response_without_a_signed_header_is_refused(dropped: str) -> None:
    headers = {name: value for name, value in _sign().items() if name != dropped}
    assert f"lacks {dropped.lower()}" in str(_refusal(headers))


def test_an_unsigned_response_is_refused() -> None:
    assert "lacks content-digest, signature-input, signature" in str(_refusal({"Content-Type": "application/json"}))


@pytest.mark.parametrize("header", ["Content-Digest", "Signature-Input", "Signature"])
def test_a_signed_header_sent_twice_is_refused(header: str) -> None:
    headers = [*list(_sign().items()), (header.lower(), _sign()[header])]
    assert "more than once" in str(_refusal(headers))


def test_an_extra_covered_component_is_refused_though_the_signature_is_good() -> None:
    lines = [STATUS_LINE, ('"content-type"', "application/json"), DIGEST_LINE, REQ_LINE]
    params = '("@status" "content-type" "content-digest" "signature";req;key="cv")' + PARAMS
    assert "not credvault's response profile" in str(_refusal(_forge(lines, params)))


@pytest.mark.parametrize(
    ("lines", "inner"),
    [
        ([STATUS_LINE, DIGEST_LINE], '("@status" "content-digest")'),  # not bound to the request
        ([DIGEST_LINE, REQ_LINE], '("content-digest" "signature";req;key="cv")'),  # status free
        ([STATUS_LINE, REQ_LINE, DIGEST_LINE], '("@status" "signature";req;key="cv" "content-digest")'),
        ([STATUS_LINE, DIGEST_LINE, ('"signature";key="cv";req', str(REQUEST_SIG))],
         '("@status" "content-digest" "signature";key="cv";req)'),
    ],
    ids=["unbound", "no-status", "reordered", "reordered-parameters"],
)
def test_fewer_or_reordered_components_are_refused_though_the_signature_is_good(
    lines: list[tuple[str, str]], inner: str
) -> None:
    assert "not credvault's response profile" in str(_refusal(_forge(lines, inner + PARAMS)))


@pytest.mark.parametrize(
    "params",
    [
        f';created={NOW};keyid="s:1";alg="ed448";tag="credvault/v1/response"',
        f';created={NOW};keyid="s:1";alg="hmac-sha256";tag="credvault/v1/response"',
        f';created={NOW};keyid="s:1";tag="credvault/v1/response"',
        f';created={NOW};keyid="s:1";alg="ed25519";tag="credvault/v1/request"',
        f';created={NOW};keyid="e:1:1";alg="ed25519";tag="credvault/v1/response"',
        f';created={NOW};keyid="s:01";alg="ed25519";tag="credvault/v1/response"',
        f';created={NOW};nonce="AAECAwQFBgcICQoLDA0ODw";keyid="s:1";alg="ed25519";tag="credvault/v1/response"',
        f';keyid="s:1";created={NOW};alg="ed25519";tag="credvault/v1/response"',
        f';created=0{NOW};keyid="s:1";alg="ed25519";tag="credvault/v1/response"',
    ],
    ids=["ed448", "hmac", "no-alg", "request-tag", "engineer-keyid", "padded-version", "extra-nonce",
         "reordered", "padded-created"],
)
def test_other_parameters_are_refused_though_the_signature_is_good(params: str) -> None:
    forged = _forge([STATUS_LINE, DIGEST_LINE, REQ_LINE], FULL + params)
    assert "not credvault's response profile" in str(_refusal(forged))


def test_another_label_is_refused_though_the_signature_is_good() -> None:
    forged = _forge([STATUS_LINE, DIGEST_LINE, REQ_LINE], FULL + PARAMS, label="cv")
    assert "not credvault's response profile" in str(_refusal(forged))


def test_a_truncated_or_non_canonical_signature_is_refused() -> None:
    headers = _sign()
    good = headers["Signature"].removeprefix("sv=:").removesuffix(":")
    assert "not one sv=" in str(_refusal(headers | {"Signature": f"sv=:{good[4:]}:"}))
    assert good[-3] in "AQgw"  # its last character carries 2 bits, the 4 below them zero
    unpadded = f"{good[:-3]}{chr(ord(good[-3]) + 1)}=="  # the same 64 bytes, a low bit set: not canonical
    assert base64.b64decode(unpadded) == base64.b64decode(good)
    assert "canonical" in str(_refusal(headers | {"Signature": f"sv=:{unpadded}:"}))
    assert "not one sv=" in str(_refusal(headers | {"Signature": f"{headers['Signature']}, sv=:{good}:"}))


def test_a_weak_pinned_key_is_refused() -> None:
    identity = bytes([1]) + bytes(31)  # the neutral point: a small-order key
    assert "weak" in str(_refusal(_sign(), pin=(1, identity)))


# --- what the server binds ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Signature": "cv=:short:"},
        {"Signature": REQUEST["Signature"] + ", other=:" + REQUEST["Signature"][4:]},
        [("Signature", REQUEST["Signature"]), ("signature", REQUEST["Signature"])],
        {"Signature": REQUEST["Signature"].replace("cv=", "xx=")},
    ],
    ids=["none", "malformed", "two-members", "two-fields", "other-label"],
)
def test_a_request_without_one_well_formed_signature_binds_nothing(headers: object) -> None:
    assert request_signature(headers) is None  # type: ignore[arg-type]


def test_the_signer_refuses_to_bind_a_malformed_request_signature() -> None:
    with pytest.raises(InvalidInput):
        sign_response(200, BODY, ":short:", SERVER, NOW)
    with pytest.raises(InvalidInput):
        sign_response(200, BODY, str(REQUEST_SIG) + "\n", SERVER, NOW)


def test_the_signature_holds_no_secret() -> None:
    headers = _sign()
    assert SERVER.key.seed.hex() not in repr(headers) and "seed" not in repr(SERVER)
