"""Deletion requests: purge by crypto-shredding, with signed receipts.

``client`` destroys, in one unit of work, every copy of every version of the client's
key (the recovery copy, every grant's copy, this process's cache), deletes the client's
secrets, versions, lookup tags, policies, grants and checkouts, and stores a **purge
receipt**: request reference, admin, time, counts and the fingerprints of the destroyed
key versions, readable without any client key and signed by the admin. The client's
audit events keep their place in the chain; their details were encrypted under the
client's audit keys, which went with the client, so only pseudonymous ids remain.
After the commit, freed space is scrubbed (see ``scrub``).

The purge is split: the authority (vault/authority/purge.py) authorises, counts, deletes
and stores the receipt; the keyholder (vault/keyholder/purge.py) admits what will be
destroyed, fingerprints the data keys and signs the receipt only if it states exactly
that and nothing of it survives. A subject's purge (subjects.py) is a purge of kind
``subject``; ``verify_receipt`` checks a receipt's signature in the keyholder.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from sqlalchemy import select

from vault.authority.purge import PurgeAuthority
from vault.authority.purge_receipts import ReceiptAuthority
from vault.authority.purge_requests import REQUEST_REF, SECRET, PurgedVersion
from vault.errors import InvalidInput, StoreUnavailable
from vault.keyholder.purge import PurgeKeyholder
from vault.service.policyparts import CallerTrust, ClientLookup, Recorder, SigningKeys
from vault.service.records import PurgePreview, ReceiptCheck, ReceiptInfo
from vault.storage import models as m
from vault.storage.rows import VersionRow
from vault.storage.scrub import scrub
from vault.transport.https_purge import HttpsPurgeTransport
from vault.transport.purge import InProcessPurgeTransport

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.secrets import Secrets
    from vault.transport.https import HttpsTransport


MIN_QUERY = 3


def _request(ref: str) -> str:
    if not isinstance(ref, str) or not REQUEST_REF.fullmatch(ref):
        raise InvalidInput(
            "bad request reference",
            hint="use the ticket or request number (1-64 letters, digits and . _ : # / -), no personal data",
        )
    return ref


class _DataKeys:
    """Client keys as this session opens them (verified by ``Keys``), and forgetting a purged client's."""

    def __init__(self, core: Core, keys: Keys) -> None:
        self._core, self._keys = core, keys

    def client_key(self, client_id: int, version: int) -> bytes:
        cached = self._keys.client_keys.get((client_id, version))
        if cached is not None:
            return cached
        with self._core.store.read() as s:
            return self._keys.client_key(s, client_id, version)

    def forget(self, client_id: int) -> None:
        for cached in [k for k in self._keys.client_keys if k[0] == client_id]:
            del self._keys.client_keys[cached]

    def inner(self, client_id: int, v: PurgedVersion) -> bytes:
        layer = self._core.host_layer  # on the server's host: the key file's master key
        if layer is None:
            return v.wrapped_dek
        row = VersionRow(v.version, v.key_version, v.wrapped_dek, b"", b"")
        with self._core.store.read() as s:
            return bytes(layer.unlayered(s, self._core.vid(s), client_id, v.secret_id, row).wrapped_dek)


class Purge:
    """Purges: ``vault.purge.preview/client/secret/scrub/receipts/verify_receipt``, through the
    purges' keyholder (vault/keyholder/purge.py) and authority (vault/authority/purge.py)."""

    def __init__(
        self, core: Core, keys: Keys, trust: Trust, journal: Journal, clients: Clients, secrets: Secrets
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.clients = clients
        self.secrets = secrets
        checks = CallerTrust(trust)
        transport = InProcessPurgeTransport(
            PurgeAuthority(core.store, checks, Recorder(journal), core.clock), ReceiptAuthority(core.store, checks)
        )
        self.keyholder = PurgeKeyholder(
            transport, SigningKeys(keys), ClientLookup(core, clients), _DataKeys(core, keys), core.clock
        )

    def preview(self, client: str) -> PurgePreview:
        """What ``client`` would remove, for the admin to review first."""
        return self.keyholder.preview(client)

    # -- purging -----------------------------------------------------------------------------

    def client(self, client: str, *, request: str, vacuum: bool = False) -> ReceiptInfo:
        """Crypto-shred a client: every key copy destroyed, every row deleted, a signed receipt."""
        _request(request)
        receipt = self.keyholder.client(client, request)
        done = self.scrub(vacuum=vacuum)
        return dataclasses.replace(receipt, scrubbed=done) if vacuum else receipt

    def secret(self, ref: str, *, request: str, vacuum: bool = False) -> ReceiptInfo:
        """Destroy one secret: every version and its data key; a signed receipt."""
        _request(request)
        with self.core.store.read() as s:
            client, secret, _slug = self.secrets.secret(s, ref)  # its name checked
            for version in set(
                s.scalars(select(m.SecretVersion.key_version).where(m.SecretVersion.secret_id == secret.id))
            ):
                self.keys.client_key(s, client.id, version)  # opened now: the keyholder fingerprints its data keys
            target = (client.id, client.slug_blob, (secret.id,))
        receipt = self.keyholder.secrets(SECRET, [target], request)[0]
        done = self.scrub(vacuum=vacuum)
        return dataclasses.replace(receipt, scrubbed=done) if vacuum else receipt

    # -- scrubbing ---------------------------------------------------------------------------

    def scrub(self, *, vacuum: bool = False) -> str:
        """Remove freed data from disk after a purge; returns what was done (``storage/scrub.py``:
        SQLite's WAL checkpointed and, with ``vacuum``, the file rebuilt; PostgreSQL's ``VACUUM``,
        ``VACUUM FULL`` with ``vacuum``, on the purged tables)."""
        try:
            return scrub(self.core.store, vacuum=vacuum)
        except Exception as error:  # the purge itself is committed; scrubbing is best effort
            raise StoreUnavailable(
                f"the purge is committed but scrubbing failed ({type(error).__name__})",
                hint="`credvault receipts` shows its receipt; run `credvault purge scrub --vacuum` later",
            ) from None

    # -- receipts -------------------------------------------------------------------------------

    def receipts(self) -> list[ReceiptInfo]:
        return self.keyholder.receipts()

    def verify_receipt(self, receipt_id: int) -> ReceiptCheck:
        """Check the receipt's signature, that nothing it destroyed can be found in the store,
        and that the database holds no object (a trigger, a table …) that could have kept a copy."""
        return self.keyholder.verify(receipt_id)


def https_purge_keyholder(purge: Purge, https: HttpsTransport) -> PurgeKeyholder:
    """A purge keyholder of this Vault object over a team server (``https``): ``preview`` and
    ``receipts`` read through the server; the client lookup still reads the local database
    (docs/server.md §8 step 7); a purge and a receipt's check are not served yet."""
    core = purge.core
    return PurgeKeyholder(
        HttpsPurgeTransport(https),
        SigningKeys(purge.keys),
        ClientLookup(core, purge.clients),
        _DataKeys(core, purge.keys),
        core.clock,
    )
