"""A client's key context, where the database is: the rows a checkout request is built on.

Before its first checkout in a client, a keyholder needs what the request is built on: the
client's id (an engineer's, from the slug hint it holds) or slug tag (an admin's), and the
client's slug, lookup key and audit-key ring, which it opens itself. ``ContextAuthority.read``
answers a ``ContextRequest`` in one ``Store.read()`` (no write lock on SQLite, nothing
written, no event: the checkout that follows writes one): the caller checked first, exactly
as a checkout checks them (``CheckoutAuthority._authorise``: certified, active, of the key
generation the request names, the head of their grant ledger for the client, or an admin),
before any row of the client is read; then the client's row (three ciphertexts) and, for
each client-key version those ciphertexts are under that the keyholder does not hold, its
signed record, its signer and the caller's sealed copy. The keyholder verifies all of it
(``keyholder/contexts.py``) before it opens anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, bindparam, select

from vault.authority import versions
from vault.authority.requests import MISSING_TARGET, Caller, OrgKeyRow, SealedClientKey
from vault.crypto.blobs import HEADER_SIZE, blob_key_version
from vault.errors import NotFound
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.prepared import Prepared
from vault.storage.rows import CLIENTS, ClientRow, EngineerRow, GrantRow

if TYPE_CHECKING:  # the codec registers this module's values, and checkouts.py leads back to the codec
    from vault.authority.checkouts import CheckoutAuthority


@dataclass(frozen=True)
class ContextRequest:
    """The rows of one client a checkout request is built on, named by id (an engineer's
    client, from their slug hint) or by slug tag (an admin's); ``known_key_versions``: the
    client-key versions the keyholder holds already."""

    caller: Caller
    client_id: int | None
    slug_tag: bytes | None
    known_key_versions: tuple[int, ...]
    org_pin: bytes

    def __repr__(self) -> str:
        return f"ContextRequest(client={self.client_id})"


@dataclass(frozen=True, repr=False)
class ContextResponse:
    """The client's row and what the keyholder verifies it under: its own certified row, an
    engineer's grant head and its signer, the current recovery-key version (an admin's sealed
    copies are sealed to it), and a sealed client key per version it does not hold."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    root_version: int | None
    grant: GrantRow | None
    grant_signer: EngineerRow | None
    client: ClientRow
    sealed_keys: tuple[SealedClientKey, ...]

    def __repr__(self) -> str:
        return f"ContextResponse(client={self.client.id}, <ciphertext>)"


def _client_query(by_slug_tag: bool) -> Select[Any]:
    columns = [CLIENTS.c[name] for name in ClientRow._fields]
    where = CLIENTS.c.slug_tag == bindparam("slug_tag") if by_slug_tag else CLIENTS.c.id == bindparam("client")
    query: Select[Any] = select(*columns).where(where)
    return query


CLIENT = {tag: Prepared(_client_query(tag)) for tag in (True, False)}


class ContextAuthority:
    """Answers ``ContextRequest``s, each in one read unit of work (see the module docstring)."""

    def __init__(self, store: Store, checkouts: CheckoutAuthority) -> None:
        self.store, self.checkouts = store, checkouts

    def read(self, request: ContextRequest) -> ContextResponse:
        with self.store.read() as s:
            conn = rows.connection(s)
            sqlite = conn.dialect.name == "sqlite"
            caller = self.checkouts._authorise(s, conn, sqlite, request, appends=False)  # before any client row
            by_tag = request.slug_tag is not None
            named = {"slug_tag": request.slug_tag} if by_tag else {"client": request.client_id}
            found = CLIENT[by_tag].all(conn, named)
            if not found:
                raise NotFound(MISSING_TARGET)
            client = ClientRow._make(found[0])
            blobs = [client.slug_blob, client.lookup_key_blob]
            if client.audit_keys_blob is not None:
                blobs.append(client.audit_keys_blob)
            versions_used = {blob_key_version(b) for b in blobs if len(b) >= HEADER_SIZE}
            wanted = sorted(versions_used - set(request.known_key_versions))
            sealed = [versions.sealed_key(conn, caller, client.id, v) for v in wanted]
            engineer = caller.me.role != rows.ROLE_ADMIN
            return ContextResponse(
                vault_id=caller.vault_id,
                org_signing_public=caller.org_signing_public,
                org_chain=self.checkouts._org_chain(conn, request.org_pin, caller.org_signing_public),
                me=caller.me,
                root_version=caller.root_version,
                grant=caller.grants[0] if engineer and caller.grants else None,
                grant_signer=caller.signers[0] if engineer and caller.signers else None,
                client=client,
                sealed_keys=tuple(k for k in sealed if k is not None),
            )
