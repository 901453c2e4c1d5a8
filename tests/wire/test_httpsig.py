"""RFC 9421 request signatures (vault/wire/httpsig.py, docs/server.md §3).

The negative tests play the insider: an engineer with a certified key who captured another
request (a proxy log, a packet dump), or who holds a key of her own. Each forged request is
*genuinely signed* where the attack allows it, so that only the check under test stops it;
each test asserts the refusal's code and the hint naming that check.
"""

from __future__ import annotations

import base64
import json
import struct
import time

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.crypto.signing import SigningKey
from vault.errors import Locked
from vault.wire import httpsig
from vault.wire.httpsig import (
    BAD_SIGNATURE,
    REPLAYED,
    STALE,
    UNKNOWN_KEY,
    UNSIGNED,
    MemoryNonceStore,
    Verified,
    content_digest,
    sign_request,
    signature_base,
    signature_params,
    verify_request,
)


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# RFC 9421 Appendix B.1.4 (test-key-ed25519), as JWK "d" and "x".
RFC_SEED = _b64url("n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU")
RFC_PUBLIC = _b64url("JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs")
# RFC 9421 Appendix B.2.6: the signature base and signature of the test request.
RFC_B26_BASE = (
    b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    b'"@method": POST\n'
    b'"@path": /foo\n'
    b'"@authority": example.com\n'
    b'"content-type": application/json\n'
    b'"content-length": 18\n'
    b'"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")'
    b';created=1618884473;keyid="test-key-ed25519"'
)
RFC_B26_SIGNATURE = (
    "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
)

NOW = 1_733_400_000
ALICE = SigningKey(bytes(range(32)))
MALLORY = SigningKey(bytes(range(32, 64)))
KEYS = {"e:1:1": ALICE.public, "e:2:1": MALLORY.public}
HOST = "vault.example.net"
PATH = "/v1/checkouts/checkout"
BODY = json.dumps({"type": "checkout", "client": 7, "request_id": "r-1"}).encode()
NONCE = "AAECAwQFBgcICQoLDA0ODw"


def _sign(body: bytes = BODY, *, key: SigningKey = ALICE, keyid: str = "e:1:1", created: int = NOW,
          nonce: str = NONCE, path: str = PATH, host: str = HOST) -> dict[str, str]:
    headers = sign_request("POST", host, path, "application/json", body, key, keyid, created, nonce)
    return {"Content-Type": "application/json", **headers}


def _verify(headers: object, body: bytes = BODY, *, now: float = NOW, path: str = PATH,
            host: str = HOST, method: str = "POST", nonces: MemoryNonceStore | None = None) -> Verified:
    store = nonces if nonces is not None else MemoryNonceStore(clock=lambda: now)
    return verify_request(method, host, path, headers, body, KEYS.get, now, nonces=store)  # type: ignore[arg-type]


def _refusal(headers: object, **kwargs: object) -> Locked:
    with pytest.raises(Locked) as caught:
        _verify(headers, **kwargs)  # type: ignore[arg-type]
    return caught.value


def _forge(key: SigningKey, names: list[str], values: list[str], params: list[httpsig.Param],
           label: str = "cv") -> dict[str, str]:
    """A request signed correctly under RFC 9421 but under a profile credvault refuses."""
    base = signature_base(list(zip(names, values, strict=True)), params)
    signature = base64.b64encode(httpsig._ed25519_sign(key.seed, base)).decode()
    return {
        "Content-Type": "application/json",
        "Content-Digest": content_digest(BODY),
        "Signature-Input": f"{label}={signature_params(names, params)}",
        "Signature": f"{label}=:{signature}:",
    }


FULL = ["@method", "@authority", "@path", "content-type", "content-digest"]
FULL_VALUES = ["POST", HOST, PATH, "application/json", content_digest(BODY)]
PARAMS: list[httpsig.Param] = [("created", NOW), ("nonce", NONCE), ("keyid", "e:1:1"), ("alg", "ed25519"),
                               ("tag", "credvault/v1/request")]


# --- the standards' own vectors ------------------------------------------------------------

