"""The access log: a hash-chained, signed, append-only sequence of audit events.

Appends lock the single ``audit_head`` row, so concurrent writers on either engine
queue up and the chain never forks; the event commits in the same transaction as the
change it records. Details (reason, ticket, fields revealed, secret name) are
encrypted under the client's key, so a purge of the client leaves only pseudonymous
ids. Verification recomputes every hash and signature and names the first bad event;
the tail is checked against the head this machine last saw and signed checkpoints.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from sqlalchemy.orm import Session

from vault.authority.audit import AuditAuthority
from vault.authority.audit_requests import HEAD, LOG, EventQuery, HeadRequest
from vault.authority.audit_verify_requests import VERIFY
from vault.authority.journal import us
from vault.authority.requests import Caller
from vault.crypto import chain
from vault.errors import NotFound
from vault.keyholder import auditchain
from vault.keyholder.audit import AuditKeyholder
from vault.service import auditpages, rows, validation
from vault.service.auditcheck import CHECKPOINT_PREFIX, ChainCheck
from vault.service.core import ROLE_ADMIN, epoch
from vault.service.records import AuditEntry, AuditVerification
from vault.service.serverkeys import ServerKeysRead
from vault.storage.repositories import audit as event_rows
from vault.storage.rows import EngineerRow
from vault.transport.audit import InProcessAuditTransport
from vault.transport.https_audit import HttpsAuditTransport

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.signers import Signers
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.secrets import Secrets
    from vault.transport.https import HttpsTransport


REVEAL_ACTIONS = ("reveal", "checkout")


def _details(text: str | None) -> dict[str, Any]:
    try:
        details = json.loads(text) if text else {}
    except ValueError:
        return {}  # never so in a genuine event: the full pass refuses it at its own seq
    return details if isinstance(details, dict) else {}


class _CallerChecks:
    """The authority's checks of the caller (signatures and public keys only), by the Vault's trust."""

    def __init__(self, trust: Trust) -> None:
        self._trust = trust

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read

    def certificate(self, s: Session, row: EngineerRow) -> None:
        self._trust.verify_certificate(s, row)


class Audit:
    """The audit log: ``vault.audit.log/export/verify/checkpoint/head``."""

    def __init__(
        self,
        core: Core,
        keys: Keys,
        trust: Trust,
        signers: Signers,
        journal: Journal,
        clients: Clients,
        secrets: Secrets,
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.signers = signers
        self.journal = journal  # the clients' audit-key rings, to read events' details (auditpages.py)
        self.clients = clients
        self.secrets = secrets  # the names of the secrets events refer to
        authority = AuditAuthority(core.store, _CallerChecks(trust))
        self.keyholder = AuditKeyholder(
            InProcessAuditTransport(authority),
            core.vault_id,
            self._signer_keys,
            server_keys=ServerKeysRead(core, trust),  # the signers of format-3 events
        )
        self.chain_check = ChainCheck(core, keys, trust, signers)  # audit verify, report at-risk's chain check

    @overload
    def log(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
        stream: Literal[False] = False,
    ) -> list[AuditEntry]: ...

    @overload
    def log(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
        stream: Literal[True],
    ) -> Iterator[AuditEntry]: ...

    def log(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
        stream: bool = False,
    ) -> list[AuditEntry] | Iterator[AuditEntry]:
        """Events the viewer may see, details decrypted where the viewer holds the key.

        ``stream=True``: the events as an iterator, a page read as the caller consumes
        them, each page in a short read transaction of its own and checked by the keyholder
        (its links, hashes and signatures) before it is shown (bounded memory at any length
        of the log, no transaction held while the caller is slow; ``credvault audit log``
        prints as it reads). A page that does not verify raises IntegrityError. Nothing is
        read, and no error raised, before the first ``next()``. Reading
        the log appends no event, streamed or not."""
        entries = self._entries(client=client, engineer=engineer, since=since, limit=limit)
        return entries if stream else list(entries)

    def _entries(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditEntry]:
        """``log`` as a stream: the filters resolved and the viewer checked in a short read,
        then the events a verified page at a time (keyholder/audit.py), each page asked of
        the authority in a read unit of its own and opened in another (auditpages.py): a
        slow consumer holds no transaction between pages."""
        with self.core.store.read() as s:
            me = self.trust.my_row(s)
            client_id = self.clients.client(s, client).id if client is not None else None
            engineer_id: int | None = None
            if engineer is not None:
                validation.engineer_name(engineer)
                found = event_rows.engineer_id(rows.connection(s), engineer)
                if found is None:
                    raise NotFound(f"no engineer named {engineer!r}")
                engineer_id = found
            admin = me.role == ROLE_ADMIN
        if limit is not None:
            validation.number("limit", limit, 1)
        if not admin:
            if engineer_id not in (None, me.id):
                return  # another engineer's events: none of them for an engineer who is not an admin
            engineer_id = me.id
        since_us = us(since) if since is not None else None
        query = EventQuery(LOG, self._caller(), client_id, engineer_id, since_us)
        pages = self.keyholder.pages(query, limit)
        yield from auditpages.entries(auditpages.EntryReader(self), self.core.store, pages)

    def _caller(self) -> Caller:
        me = self.keys.me()
        return Caller(me.engineer_id, me.key_generation)

    def _signer_keys(self, _refresh: bool = False) -> auditchain.Keys:
        """The chain's certified signing keys, verified, each with the sequence numbers it may
        sign between (its lifetime in the chain), in a read unit of the keyholder's own."""
        with self.core.store.read() as s:
            keys, _, _ = self.signers.key_lifetimes(s, self.signers.signing_keys(s))
            return keys

    def export(self, **filters: Any) -> Iterator[str]:
        """The log as JSON lines (one event per line) for a SIEM, streamed: each line is
        yielded as its page is read (``_entries``), never the whole log in memory."""
        for entry in self._entries(**filters):
            yield json.dumps(entry.to_json(), sort_keys=True)

    # -- verifying ------------------------------------------------------------------------------

    def verify(
        self,
        *,
        since: tuple[int, bytes] | None = None,
        known_head: tuple[int, bytes] | None = None,
        checkpoints: Sequence[str] = (),
        workers: int | None = None,
    ) -> AuditVerification:
        """Recompute hashes and signatures from ``since`` (a trusted (seq, hash)) to the head.

        The authority streams the chain a page at a time, each page its own short read
        (vault/authority/audit_verify.py); the keyholder checks every event, link, signature
        and key lifetime, in worker processes for a long chain (keyholder/auditverify.py).
        A database holding objects credvault did not create (a trigger that deletes events
        at commit, a view, …) does not verify, whatever its events say (auditcheck.py).
        """
        return self.chain_check.run(
            VERIFY, since=since, known_head=known_head, checkpoints=checkpoints, workers=workers
        )

    # -- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self) -> str:
        """A signed statement of the current head, to keep somewhere else: the head asked of
        the authority, its event verified by the keyholder (keyholder/audit.py), then signed."""
        with self.core.store.read() as s:
            me = self.trust.my_row(s)
        vault_id, seq, digest = self.keyholder.checkpoint_head(self._caller())
        at = epoch(self.core.clock())
        signature = chain.sign_checkpoint(self.keys.me().signing_seed, vault_id, seq, digest, at)
        sig = base64.b64encode(signature).decode("ascii")
        return f"{CHECKPOINT_PREFIX}:{vault_id.hex()}:{seq}:{digest.hex()}:{at}:{me.name}:{sig}"

    def head(self) -> tuple[int, bytes]:
        """The chain's head (seq, hash) as the authority records it (no session needed)."""
        answer = self.keyholder.transport.head(HeadRequest(HEAD))
        return answer.seq, answer.hash


def https_audit_keyholder(audit: Audit, https: HttpsTransport) -> AuditKeyholder:
    """An audit keyholder of this Vault object over a team server (``https``): pages and the head
    read through the server, every event checked by the keyholder as in-process."""
    return AuditKeyholder(
        HttpsAuditTransport(https),
        audit.core.vault_id,
        audit._signer_keys,
        server_keys=ServerKeysRead(audit.core, audit.trust),
    )
