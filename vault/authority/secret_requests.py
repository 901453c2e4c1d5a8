"""The values that cross between the keyholder and the authority, for secrets.

As for the checkout (``requests.py``): frozen values of ints, bytes, strings and the
storage layer's plain rows, so that the same requests can be serialised and cross a
network later. A request names the action, the caller and the target by ids and lookup
tags only (the client's id, or an admin's slug tag; the secret's name tag): never a slug,
a name or any plaintext. What the authority answers is ciphertext and signed public
records, which the keyholder verifies before it decrypts anything.

``SecretRows`` is both the draft the keyholder is shown before the event is written
(``admit``: a refusal writes nothing) and the committed answer. A new version (add,
update) is encrypted by the keyholder for the (client, secret, version) the authority
assigns inside its unit of work, under the client-key version whose signed record the
draft carries: the same ``NewVersion`` value as a check-in's (``requests.py``), stored by
the same function (``authority/versions.py``).

Refusals the keyholder says in the user's words (it knows the slug and name the authority
never sees): ``MISSING_TARGET`` (requests.py), ``NAME_TAKEN`` and ``NO_CURRENT_VERSION``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from vault.authority.requests import Caller, OrgKeyRow, SealedClientKey
from vault.storage.rows import ClientRow, EngineerRow, GrantRow, SecretRow, VersionRow

VIEW, HISTORY, CREATE, UPDATE = "secret-view", "secret-history", "secret-create", "secret-update"
LIST = "secret-list"
READ_ACTIONS = (VIEW, HISTORY)
NAME_TAKEN = "a secret of this client has this name tag already"
NO_CURRENT_VERSION = "the secret's current version row is missing: the database was changed outside credvault"


@dataclass(frozen=True)
class SecretTarget:
    """Who acts, on which client (an engineer's: by the id their grant names; an admin's: by
    the slug tag under the root lookup key) and which secret (by its name tag)."""

    caller: Caller
    client_id: int | None
    slug_tag: bytes | None
    name_tag: bytes
    known_key_versions: tuple[int, ...]  # client-key versions the keyholder holds already
    org_pin: bytes  # the organisation key the engineer trusts

    def __repr__(self) -> str:
        return f"SecretTarget(engineer={self.caller.engineer_id}, client={self.client_id})"


@dataclass(frozen=True)
class ReadRequest:
    """``secret-view`` (the current version's metadata) or ``secret-history`` (the versions)."""

    action: str
    target: SecretTarget

    @property
    def caller(self) -> Caller:
        """Who acts (what a format-3 event's kept request is checked against)."""
        return self.target.caller

    @property
    def client_id(self) -> int | None:
        return self.target.client_id


@dataclass(frozen=True)
class AddRequest:
    """A new secret of ``kind``: its first version is encrypted by the keyholder (``NewVersion``)."""

    target: SecretTarget
    kind: str


@dataclass(frozen=True)
class UpdateRequest:
    """A new version of an existing secret; ``kind`` None keeps it, ``password_changed``
    clears the must-change flag (the new version's content is the keyholder's)."""

    target: SecretTarget
    kind: str | None
    password_changed: bool


@dataclass(frozen=True)
class HistoryRow:
    """One version of a secret as the history shows it (no ciphertext)."""

    version: int
    created_at: dt.datetime
    created_by: str
    key_version: int


@dataclass(frozen=True, repr=False)
class SecretRows:
    """What the authority read or wrote, with the rows that vouch for it: the caller's own
    row, an engineer's grant head and its signer, the client, the secret, a version (the
    current one; None in the draft of an add) and a sealed client key the keyholder does
    not hold (or, for a write, the signed record of the key new data goes under)."""

    seq: int  # the event's number; 0 in a draft
    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    grant: GrantRow | None
    grant_signer: EngineerRow | None
    client: ClientRow
    secret: SecretRow
    kind: str
    created_at: dt.datetime
    updated_at: dt.datetime
    version: VersionRow | None
    sealed_key: SealedClientKey | None
    write_key: SealedClientKey | None  # add/update: the client's current key version, signed
    history: tuple[HistoryRow, ...] = ()

    def __repr__(self) -> str:
        return f"SecretRows(seq={self.seq}, secret={self.secret.id})"


# -- secret list ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListSecretsRequest:
    """The secrets of ``client_ids`` (each one the keyholder learned and verified: an engineer's
    granted clients, or the one named), or of every client (None: an admin's listing alone).
    ``known_key_versions``: the (client id, version) of the client keys the keyholder holds.
    ``named``: one client was named, so an id asked that is not granted is refused; False (a
    listing of the engineer's clients): such an id is dropped. ``action``: always ``LIST``."""

    caller: Caller
    client_ids: tuple[int, ...] | None
    known_key_versions: tuple[tuple[int, int], ...]
    org_pin: bytes
    named: bool = True
    action: str = LIST

    def __repr__(self) -> str:
        shown = "every" if self.client_ids is None else len(self.client_ids)
        return f"ListSecretsRequest(engineer={self.caller.engineer_id}, clients={shown})"


@dataclass(frozen=True, repr=False)
class ListedSecretRow:
    """One secret and its current version as read (``version`` None: the row is missing, and
    the keyholder reports the secret as damaged). ``kind`` and the times are shown as stored."""

    client_id: int
    secret_id: int
    kind: str
    current_version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    version: VersionRow | None

    def __repr__(self) -> str:
        return f"ListedSecretRow(client={self.client_id}, secret={self.secret_id})"


@dataclass(frozen=True, repr=False)
class SecretPage:
    """One keyset page of a listing, in secret-id order, with what verifies it: the caller's
    own row and the organisation key (as in ``SecretRows``, the same on every page), the
    client rows first listed on this page (their slug blobs), and the sealed client keys
    its rows need that the keyholder did not name as held and no earlier page carried.
    A listing is at least one page (perhaps empty), so the caller's row always comes."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    clients: tuple[ClientRow, ...]
    secrets: tuple[ListedSecretRow, ...]
    sealed_keys: tuple[SealedClientKey, ...]

    def __repr__(self) -> str:
        return f"SecretPage(secrets={len(self.secrets)})"


@dataclass(frozen=True, repr=False)
class SecretListing:
    """``secrets.list`` through the team server: the listing's pages in one answer, after its
    ``secret-list`` event (``seq``) committed. Each version's password blob is withheld
    (``secret_draft_requests.WITHHELD``): the listing shows metadata, and a password with its
    data key would be a reveal without its event."""

    seq: int
    pages: tuple[SecretPage, ...]

    def __repr__(self) -> str:
        return f"SecretListing(seq={self.seq}, pages={len(self.pages)})"


@dataclass(frozen=True)
class SecretPageRequest:
    """One page of a listing through the team server (``secrets.list_page``): the fields of a
    ``ListSecretsRequest`` and the cursor, the secrets with an id above ``after`` (0: from the
    first), at most ``limit`` of them (the server caps it). ``action``: always ``LIST``."""

    caller: Caller
    client_ids: tuple[int, ...] | None
    known_key_versions: tuple[tuple[int, int], ...]
    org_pin: bytes
    named: bool
    after: int
    limit: int
    action: str = LIST

    def __repr__(self) -> str:
        shown = "every" if self.client_ids is None else len(self.client_ids)
        return f"SecretPageRequest(engineer={self.caller.engineer_id}, clients={shown}, after={self.after})"

    def listing(self) -> ListSecretsRequest:
        """The listing this page is of."""
        return ListSecretsRequest(
            self.caller, self.client_ids, self.known_key_versions, self.org_pin, self.named, self.action
        )


@dataclass(frozen=True, repr=False)
class SecretListPage:
    """A page of ``secrets.list_page``, after its ``secret-list`` event (``seq``) committed:
    ``page`` (its password blobs withheld, as ``SecretListing``'s) and ``next_after``, the
    cursor of the next page (the last secret id read), or None when the listing is complete."""

    seq: int
    page: SecretPage
    next_after: int | None

    def __repr__(self) -> str:
        return f"SecretListPage(seq={self.seq}, secrets={len(self.page.secrets)}, more={self.next_after is not None})"