def test_rfc9421_b26_signature_base_is_byte_exact() -> None:
    components = [("date", "Tue, 20 Apr 2021 02:07:55 GMT"), ("@method", "POST"), ("@path", "/foo"),
                  ("@authority", "example.com"), ("content-type", "application/json"),
                  ("content-length", "18")]
    base = signature_base(components, [("created", 1618884473), ("keyid", "test-key-ed25519")])
    assert base == RFC_B26_BASE


def test_rfc9421_b26_signature_is_byte_exact_and_verifies() -> None:
    assert SigningKey(RFC_SEED).public == RFC_PUBLIC
    signature = httpsig._ed25519_sign(RFC_SEED, RFC_B26_BASE)
    assert base64.b64encode(signature).decode() == RFC_B26_SIGNATURE
    assert httpsig._ed25519_verify(RFC_PUBLIC, signature, RFC_B26_BASE)
    assert not httpsig._ed25519_verify(RFC_PUBLIC, signature, RFC_B26_BASE.replace(b"/foo", b"/bar"))


def test_rfc9530_content_digest_of_hello_world() -> None:
    assert content_digest(b'{"hello": "world"}') == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"


def test_the_profile_base_has_the_documented_layout() -> None:
    headers = _sign()
    params = headers["Signature-Input"].removeprefix("cv=")
    assert headers["Signature-Input"] == (
        'cv=("@method" "@authority" "@path" "content-type" "content-digest");created=1733400000;'
        f'nonce="{NONCE}";keyid="e:1:1";alg="ed25519";tag="credvault/v1/request"'
    )
    base = signature_base(list(zip(FULL, FULL_VALUES, strict=True)), PARAMS)
    assert base.decode().splitlines() == [
        '"@method": POST',
        f'"@authority": {HOST}',
        f'"@path": {PATH}',
        '"content-type": application/json',
        f'"content-digest": {content_digest(BODY)}',
        f'"@signature-params": {params}',
    ]
    signature = base64.b64decode(headers["Signature"].removeprefix("cv=:").removesuffix(":"))
    Ed25519PublicKey.from_public_bytes(ALICE.public).verify(signature, base)


def test_a_base_is_never_a_labelled_context_of_the_same_key() -> None:
    base = signature_base(list(zip(FULL, FULL_VALUES, strict=True)), PARAMS)
    (first_length,) = struct.unpack(">I", base[:4])
    assert first_length > len(base)


# --- the round trip --------------------------------------------------------------------------

def test_a_signed_request_verifies_and_says_who_when_and_which_nonce() -> None:
    headers = _sign()
    verified = _verify(headers)
    assert (verified.keyid, verified.created, verified.nonce) == ("e:1:1", NOW, NONCE)
    assert base64.b64encode(verified.signature).decode() in headers["Signature"]
    assert headers["Signature-Input"] == f"cv={verified.signature_params}"


def test_headers_are_matched_whatever_their_case_and_as_raw_pairs() -> None:
    headers = {name.lower(): value for name, value in _sign().items()}
    assert _verify(headers).keyid == "e:1:1"
    assert _verify(list(_sign(nonce="BBECAwQFBgcICQoLDA0ODw").items())).nonce == "BBECAwQFBgcICQoLDA0ODw"


def test_the_authority_is_compared_in_lower_case() -> None:
    assert _verify(_sign(host="Vault.Example.NET")).keyid == "e:1:1"


def test_fresh_nonces_are_random_and_of_the_profile_form() -> None:
    first = sign_request("POST", HOST, PATH, "application/json", BODY, ALICE, "e:1:1")
    second = sign_request("POST", HOST, PATH, "application/json", BODY, ALICE, "e:1:1")
    assert first["Signature-Input"] != second["Signature-Input"]
    store = MemoryNonceStore()
    for headers in (first, second):
        verify_request("POST", HOST, PATH, {"content-type": "application/json", **headers}, BODY,
                       KEYS.get, time.time(), nonces=store)


# --- unsigned ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dropped", ["Content-Digest", "Signature-Input", "Signature", "Content-Type"])
def test_a_request_without_a_signed_header_is_unsigned(dropped: str) -> None:
    headers = _sign()
    del headers[dropped]
    error = _refusal(headers)
    assert str(error) == UNSIGNED
    assert dropped.lower() in error.hint


