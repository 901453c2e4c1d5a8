"""The team server's signing key: its certificate and its signatures over audit events.

docs/format.md §5 ("Server signing keys") and §8.2. The server signs every event it appends
(format 3) with an Ed25519 key of its own, versioned 1, 2, …; an admin certifies the public
half with the organisation signing key, and a verifier believes a server signature only
under a certified key::

    certificate = Ed25519(org key, ctx(LABEL_SIG_SERVER_KEY, vault_id, version, signing public, certified_at))
    signature_n = Ed25519(server key v, ctx(LABEL_SIG_AUDIT_SERVER, vault_id, v, n, hash_n))

A key file format comes with the server (docs/server.md §5); until then a ``ServerSigningKey``
value is handed to what appends (``vault/authority/serverseal.py``).
"""

from __future__ import annotations

from vault.crypto import _primitives as p
from vault.crypto import chain, signing
from vault.crypto.labels import LABEL_SIG_SERVER_KEY
from vault.errors import UntrustedRecord

ContextItem = signing.ContextItem


class ServerSigningKey:
    """One version of the server's signing key; ``repr`` shows the version and a prefix of the
    public key only, never the seed."""

    __slots__ = ("key", "version")

    def __init__(self, version: int, key: signing.SigningKey) -> None:
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**31:
            raise ValueError("a server key version is a positive number")
        if not isinstance(key, signing.SigningKey):
            raise TypeError("a server key is an Ed25519 signing key")
        self.version, self.key = version, key

    @classmethod
    def generate(cls, version: int) -> ServerSigningKey:
        return cls(version, signing.SigningKey.generate())

    @property
    def public(self) -> bytes:
        return self.key.public

    def sign_event(self, vault_id: bytes, seq: int, digest: bytes) -> bytes:
        """The server's signature over format-3 event ``seq`` whose hash is ``digest``."""
        return p.ed25519_sign(self.key.seed, chain.server_signature_message(vault_id, self.version, seq, digest))

    def __repr__(self) -> str:
        return f"ServerSigningKey(version={self.version}, public={self.public[:4].hex()}…)"


def certificate_fields(vault_id: bytes, version: int, public: bytes, certified_at: int) -> tuple[ContextItem, ...]:
    """What a server key's certificate covers (the one definition: signed and verified with it)."""
    return (vault_id, version, public, certified_at)


def certify(org: signing.SigningKey, vault_id: bytes, version: int, public: bytes, certified_at: int) -> bytes:
    """The organisation key's certificate of server key ``version``; a weak key is refused."""
    if signing.is_weak_signing_key(public):
        raise UntrustedRecord("the server key is a weak (small-order) signing key")
    return org.sign(LABEL_SIG_SERVER_KEY, *certificate_fields(vault_id, version, public, certified_at))


def verify_certificate(
    org_public: bytes, certificate: bytes | None, vault_id: bytes, version: int, public: bytes, certified_at: int
) -> None:
    """``UntrustedRecord`` unless ``certificate`` is the organisation key's over these fields."""
    signing.verify(
        org_public,
        certificate,
        LABEL_SIG_SERVER_KEY,
        *certificate_fields(vault_id, version, public, certified_at),
        what=f"server key version {version}",
    )
    if signing.is_weak_signing_key(public):
        raise UntrustedRecord(f"server key version {version} is a weak (small-order) signing key")


class ServerKeyring:
    """Every version of the server's signing key a key file holds (during a rotation the current
    one and the one before it), newest last; ``repr`` shows versions only. Which one signs is the
    database's choice: the version ``server_keys`` holds as active (``serverjournal.active_key``)."""

    __slots__ = ("keys",)

    def __init__(self, keys: tuple[ServerSigningKey, ...] | list[ServerSigningKey]) -> None:
        ordered = tuple(sorted(keys, key=lambda k: k.version))
        if not ordered or not all(isinstance(k, ServerSigningKey) for k in ordered):
            raise TypeError("a server keyring holds at least one server signing key")
        if len({k.version for k in ordered}) != len(ordered):
            raise ValueError("a server keyring holds each version once")
        self.keys = ordered

    @property
    def newest(self) -> ServerSigningKey:
        return self.keys[-1]

    def newest_first(self) -> tuple[ServerSigningKey, ...]:
        return tuple(reversed(self.keys))

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"ServerKeyring(versions={[k.version for k in self.keys]})"


SigningKeys = ServerSigningKey | ServerKeyring  # what a server signs with: one key, or a key file's ring


def keyring_of(keys: SigningKeys) -> ServerKeyring:
    """``keys`` as a ring (one key: a ring of one)."""
    return keys if isinstance(keys, ServerKeyring) else ServerKeyring((keys,))
