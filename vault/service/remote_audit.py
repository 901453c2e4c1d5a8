"""``RemoteVault.audit``: an engineer's or an admin's audit log through a team server, checked on their machine.

``audit.log``, ``audit.export``, ``audit.head`` and ``audit.checkpoint`` as in-process, by the
same ``AuditKeyholder`` over ``HttpsAuditTransport`` (``audit.log``/``export``: one signed
request per page, the page request carrying the stream's cursor; ``audit.head``). The keyholder
checks every page before anything of it is shown (``keyholder/audit.PageCheck``): of this vault,
following the request, events in order and of the filters asked, each hash recomputed, links,
signatures under the signers' certified keys within their lifetimes, format-3 events under a
certified server key with the engineer's signed request; a stream that stops before the head it
named is refused. A server that drops, reorders, repeats or alters an event is caught there
(``IntegrityError``, reported to the server as a refused answer first, as every refused read).

What the keyholder checks signatures under comes from the server too, and is believed only once
checked here (``RemoteSigners``, over ``audit.signers``: ``authority/audit_signers.py``): the
vault id is the pinned one; the organisation key the one this session's key record pins or one
its signed chain leads to; every engineer's and archived key's certificate and every server
key's certificate verified under it (a row that does not verify is left out: its events are
refused); the key lifetimes computed from the key events by ``keyholder/signers.chain_lifetimes``,
the in-process function. Read once per stream, and again when an event names a key not known yet.

Entries are what ``Vault.audit.log`` shows an engineer, with these differences of a machine that
reads no database: a client is named by its slug for the clients of the engineer's live grants
(``grants.list``, each client's context then learned and verified as for a checkout), whose
sealed details are opened here with the client's audit-key ring; another client is
``(client #id)`` (in-process a purged one names its purge receipt); a secret is ``(secret #id)``
(its name is in its metadata, read only with an event through the server). An engineer's name
is the one their certificate binds (the raw name for an engineer without a certificate, e.g.
removed). An admin's log through the server is every engineer's events, each client learned by its
id and verified (``remote_chain.AdminContexts``); ``audit verify`` is ``remote_chain.RemoteChain``'s.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, overload

from vault.authority.audit_requests import HEAD, LOG, EventQuery, HeadRequest
from vault.authority.audit_signers import SignerRows, SignersRequest
from vault.authority.certificates import trusted_org_key
from vault.authority.journal import from_us, us
from vault.authority.requests import Caller
from vault.crypto import chain
from vault.errors import NotFound, UntrustedRecord, VaultError
from vault.keyholder import auditchain
from vault.keyholder.audit import AuditKeyholder
from vault.keyholder.responses import ResponseChecks
from vault.keyholder.serverkeys import verified_server_keys
from vault.keyholder.signers import chain_lifetimes
from vault.records import AuditEntry, AuditVerification, ReceiptInfo
from vault.service import validation
from vault.service.auditcheck import CHECKPOINT_PREFIX
from vault.service.auditpages import _opened_details
from vault.service.core import epoch
from vault.service.remote_chain import AdminContexts, ByIdLearner, RemoteChain
from vault.service.remote_nouns import _Noun, reported
from vault.service.remote_reads import LearnedContext
from vault.service.remotekeys import RemoteKeys
from vault.storage.repositories.audit import ChainedRow
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRow
from vault.transport.https import HttpsTransport
from vault.transport.https_audit import HttpsAuditTransport
from vault.transport.https_calls import answer_of

__all__ = ["RemoteAudit", "RemoteSigners"]

CACHE_LIMIT = 50_000  # client contexts remembered per stream (as auditpages.CACHE_LIMIT)
# Events per page through the server: a format-3 event keeps its request's body (at most 16 KiB),
# so a page stays within the transport's limit for the log (https.RESPONSE_LIMITS, 4 MiB).
PAGE_EVENTS = 100


class _Checked:
    """``SignerRows`` once checked here: the organisation key they verify under, the certified keys."""

    def __init__(self, rows: SignerRows, org: bytes, checks: ResponseChecks) -> None:
        self.rows, self.org = rows, org
        self.names: dict[int, str] = {}
        self.me: EngineerRow | None = None
        self.certified: dict[tuple[int, int], tuple[bytes, str]] = {}
        for row in rows.engineers:
            if row.id in self.names:
                raise UntrustedRecord("the server listed an engineer twice")
            self.names[row.id] = row.name
            if row.signing_public is None:
                continue
            try:
                checks.certificate(row)
            except UntrustedRecord:
                continue  # left out, as in-process: what it signed is refused
            self.certified[(row.id, row.key_generation)] = (row.signing_public, row.name)
        for key in rows.keys:
            name = self.names.get(key.engineer_id, "")
            try:
                self.certified[(key.engineer_id, key.generation)] = (checks.archived_key(key, name), name)
            except (UntrustedRecord, TypeError, ValueError):
                self.certified.pop((key.engineer_id, key.generation), None)
        self.checks = checks


class RemoteSigners:
    """The chain's certified signing keys with their lifetimes, and its certified server keys,
    from ``audit.signers``, checked here (module docstring)."""

    def __init__(self, keys: RemoteKeys, https: HttpsTransport, clock: Callable[[], dt.datetime]) -> None:
        self.keys, self.https, self.clock = keys, https, clock
        self._checked: _Checked | None = None

    def __repr__(self) -> str:
        return "RemoteSigners()"

    def checked(self, refresh: bool = False) -> _Checked:
        if self._checked is not None and not refresh:
            return self._checked
        me = self.keys.me()
        rows = answer_of(
            self.https, "audit.signers", SignersRequest(Caller(me.engineer_id, me.key_generation)), SignerRows
        )
        if rows.vault_id != me.vault_id or rows.vault_id != self.keys.vault_id:
            raise UntrustedRecord("the server answered the signers of another vault")
        org = trusted_org_key(rows.vault_id, me.org_signing_public, rows.org_signing_public, rows.org_chain)
        checked = _Checked(rows, org, ResponseChecks(rows.vault_id, org, self.clock()))
        mine = next((r for r in rows.engineers if r.id == me.engineer_id), None)
        if mine is None or mine.name != me.name:
            raise UntrustedRecord("the server's signers do not hold this session's engineer")
        checked.checks.certificate(mine)  # its keys, role and status with it: what decides an admin's reading
        if mine.status != ACTIVE or mine.key_generation != me.key_generation:
            raise UntrustedRecord("the server's signers show this session's engineer inactive or rekeyed")
        checked.me = mine
        self._checked = checked
        return checked

    def signer_keys(self, refresh: bool = False) -> auditchain.Keys:
        """``AuditKeyholder``'s ``signer_keys``: (engineer, generation) -> (key, first seq, end seq)."""
        return self.lifetimes(refresh)[0]

    def lifetimes(self, refresh: bool = False) -> tuple[auditchain.Keys, auditchain.Problems]:
        """``ChainVerifier``'s ``signer_keys``: the keys with their lifetimes, and what the pass over
        the key events found at each seq (``chain_lifetimes``, as in-process)."""
        checked = self.checked(refresh)
        rows = checked.rows
        seqs = [e.seq for e in rows.key_events]
        if seqs != sorted(set(seqs)):
            raise UntrustedRecord("the server's key events are out of order or repeated")
        events = [(e.seq, e.engineer_id, e.key_generation, e.action, e.details_json) for e in rows.key_events]
        older_than_chain = rows.first_action not in (None, "vault-init")

        def active_admins() -> set[Any]:  # only for a vault older than its chain (as Signers._active_admins)
            return {
                r.id
                for r in rows.engineers
                if r.role == ROLE_ADMIN and r.status == ACTIVE and (r.id, r.key_generation) in checked.certified
            }

        keys, problems, _ = chain_lifetimes(checked.certified, events, older_than_chain, active_admins)
        return keys, problems

    def admin(self) -> bool:
        """Whether this session's engineer is an admin, as their certified row says."""
        me = self.checked().me
        return me is not None and me.role == ROLE_ADMIN

    def checkpoint_key(self, name: str) -> bytes:
        """The signing key of the engineer a checkpoint names, their certificate verified here."""
        checked = self.checked()
        row = next((r for r in checked.rows.engineers if r.name == name), None)
        if row is None or row.signing_public is None:
            raise UntrustedRecord("the checkpoint's signer is unknown")
        checked.checks.certificate(row)
        return row.signing_public

    def server_keys(self) -> auditchain.ServerKeys:
        """``AuditKeyholder``'s ``server_keys``: the server keys certified under the trusted organisation key."""
        checked = self.checked()
        return verified_server_keys(checked.rows.server_keys, checked.rows.vault_id, checked.org)

    def name(self, engineer_id: int) -> str | None:
        """An engineer's name: the one their certificate binds, else the name as stored."""
        checked = self.checked()
        for (eid, _), (_, name) in checked.certified.items():
            if eid == engineer_id:
                return name
        return checked.names.get(engineer_id)

    def engineer_id(self, name: str) -> int | None:
        checked = self.checked()
        return next((eid for (eid, _), (_, n) in checked.certified.items() if n == name), None)