def test_a_request_with_no_headers_at_all_is_unsigned() -> None:
    assert str(_refusal({})) == UNSIGNED


# --- bad-signature: the body, the digest, the covered values ---------------------------------

def test_a_changed_body_under_the_old_digest_is_refused() -> None:
    error = _refusal(_sign(), body=BODY.replace(b'"client": 7', b'"client": 8'))
    assert str(error) == BAD_SIGNATURE
    assert "Content-Digest" in error.hint


def test_a_changed_body_with_a_recomputed_digest_under_the_old_signature_is_refused() -> None:
    changed = BODY.replace(b'"client": 7', b'"client": 8')
    headers = {**_sign(), "Content-Digest": content_digest(changed)}
    error = _refusal(headers, body=changed)
    assert str(error) == BAD_SIGNATURE
    assert "does not verify" in error.hint


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("path", {"path": "/v1/grants/grant"}),
        ("authority", {"host": "vault.other.example"}),
        ("method", {"method": "PUT"}),
    ],
)
def test_a_request_replayed_to_another_route_server_or_method_is_refused(where: str, change: dict[str, str]) -> None:
    error = _refusal(_sign(), **change)
    assert str(error) == BAD_SIGNATURE, where
    assert "does not verify" in error.hint


def test_a_changed_content_type_is_refused() -> None:
    headers = {**_sign(), "Content-Type": "text/plain"}
    assert "does not verify" in _refusal(headers).hint


def test_a_content_type_smuggling_an_extra_base_line_is_refused() -> None:
    headers = {**_sign(), "Content-Type": 'application/json\n"@path": /v1/checkouts/checkout'}
    error = _refusal(headers)
    assert str(error) == BAD_SIGNATURE
    assert "plain field value" in error.hint


def test_another_engineers_keyid_with_this_engineers_signature_is_refused() -> None:
    # Mallory signs with her own key but names Alice's keyid, to act as Alice.
    headers = _sign(key=MALLORY, keyid="e:1:1")
    error = _refusal(headers)
    assert str(error) == BAD_SIGNATURE
    assert "does not verify" in error.hint
    assert _verify(_sign(key=MALLORY, keyid="e:2:1")).keyid == "e:2:1"  # her own keyid works


def test_a_signature_swapped_in_from_another_request_is_refused() -> None:
    other = _sign(nonce="BBECAwQFBgcICQoLDA0ODw")
    headers = {**_sign(), "Signature": other["Signature"]}
    assert "does not verify" in _refusal(headers).hint


# --- bad-signature: any profile but the one ----------------------------------------------------

def test_a_request_covering_fewer_components_is_refused_though_its_signature_is_good() -> None:
    names, values = FULL[:3], FULL_VALUES[:3]  # no content-type, no content-digest
    headers = _forge(ALICE, names, values, PARAMS)
    error = _refusal(headers)
    assert str(error) == BAD_SIGNATURE
    assert "profile" in error.hint


def test_reordered_components_are_refused_though_the_signature_is_good() -> None:
    order = [1, 0, 2, 3, 4]
    headers = _forge(ALICE, [FULL[i] for i in order], [FULL_VALUES[i] for i in order], PARAMS)
    assert "profile" in _refusal(headers).hint


def test_reordered_parameters_are_refused_though_the_signature_is_good() -> None:
    params = [PARAMS[2], PARAMS[0], PARAMS[1], PARAMS[3], PARAMS[4]]
    assert "profile" in _refusal(_forge(ALICE, FULL, FULL_VALUES, params)).hint


@pytest.mark.parametrize(
    "params",
    [
        [p for p in PARAMS if p[0] != "alg"],
        [(k, "rsa-pss-sha512") if k == "alg" else (k, v) for k, v in PARAMS],
        [p for p in PARAMS if p[0] != "tag"],
        [p for p in PARAMS if p[0] != "nonce"],
        [*PARAMS, ("expires", NOW + 3600)],
    ],
    ids=["no-alg", "other-alg", "no-tag", "no-nonce", "extra-param"],
)
def test_other_parameters_are_refused_though_the_signature_is_good(params: list[httpsig.Param]) -> None:
    assert "profile" in _refusal(_forge(ALICE, FULL, FULL_VALUES, params)).hint


