"""Data subjects, where the database is: hand an admin's search every client's ciphertext,
record how much it found, commit.

A person's access request (``subject-find``, ``subject-report``) is a search of the
decrypted metadata of every client: the search is the keyholder's (it alone opens
anything), the rows and the event are the authority's. One unit of work: the caller is
authorised first (an admin, ``CallerGate``), before any client row is read; then every
client with its slug and name blobs, its signed client-key records with the copies sealed
to the recovery key, and every version of every secret (wrapped data key and metadata
blob, never a password blob) go to the keyholder (``SubjectSeal.search``), which answers
how many places it found; the event records that number (and, for a report, who asked).

The values that cross (``SubjectRequest``, ``SubjectRows``) are frozen ints, bytes,
strings and plain rows, as for the other nouns. Purging what was found is a purge
(``vault/authority/purge.py``, kind ``subject``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_reads import ENGINEER_WIDTH, SEALED_KEY
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.purge import Recorder
from vault.authority.requests import Caller, ClientKeyRow, OrgKeyRow, SealedClientKey
from vault.errors import InvalidInput
from vault.storage import models as m
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.rows import EngineerRow

FIND, REPORT = "subject-find", "subject-report"
SELECT = "subject-select"  # what a subject purge destroys: read only, no event (the purge records its own)


@dataclass(frozen=True)
class SubjectRequest:
    """``subject-find``, ``subject-report`` (an event each) or ``subject-select`` (the search
    before a subject purge: no event) by the caller; the query stays with the keyholder."""

    action: str
    caller: Caller
    org_pin: bytes


@dataclass(frozen=True, repr=False)
class SubjectVersion:
    """A version's metadata, as ciphertext, with its wrapped data key."""

    secret_id: int
    version: int
    key_version: int
    wrapped_dek: bytes
    metadata_blob: bytes

    def __repr__(self) -> str:
        return f"SubjectVersion(secret={self.secret_id}, version={self.version})"


@dataclass(frozen=True, repr=False)
class SubjectClient:
    """A client's blobs, its keys sealed to the recovery key, its secrets and their versions."""

    client_id: int
    slug_blob: bytes
    name_blob: bytes
    keys: tuple[SealedClientKey, ...]
    secret_ids: tuple[int, ...]
    versions: tuple[SubjectVersion, ...]

    def __repr__(self) -> str:
        return f"SubjectClient(client={self.client_id}, secrets={len(self.secret_ids)})"


@dataclass(frozen=True, repr=False)
class SubjectRows:
    """Every client, for the keyholder's search (``seq``: the event, once committed)."""

    seq: int
    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    clients: tuple[SubjectClient, ...]

    def __repr__(self) -> str:
        return f"SubjectRows(seq={self.seq}, clients={len(self.clients)})"


class SubjectSeal(Protocol):
    """The keyholder's hands inside the unit of work (the in-process seam)."""

    def search(self, draft: SubjectRows) -> int:
        """Verify the rows, search them; the number of places found (raise to refuse)."""


class SubjectAuthority:
    """The rows of a subject search and its event, one unit of work per request."""

    def __init__(self, store: Store, checks: CallerChecks, recorder: Recorder) -> None:
        self.store, self.gate, self.recorder = store, CallerGate(checks), recorder

    def search(self, request: SubjectRequest, seal: SubjectSeal) -> SubjectRows:
        if not isinstance(request, SubjectRequest) or request.action not in (FIND, REPORT, SELECT):
            raise InvalidInput(f"unknown action {validation.shown(str(getattr(request, 'action', '?')))}")
        checked_caller(request.caller)
        checked_pin(request.org_pin)
        with self.store.read() if request.action == SELECT else self.store.transaction() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)
            chain = org_chain(s, request.org_pin, caller.org_signing_public)
            clients = tuple(
                self._client(s, c, caller.root_version or 0) for c in s.scalars(select(m.Client).order_by(m.Client.id))
            )
            draft = SubjectRows(0, caller.vault_id, caller.org_signing_public, chain, caller.me, clients)
            found = seal.search(draft)
            if isinstance(found, bool) or not isinstance(found, int) or found < 0:
                raise InvalidInput("the keyholder's count of matches is not a count")
            seq = 0
            if request.action != SELECT:
                public: dict[str, object] = {"matches": found}
                if request.action == REPORT:
                    public["by"] = caller.me.name
                seq = self.recorder.append(s, request.action, client_id=None, secret_id=None, public=public)
        return SubjectRows(seq, caller.vault_id, caller.org_signing_public, chain, caller.me, clients)

    @staticmethod
    def _client(s: Session, client: m.Client, root_version: int) -> SubjectClient:
        conn = rows.connection(s)
        keys = []
        for version in s.scalars(
            select(m.ClientKey.version).where(m.ClientKey.client_id == client.id).order_by(m.ClientKey.version)
        ):
            params = {"client": client.id, "version": version, "kind": "recovery", "recipient": root_version}
            for r in SEALED_KEY.all(conn, params)[:1]:
                signer = None if r[8] is None else EngineerRow._make(r[8 : 8 + ENGINEER_WIDTH])
                keys.append(SealedClientKey(ClientKeyRow(*r[:7]), signer, "recovery", root_version, r[7]))
        secret_ids = tuple(s.scalars(select(m.Secret.id).where(m.Secret.client_id == client.id).order_by(m.Secret.id)))
        versions = tuple(
            SubjectVersion(v.secret_id, v.version, v.key_version, v.wrapped_dek, v.metadata_blob)
            for v in s.scalars(
                select(m.SecretVersion)
                .join(m.Secret, m.Secret.id == m.SecretVersion.secret_id)
                .where(m.Secret.client_id == client.id)
                .order_by(m.SecretVersion.secret_id, m.SecretVersion.version)
            )
        )
        return SubjectClient(client.id, client.slug_blob, client.name_blob, tuple(keys), secret_ids, versions)