class _Entries:
    """Audit entries of verified event rows, as ``auditpages.EntryReader.entry`` makes them
    (module docstring: what a machine without the database names differently)."""

    def __init__(
        self,
        signers: RemoteSigners,
        context: Callable[[int], LearnedContext | None],
        purged: Callable[[int], int | None] = lambda _: None,
    ) -> None:
        self.signers, self.context, self.purged = signers, context, purged

    def entry(self, e: ChainedRow) -> AuditEntry:
        details: dict[str, Any] | None = json.loads(e.details_json) if e.details_json else None
        readable = e.details_blob is None
        slug = None
        if e.client_id is not None:
            context = self.context(e.client_id)
            receipt = self.purged(e.client_id) if context is None else None
            slug = f"(purged client #{e.client_id}, receipt #{receipt})" if receipt else f"(client #{e.client_id})"
            if context is not None:
                slug = context.slug
                if e.details_blob is not None and e.key_version is not None:
                    try:
                        raw = _opened_details(self._audit_key(context, e.key_version), e, e.client_id,
                                              e.key_version, e.details_blob)  # fmt: skip
                        details, readable = {**(details or {}), **json.loads(raw)}, True
                    except VaultError:
                        pass
        if e.signature is None:  # unlock-failed (and old enrolments): nobody's key vouches for it
            details = {**(details or {}), "unauthenticated": True}
        name = self.signers.name(e.engineer_id) if e.engineer_id is not None else None
        secret = f"(secret #{e.secret_id})" if e.secret_id is not None else None
        return AuditEntry(
            e.seq, from_us(e.at_us), name, e.action, slug, e.client_id, e.secret_id, details, readable, secret
        )

    @staticmethod
    def _audit_key(context: LearnedContext, generation: int) -> bytes:
        ring: bytes = getattr(context, "ring", b"")
        if not 1 <= generation <= len(ring) // 32:
            from vault.errors import DecryptionFailed

            raise DecryptionFailed()
        return ring[(generation - 1) * 32 : generation * 32]