def test_another_label_is_refused_though_the_signature_is_good() -> None:
    assert "profile" in _refusal(_forge(ALICE, FULL, FULL_VALUES, PARAMS, label="sig1")).hint


def test_a_created_with_leading_zeros_is_refused() -> None:
    headers = _sign()
    headers["Signature-Input"] = headers["Signature-Input"].replace("created=", "created=0")
    assert "profile" in _refusal(headers).hint


@pytest.mark.parametrize("header", ["Signature-Input", "Signature", "Content-Digest"])
def test_a_signed_header_sent_twice_is_refused(header: str) -> None:
    good = _sign()
    other = _sign(nonce="BBECAwQFBgcICQoLDA0ODw", key=MALLORY, keyid="e:2:1")
    for pairs in ([(header.lower(), other[header]), *good.items()], [*good.items(), (header, other[header])]):
        error = _refusal(pairs)
        assert str(error) == BAD_SIGNATURE
        assert "more than once" in error.hint


def test_two_signatures_joined_in_one_field_are_refused() -> None:
    good, other = _sign(), _sign(nonce="BBECAwQFBgcICQoLDA0ODw")
    headers = {**good, "Signature-Input": f'{good["Signature-Input"]}, {other["Signature-Input"]}'}
    assert "profile" in _refusal(headers).hint
    headers = {**good, "Signature": f'{good["Signature"]}, {other["Signature"]}'}
    assert "one cv=" in _refusal(headers).hint


def test_a_second_digest_algorithm_beside_the_first_is_refused() -> None:
    headers = {**_sign(), "Content-Digest": f"{content_digest(BODY)}, sha-512=:AAAA:"}
    assert "Content-Digest" in _refusal(headers).hint


def test_a_truncated_or_non_canonical_signature_is_refused() -> None:
    headers = _sign()
    value = headers["Signature"]
    assert "one cv=" in _refusal({**headers, "Signature": value[:-4] + "=:"}).hint
    raw = base64.b64decode(value[4:-1])
    # The last base64 digit carries 4 spare bits; set one: same bytes, another spelling.
    text = base64.b64encode(raw).decode()
    spare = text[:85] + chr(ord(text[85]) + 1) + "=="
    assert base64.b64decode(spare) == raw
    assert "canonical" in _refusal({**headers, "Signature": f"cv=:{spare}:"}).hint


# --- unknown-key -------------------------------------------------------------------------------

def test_a_keyid_with_no_key_is_refused() -> None:
    error = _refusal(_sign(keyid="e:9:1"))
    assert str(error) == UNKNOWN_KEY


def test_a_small_order_key_put_in_the_row_is_refused() -> None:
    # A DBA sets an engineer's signing key to the identity point, under which the
    # signature (R = identity, S = 0) verifies for any message by the bare equation.
    identity = b"\x01" + bytes(31)
    forged = identity + bytes(32)
    headers = _sign()
    base = signature_base(list(zip(FULL, FULL_VALUES, strict=True)), PARAMS)
    assert httpsig._ed25519_verify(identity, forged, base)  # the bare primitive lets it through
    headers["Signature"] = f"cv=:{base64.b64encode(forged).decode()}:"
    with pytest.raises(Locked) as caught:
        verify_request("POST", HOST, PATH, headers, BODY, lambda keyid: identity, NOW,
                       nonces=MemoryNonceStore(clock=lambda: NOW))
    assert str(caught.value) == UNKNOWN_KEY


def test_the_key_lookup_sees_the_keyid_as_signed() -> None:
    asked: list[str] = []

    def lookup(keyid: str) -> bytes | None:
        asked.append(keyid)
        return KEYS.get(keyid)

    verify_request("POST", HOST, PATH, _sign(keyid="e:2:1", key=MALLORY), BODY, lookup, NOW,
                   nonces=MemoryNonceStore(clock=lambda: NOW))
    assert asked == ["e:2:1"]


# --- stale -------------------------------------------------------------------------------------

