"""Signatures, fingerprints, lookup tags and enrolment codes (docs/format.md §4.7, §5)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import traceback
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.crypto import _primitives as p
from vault.crypto import signing
from vault.crypto.labels import (
    LABEL_ENROLL_MAC,
    LABEL_FP_CLIENT_KEY,
    LABEL_FP_ENGINEER,
    LABEL_FP_ORG,
    LABEL_ROOT_LOOKUP,
    LABEL_ROOT_RECOVERY,
    LABEL_SIG_CLIENT_KEY,
    LABEL_SIG_ENGINEER,
    LABEL_SIG_GRANT,
    LABEL_TAG_CLIENT_SLUG,
    LABEL_TAG_SECRET_NAME,
)
from vault.crypto.signing import SigningKey
from vault.errors import EnrolmentError, UntrustedRecord

VAULT_ID = bytes.fromhex("a5a5a5a5000011112222333344445555")
ORG = SigningKey(bytes.fromhex("0e" * 16 + "f1" * 16))
ADMIN = SigningKey(bytes.fromhex("4d" * 16 + "5e" * 16))
OTHER_ADMIN = SigningKey(bytes.fromhex("6f" * 16 + "70" * 16))
SEALING_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
CLIENT_KEY = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
INVITE_SECRET = bytes.fromhex("9f3c2a71e4d05b86c1a7f0e29d4b3c58")
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

# (name, signer, label, fields) for the three signed records of docs/format.md §5.
RECORDS = [
    (
        "engineer-certificate",
        ORG,
        LABEL_SIG_ENGINEER,
        (VAULT_ID, 9, "Ada Lovelace", "admin", "active", 1, SEALING_PUBLIC, ADMIN.public, 1_700_000_000),
    ),
    (
        "client-key-version",
        ADMIN,
        LABEL_SIG_CLIENT_KEY,
        (VAULT_ID, 11, 3, signing.client_key_fingerprint(CLIENT_KEY), 1_700_000_100),
    ),
    ("grant", ADMIN, LABEL_SIG_GRANT, (VAULT_ID, 21, 9, SEALING_PUBLIC, 11, 1_700_000_200, 0)),
]
by_record = pytest.mark.parametrize(("name", "signer", "label", "fields"), RECORDS, ids=[r[0] for r in RECORDS])


def _changed(item: object) -> object:
    if isinstance(item, bytes):
        return item[:-1] + bytes([item[-1] ^ 1])
    if isinstance(item, int):
        return item + 1
    assert isinstance(item, str)
    return {"admin": "engineer", "active": "disabled"}.get(item, item + " ")


def _untrusted(call: Callable[[], object], *secrets: bytes) -> UntrustedRecord:
    with pytest.raises(UntrustedRecord) as info:
        call()
    exc = info.value
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
    shown = "".join(traceback.format_exception(exc))
    assert "InvalidSignature" not in shown and "cryptography" not in shown
    for secret in secrets:
        assert secret.hex() not in shown and secret.hex() not in str(exc)
    return exc


# -- signatures ---------------------------------------------------------------------------------


@by_record
def test_signed_record_verifies(name: str, signer: SigningKey, label: bytes, fields: tuple) -> None:
    signature = signer.sign(label, *fields)
    assert len(signature) == 64
    signing.verify(signer.public, signature, label, *fields, what=name)


@by_record
def test_signatures_are_deterministic(name: str, signer: SigningKey, label: bytes, fields: tuple) -> None:
    assert signer.sign(label, *fields) == signer.sign(label, *fields)


@by_record
def test_signed_record_matches_the_format_spec(name: str, signer: SigningKey, label: bytes, fields: tuple) -> None:
    p.ed25519_verify(signer.public, signer.sign(label, *fields), p.ctx(label, *fields))


LABELS = [LABEL_SIG_ENGINEER, LABEL_SIG_CLIENT_KEY, LABEL_SIG_GRANT, LABEL_ENROLL_MAC, b""]
CROSS = [(r, other) for r in RECORDS for other in LABELS if other != r[2]]


@pytest.mark.parametrize(("record", "other_label"), CROSS, ids=[f"{r[0]}-as-{o.decode() or 'empty'}" for r, o in CROSS])
def test_signature_over_one_label_does_not_verify_under_another(
    record: tuple[str, SigningKey, bytes, tuple], other_label: bytes
) -> None:
    name, signer, label, fields = record
    signature = signer.sign(label, *fields)
    exc = _untrusted(lambda: signing.verify(signer.public, signature, other_label, *fields, what=name), signer.seed)
    assert "invalid signature" in str(exc)


FIELD_CHANGES = [(r, i) for r in RECORDS for i in range(len(r[3]))]


@pytest.mark.parametrize(("record", "index"), FIELD_CHANGES, ids=[f"{r[0]}-field{i}" for r, i in FIELD_CHANGES])
def test_signed_record_with_any_field_changed_is_untrusted(
    record: tuple[str, SigningKey, bytes, tuple], index: int
) -> None:
    name, signer, label, fields = record
    signature = signer.sign(label, *fields)
    changed = (*fields[:index], _changed(fields[index]), *fields[index + 1 :])
    exc = _untrusted(lambda: signing.verify(signer.public, signature, label, *changed, what=name), signer.seed)
    assert name in str(exc)
    assert signature.hex() not in str(exc)


@by_record
def test_signed_record_with_a_field_dropped_or_added_is_untrusted(
    name: str, signer: SigningKey, label: bytes, fields: tuple
) -> None:
    signature = signer.sign(label, *fields)
    _untrusted(lambda: signing.verify(signer.public, signature, label, *fields[:-1], what=name))
    _untrusted(lambda: signing.verify(signer.public, signature, label, *fields, None, what=name))


@by_record
def test_signature_by_another_key_is_untrusted(name: str, signer: SigningKey, label: bytes, fields: tuple) -> None:
    signature = OTHER_ADMIN.sign(label, *fields)
    _untrusted(lambda: signing.verify(signer.public, signature, label, *fields, what=name), OTHER_ADMIN.seed)


@pytest.mark.parametrize(
    "offset", [0, 16, 31, 32, 48, 63], ids=["R-first", "R-middle", "R-last", "S-first", "S-middle", "S-last"]
)
@pytest.mark.parametrize("bit", [0x01, 0x80])
def test_signature_with_a_flipped_bit_is_untrusted(offset: int, bit: int) -> None:
    name, signer, label, fields = RECORDS[2]
    signature = bytearray(signer.sign(label, *fields))
    signature[offset] ^= bit
    _untrusted(lambda: signing.verify(signer.public, bytes(signature), label, *fields, what=name))


@pytest.mark.parametrize("length", [1, 32, 63, 65, 128])
def test_signature_of_wrong_length_is_untrusted(length: int) -> None:
    name, signer, label, fields = RECORDS[2]
    signature = (signer.sign(label, *fields) * 2)[:length]
    _untrusted(lambda: signing.verify(signer.public, signature, label, *fields, what=name))


def test_signature_with_s_plus_group_order_is_untrusted() -> None:
    """Strict verification: the malleable twin (S + L) of a valid signature is refused."""
    order = 2**252 + 27742317777372353535851937790883648493
    name, signer, label, fields = RECORDS[2]
    signature = signer.sign(label, *fields)
    twin = signature[:32] + (int.from_bytes(signature[32:], "little") + order).to_bytes(32, "little")
    _untrusted(lambda: signing.verify(signer.public, twin, label, *fields, what=name))


@pytest.mark.parametrize("public", [b"", bytes(31), bytes(33)], ids=["0", "31", "33"])
def test_public_key_of_wrong_length_is_untrusted(public: bytes) -> None:
    name, signer, label, fields = RECORDS[2]
    signature = signer.sign(label, *fields)
    _untrusted(lambda: signing.verify(public, signature, label, *fields, what=name))


@pytest.mark.parametrize("message", [b"grant", b"anything at all"])
def test_signature_under_a_small_order_public_key_is_untrusted(message: bytes) -> None:
    identity = bytes([1]) + bytes(31)
    forged = identity + bytes(32)
    _untrusted(lambda: signing.verify(identity, forged, LABEL_SIG_GRANT, message, what="grant"))


@pytest.mark.parametrize("missing", [None, b""], ids=["none", "empty"])
def test_missing_signature_is_untrusted_as_not_signed(missing: bytes | None) -> None:
    name, signer, label, fields = RECORDS[1]
    exc = _untrusted(lambda: signing.verify(signer.public, missing, label, *fields, what=name))
    assert "not signed" in str(exc)
    assert name in str(exc)


def test_signing_key_repr_does_not_show_the_seed() -> None:
    key = SigningKey.generate()
    for text in (repr(key), str(key)):
        assert key.seed.hex() not in text
        assert key.seed.hex()[:8] not in text
        assert repr(key.seed)[2:-1] not in text


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33)], ids=["0", "31", "33"])
def test_signing_seed_of_wrong_size_is_a_value_error(seed: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey(seed)


# -- fingerprints -----------------------------------------------------------------------------------


def test_engineer_fingerprint_is_deterministic_and_formatted_in_groups() -> None:
    fingerprint = signing.engineer_fingerprint(SEALING_PUBLIC, ADMIN.public)
    assert fingerprint == signing.engineer_fingerprint(SEALING_PUBLIC, ADMIN.public)
    groups = fingerprint.split(" ")
    assert len(groups) == 8 and all(len(g) == 4 for g in groups)
    expected = hashlib.sha256(p.ctx(LABEL_FP_ENGINEER, SEALING_PUBLIC, ADMIN.public)).hexdigest()[:32]
    assert fingerprint.replace(" ", "") == expected


def test_engineer_fingerprint_differs_per_key_and_key_order() -> None:
    fingerprints = {
        signing.engineer_fingerprint(SEALING_PUBLIC, ADMIN.public),
        signing.engineer_fingerprint(SEALING_PUBLIC, OTHER_ADMIN.public),
        signing.engineer_fingerprint(bytes(32), ADMIN.public),
        signing.engineer_fingerprint(ADMIN.public, SEALING_PUBLIC),
    }
    assert len(fingerprints) == 4


def test_org_fingerprint_is_deterministic_and_differs_per_key() -> None:
    assert signing.org_fingerprint(ORG.public) == signing.org_fingerprint(ORG.public)
    assert signing.org_fingerprint(ORG.public) != signing.org_fingerprint(ADMIN.public)
    assert signing.org_fingerprint(ORG.public) == hashlib.sha256(p.ctx(LABEL_FP_ORG, ORG.public)).digest()


def test_client_key_fingerprint_is_deterministic_and_differs_per_key() -> None:
    fingerprint = signing.client_key_fingerprint(CLIENT_KEY)
    assert fingerprint == signing.client_key_fingerprint(CLIENT_KEY)
    assert len(fingerprint) == 16
    assert fingerprint != signing.client_key_fingerprint(bytes(32))
    assert fingerprint == hmac.new(CLIENT_KEY, LABEL_FP_CLIENT_KEY, "sha256").digest()[:16]
    assert CLIENT_KEY[:16] != fingerprint


# -- root derivations and lookup tags ------------------------------------------------------------


def test_root_derivations_are_deterministic_and_labelled_apart() -> None:
    root = bytes(range(32))
    recovery, lookup = signing.recovery_private_from_root(root), signing.lookup_key_from_root(root)
    assert recovery == signing.recovery_private_from_root(root)
    assert lookup == signing.lookup_key_from_root(root)
    assert recovery != lookup
    assert recovery == p.hkdf(root, LABEL_ROOT_RECOVERY, salt=b"")
    assert lookup == p.hkdf(root, LABEL_ROOT_LOOKUP, salt=b"")
    assert signing.lookup_key_from_root(bytes(32)) != lookup


def test_lookup_tag_is_deterministic_per_key() -> None:
    key = signing.lookup_key_from_root(bytes(range(32)))
    tag = signing.lookup_tag(key, LABEL_TAG_CLIENT_SLUG, "acme")
    assert tag == signing.lookup_tag(key, LABEL_TAG_CLIENT_SLUG, "acme")
    assert len(tag) == 32
    assert tag == hmac.new(key, p.ctx(LABEL_TAG_CLIENT_SLUG, "acme"), "sha256").digest()


def test_lookup_tags_differ_across_keys_labels_and_values() -> None:
    key, other = bytes(range(32)), bytes(range(1, 33))
    tags = {
        signing.lookup_tag(key, LABEL_TAG_CLIENT_SLUG, "acme"),
        signing.lookup_tag(other, LABEL_TAG_CLIENT_SLUG, "acme"),
        signing.lookup_tag(key, LABEL_TAG_SECRET_NAME, "acme"),
        signing.lookup_tag(key, LABEL_TAG_CLIENT_SLUG, "acme2"),
        signing.lookup_tag(key, LABEL_TAG_CLIENT_SLUG, "Acme"),
    }
    assert len(tags) == 5


def test_lookup_tag_of_nfc_and_nfd_spellings_is_the_same() -> None:
    key = bytes(range(32))
    assert signing.lookup_tag(key, LABEL_TAG_SECRET_NAME, "caf\u00e9") == signing.lookup_tag(
        key, LABEL_TAG_SECRET_NAME, "cafe\u0301"
    )


# -- enrolment MAC -----------------------------------------------------------------------------------

ENROLMENT = (VAULT_ID, 9, "Ada Lovelace", SEALING_PUBLIC, ADMIN.public)


def test_enrolment_mac_checks_out_over_the_same_keys() -> None:
    mac = signing.enrolment_mac(INVITE_SECRET, *ENROLMENT)
    assert signing.check_enrolment_mac(INVITE_SECRET, mac, *ENROLMENT)
    assert mac == hmac.new(INVITE_SECRET, p.ctx(LABEL_ENROLL_MAC, *ENROLMENT), "sha256").digest()


@pytest.mark.parametrize("index", range(len(ENROLMENT)), ids=["vault", "engineer", "name", "sealing", "signing"])
def test_enrolment_mac_over_different_keys_is_rejected(index: int) -> None:
    mac = signing.enrolment_mac(INVITE_SECRET, *ENROLMENT)
    changed = (*ENROLMENT[:index], _changed(ENROLMENT[index]), *ENROLMENT[index + 1 :])
    assert not signing.check_enrolment_mac(INVITE_SECRET, mac, *changed)


def test_enrolment_mac_with_swapped_keys_is_rejected() -> None:
    mac = signing.enrolment_mac(INVITE_SECRET, *ENROLMENT)
    swapped = (*ENROLMENT[:3], ENROLMENT[4], ENROLMENT[3])
    assert not signing.check_enrolment_mac(INVITE_SECRET, mac, *swapped)


@pytest.mark.parametrize(
    "mac",
    [None, b"", bytes(32), b"truncated"],
    ids=["none", "empty", "zeros", "short"],
)
def test_missing_or_bogus_enrolment_mac_is_rejected(mac: bytes | None) -> None:
    assert not signing.check_enrolment_mac(INVITE_SECRET, mac, *ENROLMENT)


def test_enrolment_mac_under_another_invite_secret_is_rejected() -> None:
    mac = signing.enrolment_mac(INVITE_SECRET, *ENROLMENT)
    assert not signing.check_enrolment_mac(bytes(16), mac, *ENROLMENT)
    assert not signing.check_enrolment_mac(INVITE_SECRET, mac[:-1] + bytes([mac[-1] ^ 1]), *ENROLMENT)


# -- enrolment codes ----------------------------------------------------------------------------------

CODE = signing.make_enrolment_code(INVITE_SECRET, ORG.public)


def _body(code: str) -> str:
    return code[4:].replace("-", "")


def _rejected(code: str) -> EnrolmentError:
    """The code is refused with an EnrolmentError that does not echo it."""
    with pytest.raises(EnrolmentError) as info:
        signing.parse_enrolment_code(code)
    exc = info.value
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
    normalised = "".join(code.split()).upper()
    shown = " ".join([str(exc), repr(exc.args), exc.hint, "".join(traceback.format_exception(exc))]).upper()
    body = normalised[4:].replace("-", "")
    for start in range(max(len(body) - 5, 0)):
        assert body[start : start + 6] not in shown.replace("-", "").replace(" ", "")
    assert INVITE_SECRET.hex().upper() not in shown
    return exc


def test_enrolment_code_round_trips() -> None:
    invite, fingerprint = signing.parse_enrolment_code(CODE)
    assert invite == INVITE_SECRET
    assert fingerprint == signing.org_fingerprint(ORG.public)[:8]
    assert signing.org_matches(ORG.public, fingerprint)
    assert not signing.org_matches(ADMIN.public, fingerprint)


def test_enrolment_code_matches_the_format_spec() -> None:
    assert CODE.startswith("CV1-")
    groups = CODE[4:].split("-")
    assert all(len(g) == 4 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 4
    raw = base64.b32decode(_body(CODE) + "=" * (-len(_body(CODE)) % 8))
    payload = INVITE_SECRET + signing.org_fingerprint(ORG.public)[:8]
    assert raw == payload + hashlib.sha256(payload).digest()[:4]


@pytest.mark.parametrize(
    "spelling",
    [
        CODE.lower(),
        CODE.replace("-", " - "),
        " ".join(CODE.split("-")).replace("CV1 ", "CV1-"),
        "  " + CODE + "\n",
        CODE[:4] + _body(CODE),
        CODE.replace("-", "\t-\n"),
        CODE.swapcase(),
    ],
    ids=["lowercase", "spaced-dashes", "spaces-for-dashes", "padded", "no-dashes", "tabs-newlines", "swapcase"],
)
def test_enrolment_code_in_another_spelling_is_accepted(spelling: str) -> None:
    assert signing.parse_enrolment_code(spelling) == (INVITE_SECRET, signing.org_fingerprint(ORG.public)[:8])


MALFORMED = [
    ("empty", "", "start with CV1-"),
    ("spaces-only", "   ", "start with CV1-"),
    ("no-prefix", _body(CODE), "start with CV1-"),
    ("wrong-prefix", "CV2-" + CODE[4:], "start with CV1-"),
    ("prefix-only", "CV1-", "empty"),
    ("bad-char-0", CODE[:5] + "0" + CODE[6:], "unexpected characters"),
    ("bad-char-1", CODE[:5] + "1" + CODE[6:], "unexpected characters"),
    ("bad-char-8", CODE[:5] + "8" + CODE[6:], "unexpected characters"),
    ("bad-char-bang", CODE[:5] + "!" + CODE[6:], "unexpected characters"),
    ("bad-char-padding", CODE[:5] + "=" + CODE[6:], "unexpected characters"),
    ("non-ascii", CODE[:5] + "\u00c9" + CODE[6:], "unexpected characters"),
    ("fullwidth", CODE[:5] + "\uff21" + CODE[6:], "unexpected characters"),
    ("group-missing", CODE[:-8] + CODE[-3:], ""),
    ("char-missing", CODE[:-1], ""),
    ("group-added", CODE[:8] + "-ABCD" + CODE[8:], ""),
    ("double-length", CODE + "-" + CODE[4:], "too long"),
    ("10kb-with-prefix", "CV1-" + "A" * 10_000, "too long"),
    ("10kb-without-prefix", "Q" * 10_240, "start with CV1-"),
    ("10kb-of-groups", "CV1-" + "-".join(["ABCD"] * 2_000), "too long"),
]


@pytest.mark.parametrize(("code", "reason"), [(c, r) for _, c, r in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_enrolment_code_is_rejected_without_echoing_it(code: str, reason: str) -> None:
    exc = _rejected(code)
    assert reason in str(exc)


def _single_character_typos(code: str) -> list[tuple[int, str]]:
    return [(i, c) for i in range(4, len(code)) if code[i] != "-" for c in BASE32 if c != code[i]]


def _same_bits_spelling(code: str, index: int, char: str) -> bool:
    """A last character that differs only in base32's unused trailing bits."""
    unused = (5 * len(_body(code))) - 8 * (5 * len(_body(code)) // 8)
    return index == len(code) - 1 and BASE32.index(char) >> unused == BASE32.index(code[index]) >> unused


def test_enrolment_code_with_one_character_changed_fails_its_checksum() -> None:
    typos = [(i, c) for i, c in _single_character_typos(CODE) if not _same_bits_spelling(CODE, i, c)]
    assert len(typos) > 1200
    for index, char in typos:
        exc = _rejected(CODE[:index] + char + CODE[index + 1 :])
        # A typo in the last character may also set its unused bit: refused as non-canonical.
        assert "checksum" in str(exc) or (index == len(CODE) - 1 and "unexpected characters" in str(exc))


def test_enrolment_code_with_its_unused_trailing_bits_set_is_rejected() -> None:
    twins = [(i, c) for i, c in _single_character_typos(CODE) if _same_bits_spelling(CODE, i, c)]
    assert twins
    for index, char in twins:
        _rejected(CODE[:index] + char + CODE[index + 1 :])


def test_every_single_character_typo_is_detected() -> None:
    # With the 4-byte check (format §4.7) no single-character typo of these codes parses.
    for invite, org in ((bytes(range(16)), b"\x11" * 32), (b"\xff" * 16, b"\x00" * 32)):
        code = signing.make_enrolment_code(invite, org)
        for index, char in _single_character_typos(code):
            _rejected(code[:index] + char + code[index + 1 :])


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=80), st.text(alphabet=BASE32 + "-", max_size=70).map(lambda s: "CV1-" + s)))
def test_any_text_either_parses_or_raises_an_enrolment_error(text: str) -> None:
    try:
        invite, fingerprint = signing.parse_enrolment_code(text)
    except EnrolmentError as exc:
        assert exc.__cause__ is None
    else:
        assert len(invite) == 16 and len(fingerprint) == 8
