"""The values that cross between the keyholder and the authority, for a checkout.

Frozen, made of plain ints, bytes, str, bools and the storage layer's plain rows
(``vault/storage/rows.py`` named tuples of the same), so that the same requests can be
serialised and cross a network later. What the keyholder sends names the action, the
target (ids and lookup tags, never a slug or a name), whether a reason was given (the
reason itself only ever travels inside the encrypted details of the audit event) and the
acting engineer; what the authority answers is ciphertext and signed public records,
which the keyholder verifies before it uses any of them.

Two refusals are marked so that the keyholder can say them in the user's words (it knows
the slug and name the authority never sees): ``MISSING_TARGET`` and ``REASON_REQUIRED``; and
``STALE_CONTEXT`` asks it to refresh the client's key context once and send again.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.storage.rows import ClientRow, EngineerRow, GrantRow, SecretRow, VersionRow

CHECKOUT, REVEAL = "checkout", "reveal"
MISSING_TARGET = "no such secret of this client"
REASON_REQUIRED = "this client requires a reason for every checkout"
STALE_CONTEXT = "the client's audit keys changed since this request was built: nothing was done"
REQUEST_ID_REUSED = "this request id was sent before with another body: nothing was done"


@dataclass(frozen=True)
class Caller:
    """The acting engineer as the request names them (the in-process transport vouches for it)."""

    engineer_id: int
    key_generation: int


@dataclass(frozen=True)
class CheckoutRequest:
    """A checkout or a plain reveal of one version of one secret.

    The client is named by its id (an engineer's, from their grant) or by its slug tag
    (an admin's: only an admin may name a client so).

    ``details_key_version``/``details_blob``: see ``authority/checkout_events.py``.

    ``audit_keys_blob`` is the client's audit-key ring (ciphertext) the event's details
    will be sealed under: the authority refuses with ``STALE_CONTEXT`` if it is no longer
    the client's. ``known_key_versions``: client-key versions the keyholder holds already;
    for any other the response carries the signed record and the caller's sealed copy.
    """

    action: str
    caller: Caller
    client_id: int | None  # an engineer's client: the id their grant names
    slug_tag: bytes | None  # an admin's client: by the tag of its slug under the root lookup key
    name_tag: bytes
    version: int | None
    hold_seconds: int | None  # None: the policy's length (a checkout), or no hold (a reveal)
    has_reason: bool
    field_is_password: bool  # a password shown: the policy may flag it for change
    audit_keys_blob: bytes
    known_key_versions: tuple[int, ...]
    org_pin: bytes  # the organisation key the engineer trusts: a later current key comes with its chain
    # Through the team server (event format 3): the event's details, sealed by the keyholder under
    # the client's current audit key and bound to the envelope's request id; None in-process.
    details_key_version: int | None = None
    details_blob: bytes | None = None

    def __repr__(self) -> str:
        return f"CheckoutRequest(action={self.action!r}, client={self.client_id}, version={self.version})"


@dataclass(frozen=True)
class ClientKeyRow:
    """A client-key version's signed record (the fingerprint of the key, not the key)."""

    client_id: int
    version: int
    fingerprint: bytes
    signed_at: int
    signed_by: int
    signature: bytes | None
    state: str


@dataclass(frozen=True)
class OrgKeyRow:
    """An organisation signing key; each after the first is signed by the one before it."""

    version: int
    public: bytes
    signed_at: int
    signature: bytes | None


@dataclass(frozen=True)
class SealedClientKey:
    """A client key sealed to the caller (an engineer) or to the recovery key (an admin)."""

    record: ClientKeyRow
    signer: EngineerRow | None
    kind: str  # "engineer" or "recovery"
    recipient_id: int  # the engineer's id, or the root-key version
    blob: bytes | None  # None: the version exists, but no copy is sealed to the caller


@dataclass(frozen=True, repr=False)
class CheckoutResponse:
    """What a committed checkout returns: its event's number, and ciphertext with the rows
    the keyholder needs to verify it (its own certificate; an engineer's grant head and
    its signer; the client; the secret and the version revealed; a sealed client key)."""

    seq: int
    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]  # from the pinned key to the current one, when they differ
    me: EngineerRow
    grant: GrantRow | None
    grant_signer: EngineerRow | None
    client: ClientRow
    secret: SecretRow
    version: VersionRow
    sealed_key: SealedClientKey | None
    expires_us: int | None  # the hold's end, microseconds since the epoch; None for a reveal
    flagged: bool  # the password must change (the policy's rotate-after-checkout, or already)

    def __repr__(self) -> str:
        return f"CheckoutResponse(seq={self.seq}, secret={self.secret.id}, version={self.version.version})"


# -- check-in, break, and the listing of checkouts ---------------------------------------------------------

CHECKIN, BREAK, SECRET_UPDATE = "checkin", "checkout-break", "secret-update"
NOT_HELD = "you hold no checkout of this secret"
NOT_CHECKED_OUT = "this secret is not checked out"
ONLY_ADMINS_BREAK = "only an admin can break a checkout"


@dataclass(frozen=True)
class ReleaseRequest:
    """A check-in (``CHECKIN``: the caller's own holds; ``new_value``: a new version is
    stored with it, encrypted by the keyholder) or a break (``BREAK``: an admin releases
    every open hold). The secret is named as in a ``CheckoutRequest``."""

    action: str
    caller: Caller
    client_id: int | None
    slug_tag: bytes | None
    name_tag: bytes
    new_value: bool
    audit_keys_blob: bytes
    known_key_versions: tuple[int, ...]
    org_pin: bytes
    # Through the team server (event format 3): the event's own details, sealed by the keyholder
    # under the client's audit key and bound to the request id, as a ``CheckoutRequest``'s.
    details_key_version: int | None = None
    details_blob: bytes | None = None
    # Through the team server, a new value: the keyholder's version, encrypted for the draft it
    # verified (``secrets.update_draft``), and that draft's digest (docs/server.md §4 rule 2).
    new_version: NewVersion | None = None
    draft_digest: bytes | None = None

    def __repr__(self) -> str:
        return f"ReleaseRequest(action={self.action!r}, client={self.client_id}, new_value={self.new_value})"


@dataclass(frozen=True, repr=False)
class NewVersion:
    """A new version, as the keyholder encrypted it: a fresh data key wrapped under the
    client's current key, the password and the metadata under that data key."""

    version: int
    key_version: int
    wrapped_dek: bytes
    password_blob: bytes
    metadata_blob: bytes

    def __repr__(self) -> str:
        return f"NewVersion(version={self.version}, key_version={self.key_version})"


@dataclass(frozen=True, repr=False)
class WriteKey:
    """What a new version is written under: the client's current key version, its signed
    record and the caller's sealed copy (the keyholder verifies both), and the version's number."""

    key_version: int
    sealed: SealedClientKey | None
    next_version: int

    def __repr__(self) -> str:
        return f"WriteKey(key_version={self.key_version}, next_version={self.next_version})"


@dataclass(frozen=True)
class ReleaseResponse:
    """What a committed check-in or break did: its event, the holds released (a break: their
    holders' names), the secret's current version and whether it must still change."""

    seq: int
    released: int
    holders: tuple[str, ...]
    version: int
    must_change: bool


@dataclass(frozen=True)
class ListRequest:
    """The open checkouts the caller may see: all of them (an admin), or their own.
    ``known_key_versions``: (client id, version) of the client keys the keyholder holds."""

    caller: Caller
    known_key_versions: tuple[tuple[int, int], ...]
    org_pin: bytes


@dataclass(frozen=True, repr=False)
class ListedCheckout:
    """One open checkout: the client and the secret (ciphertext), the current version's
    metadata (its name is opened by the keyholder), who holds it, and its times (µs)."""

    client: ClientRow
    secret: SecretRow
    version: VersionRow
    engineer_id: int
    holder: str
    exclusive: bool
    started_us: int
    expires_us: int

    def __repr__(self) -> str:
        return f"ListedCheckout(client={self.client.id}, secret={self.secret.id})"


@dataclass(frozen=True, repr=False)
class ListResponse:
    """The caller's own row and pinned-key chain (as in a ``CheckoutResponse``), the open
    checkouts, oldest first, and the client keys they need that the keyholder lacks."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    checkouts: tuple[ListedCheckout, ...]
    sealed_keys: tuple[SealedClientKey, ...]

    def __repr__(self) -> str:
        return f"ListResponse(checkouts={len(self.checkouts)})"


# -- an answer the keyholder refused (team server: it verifies after the event, server.md §8) --------

ANSWER_REFUSED = "answer-refused"
REFUSAL_REASONS = frozenset({"untrusted", "undecryptable", "no-such-field"})


@dataclass(frozen=True)
class AnswerRefusedRequest:
    """The keyholder refused the answer to its checkout or reveal ``refused_seq`` (whose request
    was ``refused_request``) after the server had committed that event: through the server it
    verifies the answer only after (docs/server.md, open question 2), so the log says so in an
    ``answer-refused`` event of its own. ``reason``: one of ``REFUSAL_REASONS``."""

    caller: Caller
    client_id: int
    refused_seq: int
    refused_request: bytes
    reason: str


@dataclass(frozen=True)
class AnswerRefusedResponse:
    seq: int


# The answer's response signature did not verify under the pinned server key (or it had none).
UNSIGNED = "unsigned"
ANSWER_REASONS = REFUSAL_REASONS | {UNSIGNED}


@dataclass(frozen=True)
class RefusedAnswerRequest:
    """The engineer's client refused the answer to its own request ``refused_request`` of
    ``operation`` (``audit.answer_refused``): an answer not signed by the pinned server key
    (``unsigned``: none of it was believed, so it names no seq), or rows its keyholder refused
    (``untrusted``, ``undecryptable``). It carries ids and names only, never the answer: the
    server finds this engineer's events of that request itself (``AnswerRefusals.record_request``)."""

    caller: Caller
    operation: str
    refused_request: bytes
    reason: str