@pytest.mark.parametrize("offset", [-3600, -61, 61, 3600], ids=["hour-old", "61s-old", "61s-ahead", "hour-ahead"])
def test_a_request_created_outside_the_window_is_stale(offset: int) -> None:
    error = _refusal(_sign(created=NOW + offset))
    assert str(error) == STALE


@pytest.mark.parametrize("offset", [-60, 60])
def test_a_request_at_the_edge_of_the_window_is_accepted(offset: int) -> None:
    assert _verify(_sign(created=NOW + offset)).created == NOW + offset


def test_a_stale_request_spends_no_nonce() -> None:
    store = MemoryNonceStore(clock=lambda: NOW)
    with pytest.raises(Locked):
        _verify(_sign(created=NOW - 3600), nonces=store)
    assert len(store) == 0


# --- replayed ----------------------------------------------------------------------------------

def test_a_captured_request_replayed_is_refused() -> None:
    store = MemoryNonceStore(clock=lambda: NOW)
    headers = _sign()
    _verify(headers, nonces=store)
    with pytest.raises(Locked) as caught:
        _verify(headers, nonces=store, now=NOW + 30)
    assert str(caught.value) == REPLAYED


def test_a_replay_after_the_store_forgot_the_nonce_is_stale() -> None:
    clock = [float(NOW)]
    store = MemoryNonceStore(clock=lambda: clock[0])
    headers = _sign()
    _verify(headers, nonces=store)
    clock[0] = NOW + 121
    assert store.remember("e:1:1", "CCECAwQFBgcICQoLDA0ODw", NOW + 121)
    assert len(store) == 1  # the first nonce is forgotten …
    with pytest.raises(Locked) as caught:
        _verify(headers, nonces=store, now=clock[0])
    assert str(caught.value) == STALE  # … and its request is refused as stale


def test_the_store_keeps_a_nonce_while_its_request_could_replay() -> None:
    clock = [float(NOW)]
    store = MemoryNonceStore(clock=lambda: clock[0])
    headers = _sign(created=NOW + 60)  # from the edge of the future
    _verify(headers, nonces=store)
    clock[0] = NOW + 120  # the last second at which it is still fresh
    with pytest.raises(Locked) as caught:
        _verify(headers, nonces=store, now=clock[0])
    assert str(caught.value) == REPLAYED


def test_a_refused_signature_spends_no_nonce() -> None:
    # An engineer who forges Alice's keyid cannot burn the nonce of Alice's next request.
    store = MemoryNonceStore(clock=lambda: NOW)
    with pytest.raises(Locked):
        _verify(_sign(key=MALLORY, keyid="e:1:1"), nonces=store)
    assert _verify(_sign(), nonces=store).nonce == NONCE


def test_nonces_are_per_keyid() -> None:
    store = MemoryNonceStore(clock=lambda: NOW)
    _verify(_sign(), nonces=store)
    assert _verify(_sign(key=MALLORY, keyid="e:2:1"), nonces=store).keyid == "e:2:1"


# --- values the signer refuses -----------------------------------------------------------------

@pytest.mark.parametrize("nonce", ["short", "A" * 23, "AAECAwQFBgcICQoLDA0OD+"])
def test_the_signer_refuses_a_nonce_of_another_form(nonce: str) -> None:
    from vault.errors import InvalidInput

    with pytest.raises(InvalidInput):
        sign_request("POST", HOST, PATH, "application/json", BODY, ALICE, "e:1:1", NOW, nonce)


@pytest.mark.parametrize("keyid", ['e:1:1";alg="rsa-pss-sha512', "e:1:1\\", "e:1:1\n", ""])
def test_the_signer_refuses_a_keyid_that_would_rewrite_the_parameters(keyid: str) -> None:
    from vault.errors import InvalidInput

    with pytest.raises(InvalidInput):
        sign_request("POST", HOST, PATH, "application/json", BODY, ALICE, keyid, NOW, NONCE)


def test_the_raw_verifier_refuses_a_wrong_signature() -> None:
    signature = httpsig._ed25519_sign(ALICE.seed, b"message")
    assert not httpsig._ed25519_verify(MALLORY.public, signature, b"message")
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(MALLORY.public).verify(signature, b"message")
