"""What ``audit verify`` believes of the ``server_keys`` rows (vault/keyholder/serverkeys.py):
pure, no store. The DBA rewrites a row (its public key, version or time; its certificate moved
to another row; its state) or certifies a key with an organisation key that is not the
current one (a retired key a removed admin kept): only rows whose certificate verifies under
the organisation key the verifier trusts sign anything."""

from __future__ import annotations

from vault.authority.server_keys import ServerKeyRow
from vault.crypto import serverkey
from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.keyholder.serverkeys import verified_server_keys

VAULT = bytes(range(16))
ORG, OLD_ORG = SigningKey(bytes([21]) * 32), SigningKey(bytes([22]) * 32)
AT = 1_733_400_000
ONE, TWO = ServerSigningKey.generate(1), ServerSigningKey.generate(2)


def _row(key: ServerSigningKey, org: SigningKey = ORG, state: str = "active") -> ServerKeyRow:
    return ServerKeyRow(key.version, key.public, AT, serverkey.certify(org, VAULT, key.version, key.public, AT), state)


def test_certified_rows_sign_from_their_certification_time_retired_ones_too() -> None:
    keys = verified_server_keys([_row(ONE, state="retired"), _row(TWO)], VAULT, ORG.public)
    assert keys == {1: (ONE.public, AT * 1_000_000), 2: (TWO.public, AT * 1_000_000)}


def test_rewritten_rows_and_rows_of_another_organisation_key_sign_nothing() -> None:
    one, two = _row(ONE), _row(TWO)
    forged = [
        one._replace(signing_public=ServerSigningKey.generate(1).public),  # public key swapped, certificate kept
        one._replace(version=3),
        one._replace(certified_at=AT - 3600),  # backdated, to cover events before it
        two._replace(certificate=one.certificate),  # a certificate moved to another row
        one._replace(certificate=b""),
        _row(ONE, org=OLD_ORG),  # a retired (or rogue) organisation key
        _row(ONE, state="revoked"),
    ]
    for row in forged:
        assert verified_server_keys([row], VAULT, ORG.public) == {}, row
    assert verified_server_keys([_row(ONE)], bytes(16), ORG.public) == {}  # another vault's certificate