class RemoteAudit(_Noun):
    """``audit.log/export/verify/head/checkpoint`` through the server (module docstring)."""

    def __init__(
        self,
        keys: RemoteKeys,
        https: HttpsTransport,
        contexts: Callable[[str], LearnedContext],
        live_slugs: Callable[[], Sequence[str]],
        clock: Callable[[], dt.datetime],
        by_id: Callable[[], ByIdLearner | None] = lambda: None,
        receipts: Callable[[], Sequence[ReceiptInfo]] = tuple,
    ) -> None:
        self.keys, self.https, self.contexts, self.live_slugs, self.clock = keys, https, contexts, live_slugs, clock
        self.signers = RemoteSigners(keys, https, clock)
        self.keyholder = AuditKeyholder(
            HttpsAuditTransport(https),
            lambda: keys.vault_id,
            self.signers.signer_keys,
            size=PAGE_EVENTS,
            server_keys=self.signers.server_keys,
        )
        self.by_id, self.receipts = by_id, receipts  # an admin's log: every client by its id, the purged by receipt
        self.chain = RemoteChain(keys, https, self.signers, self.keyholder)

    def __repr__(self) -> str:
        return "RemoteAudit()"

    @overload
    def log(self, *, client: str | None = None, engineer: str | None = None, since: dt.datetime | None = None,
            limit: int | None = None, stream: Literal[False] = False) -> list[AuditEntry]: ...  # fmt: skip

    @overload
    def log(self, *, client: str | None = None, engineer: str | None = None, since: dt.datetime | None = None,
            limit: int | None = None, stream: Literal[True]) -> Iterator[AuditEntry]: ...  # fmt: skip

    def log(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
        stream: bool = False,
    ) -> list[AuditEntry] | Iterator[AuditEntry]:
        """As ``Vault.audit.log``: an engineer's own events, an admin's every event, each page verified here."""
        entries = self._entries(client=client, engineer=engineer, since=since, limit=limit)
        return entries if stream else list(entries)

    def export(self, **filters: Any) -> Iterator[str]:
        """As ``Vault.audit.export``: the log as JSON lines, streamed."""
        for entry in self._entries(**filters):
            yield json.dumps(entry.to_json(), sort_keys=True)

    def _entries(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditEntry]:
        me = self.keys.me()
        with reported(self.https):
            checked = self.signers.checked(refresh=True)  # a stream's signers, read afresh
        assert checked.me is not None
        admin = checked.me.role == ROLE_ADMIN
        client_id = self.contexts(client).client_id if client is not None else None
        engineer_id: int | None = None
        if engineer is not None:
            validation.engineer_name(engineer)
            engineer_id = self.signers.engineer_id(engineer)
            if engineer_id is None and engineer not in checked.names.values():
                raise NotFound(f"no engineer named {engineer!r}")
        if limit is not None:
            validation.number("limit", limit, 1)
        if admin:
            if engineer is not None and engineer_id is None:
                engineer_id = next(i for i, n in checked.names.items() if n == engineer)  # no certificate: as stored
        elif engineer is not None and engineer_id != me.engineer_id:
            return  # another engineer's events: none of them for an engineer who is not an admin
        else:
            engineer_id = me.engineer_id
        since_us = us(since) if since is not None else None
        query = EventQuery(LOG, Caller(me.engineer_id, me.key_generation), client_id, engineer_id, since_us)
        reader = self.admin_entries() if admin else _Entries(self.signers, self._live_context())  # afresh per stream
        pages = self.keyholder.pages(query, limit)
        while True:
            with reported(self.https):
                events = next(pages, None)
            if events is None:
                return
            yield from [reader.entry(e) for e in events]

    def admin_entries(self) -> _Entries:
        """The entries of an admin's stream: every client named by its slug, learned afresh
        (``AdminContexts``), the purged by their receipts."""
        found = self.admin_contexts()
        return _Entries(self.signers, found.get, found.purged)

    def admin_contexts(self) -> AdminContexts:
        """An admin's verified client contexts by id, learned afresh (their audit-key rings)."""
        return AdminContexts(self.keys, self.by_id, self.receipts)

    def _live_context(self) -> Callable[[int], LearnedContext | None]:
        """A client's verified context by id, among the clients of the engineer's live grants (read
        once per stream, when the first event naming a client is met)."""
        live: dict[int, LearnedContext] | None = None

        def context(client_id: int) -> LearnedContext | None:
            nonlocal live
            if live is None:
                live = self._live_contexts()
            return live.get(client_id)

        return context

    def _live_contexts(self) -> dict[int, LearnedContext]:
        """The verified contexts of the clients of the engineer's live grants, by id."""
        out: dict[int, LearnedContext] = {}
        for slug in self.live_slugs():
            try:
                found = self.contexts(slug)
            except VaultError:
                continue  # not openable now: named by its id
            out[found.client_id] = found
            if len(out) >= CACHE_LIMIT:
                break
        return out

    def verify(
        self,
        *,
        since: tuple[int, bytes] | None = None,
        known_head: tuple[int, bytes] | None = None,
        checkpoints: Sequence[str] = (),
        workers: int | None = None,
    ) -> AuditVerification:
        """As ``Vault.audit.verify`` for an admin (the whole chain, checked here); an engineer's
        checks their own events and the head (``remote_chain.py``; ``whole_chain`` says which)."""
        with reported(self.https):
            return self.chain.verify(since=since, known_head=known_head, checkpoints=checkpoints, workers=workers)

    def verify_whole(
        self, observe: Callable[[ChainedRow], None], *, since: tuple[int, bytes] | None = None
    ) -> AuditVerification:
        """An admin's whole chain verified here (from ``since``, an event this machine verified, when
        given), each event shown to ``observe`` as it streams (``RemoteChain.verify_whole``: an
        admin's grant history, ``remote_grant_history.py``)."""
        with reported(self.https):
            return self.chain.verify_whole(observe, since=since)

    @property
    def whole_chain(self) -> bool:
        """Whether the last ``verify`` checked the whole chain (an admin's) or an engineer's own events."""
        return self.chain.whole_chain

    def head(self) -> tuple[int, bytes]:
        """As ``Vault.audit.head``: the chain's head (seq, hash) as the server records it."""
        answer = self.keyholder.transport.head(HeadRequest(HEAD))
        if answer.vault_id != self.keys.vault_id:
            raise UntrustedRecord("the server answered the head of another vault")
        return answer.seq, answer.hash

    def checkpoint(self) -> str:
        """As ``Vault.audit.checkpoint``: the head's event verified here, then signed here."""
        me = self.keys.me()
        with reported(self.https):
            self.signers.checked(refresh=True)
            vault_id, seq, digest = self.keyholder.checkpoint_head(Caller(me.engineer_id, me.key_generation))
        at = epoch(self.clock())
        signature = chain.sign_checkpoint(me.signing_seed, vault_id, seq, digest, at)
        sig = base64.b64encode(signature).decode("ascii")
        return f"{CHECKPOINT_PREFIX}:{vault_id.hex()}:{seq}:{digest.hex()}:{at}:{me.name}:{sig}"
