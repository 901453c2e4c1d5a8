"""``RemoteVault.audit.verify``, and the clients an admin's log names, through a team server.

**An admin's ``audit verify``** is the in-process one on the admin's machine: the keyholder's
``ChainVerifier`` (``keyholder/auditverify.py``) over ``HttpsChainTransport`` (``audit.points``,
then the whole chain a page at a time by ``audit.chain``: ``server/chain_routes.py``, an admin's
only), every event's hash, link, signature, key lifetime and format checked here, format-3
events under the server keys certified by the organisation key this admin's pin leads to, the
recorded head compared with the last event, nothing past it. The signers are ``RemoteSigners``'
(``remote_audit.py``, checked here), their lifetimes and what the pass over the key events found
computed by ``keyholder/signers.chain_lifetimes`` as in-process, so a DBA's rewrite of an event is
named at its seq exactly as in-process. Checkpoints are verified here under their signer's
certificate. What differs: the database is not inspected for objects credvault did not create
(a trigger, a view: ``Store.inspecting``); only ``audit verify`` on the database's host sees them.

**An engineer's ``audit verify``** cannot be that: the server answers an engineer the events of
their own and of the clients they hold a live grant for, nothing else, not even counts (``audit.chain``
refuses them, 403). Through the server it checks what an engineer can: their own events, every
page as ``audit log`` checks it (hashes, links within runs, signatures under certified keys within
their lifetimes, format-3 events under a certified server key), and the chain's head event as a
checkpoint is (``AuditKeyholder.checkpoint_head``: its hash and signature); a head this machine saw
before (``known_head``) or a checkpoint given is compared where it is one of those events, and a
head behind it is refused. The result says ``checked`` own events, ``first_seq`` the first of them;
``whole_chain`` is False: the CLI says that the whole chain is verified by an admin, and does not
take the head as verified for an incremental ``audit verify``. The head's seq is the one the
unauthenticated ``audit.head`` answers anyone.

**An admin's log** names each client by its slug (``AdminContexts``: the client's rows by id,
``checkouts.context``, verified by the checkout keyholder as for a checkout under the admin's
root bundle, the slug opened and bound to the id by its associated data), its details opened
with the client's audit-key ring; a client the server no longer has (purged) is named by its
purge receipt as in-process (``(purged client #id, receipt #r)``, from ``purge.receipts``, an
admin's). An engineer's log names such a client ``(client #id)``: the receipt's number counts
every purge of the vault, other clients' too, which the server does not tell an engineer.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from vault.authority.audit_requests import LOG, EventQuery
from vault.authority.audit_verify_requests import VERIFY
from vault.authority.requests import Caller
from vault.crypto import chain
from vault.errors import AccessDenied, DecryptionFailed, IntegrityError, InvalidInput, NotFound, UntrustedRecord
from vault.keyholder.audit import AuditKeyholder
from vault.keyholder.auditverify import ChainVerifier, Known
from vault.records import AuditVerification, ReceiptInfo
from vault.service.auditcheck import CHECKPOINT_PREFIX
from vault.service.remote_reads import LearnedContext
from vault.service.remotekeys import RemoteKeys
from vault.storage.repositories.audit import ChainedRow
from vault.transport.https import HttpsTransport
from vault.transport.https_audit import HttpsChainTransport

if TYPE_CHECKING:
    from vault.service.remote_audit import RemoteSigners

__all__ = ["AdminContexts", "RemoteChain"]

CACHE_LIMIT = 50_000  # client contexts remembered per reader (as auditpages.CACHE_LIMIT)
CHAIN_PAGE = 100  # events per page of the chain: a format-3 event keeps a body of up to 16 KiB


class ByIdLearner(Protocol):
    def learn_id(self, client_id: int) -> LearnedContext | None: ...


class AdminContexts:
    """An admin's verified client contexts by id, for the entries of one stream of their log (module
    docstring); a row that does not verify is refused (``UntrustedRecord``), as every answer."""

    def __init__(
        self,
        keys: RemoteKeys,
        learner: Callable[[], ByIdLearner | None],
        receipts: Callable[[], Sequence[ReceiptInfo]] = tuple,
    ) -> None:
        self.keys, self.learner, self.receipts = keys, learner, receipts
        self.found: dict[int, LearnedContext | None] = {}
        self._purged: dict[int, int] | None = None

    def __repr__(self) -> str:
        return "AdminContexts()"

    def get(self, client_id: int) -> LearnedContext | None:
        if client_id in self.found:
            return self.found[client_id]
        if len(self.found) >= CACHE_LIMIT:
            self.found.clear()
        learner = self.learner()
        context = None
        if learner is not None:
            self.keys.open_recovery()
            try:
                context = learner.learn_id(client_id)
            except (NotFound, DecryptionFailed):
                context = None  # purged, or a field that does not open: named by its id, as in-process
        self.found[client_id] = context
        return context

    def purged(self, client_id: int) -> int | None:
        """The purge receipt of a client the server no longer has (the first, if several, as
        in-process), from the receipts the admin's purge keyholder reads (read once per reader)."""
        if self._purged is None:
            self._purged = {}
            for r in sorted(self.receipts(), key=lambda r: r.id, reverse=True):
                if r.kind == "client":
                    self._purged[r.client_id] = r.id
        return self._purged.get(client_id) if self.found.get(client_id, False) is None else None


class RemoteChain:
    """``audit.verify`` through the server: the whole chain for an admin, their own events for an
    engineer (module docstring)."""

    def __init__(
        self, keys: RemoteKeys, https: HttpsTransport, signers: RemoteSigners, keyholder: AuditKeyholder
    ) -> None:
        self.keys, self.signers, self.keyholder = keys, signers, keyholder
        self.verifier = ChainVerifier(
            HttpsChainTransport(https),
            lambda: keys.vault_id,
            signers.lifetimes,
            page_size=CHAIN_PAGE,
            server_keys=signers.server_keys,
        )
        self.whole_chain = False  # the last verification's scope (module docstring)

    def __repr__(self) -> str:
        return "RemoteChain()"

    def verify(
        self,
        *,
        since: tuple[int, bytes] | None = None,
        known_head: tuple[int, bytes] | None = None,
        checkpoints: Sequence[str] = (),
        workers: int | None = None,
    ) -> AuditVerification:
        me = self.keys.me()
        caller = Caller(me.engineer_id, me.key_generation)
        self.signers.checked(refresh=True)  # the signers read afresh, their own checks made
        known = [Known(*known_head, "the head this machine saw")] if known_head is not None else []
        known += [Known(*self._checkpoint(text), "a signed checkpoint") for text in checkpoints]
        self.whole_chain = self.signers.admin()
        if self.whole_chain:
            return self.verifier.verify(VERIFY, caller, since=since, known=known, workers=workers)
        return self._own(caller, known)

    def verify_whole(
        self, observe: Callable[[ChainedRow], None], *, since: tuple[int, bytes] | None = None
    ) -> AuditVerification:
        """An admin's verification of the whole chain (incremental from ``since``: its anchor checked
        again, as ``audit verify``'s), each event shown to ``observe`` as it streams (the grant history
        of an admin's ``grants.list``: ``remote_grant_history.py``); an engineer is refused here
        (``AccessDenied``), as the server refuses them the chain (403) before reading a row."""
        me = self.keys.me()
        self.signers.checked(refresh=True)
        if not self.signers.admin():
            raise AccessDenied(f"{me.name!r} is not an admin: the whole chain is read by an admin")
        return self.verifier.verify(VERIFY, Caller(me.engineer_id, me.key_generation), since=since, observe=observe)

    def _own(self, caller: Caller, known: Sequence[Known]) -> AuditVerification:
        """An engineer's: their own events and the head event checked (module docstring)."""
        seen: dict[int, bytes] = {}
        first, checked = 0, 0
        try:
            for events in self.keyholder.pages(EventQuery(LOG, caller, engineer_id=caller.engineer_id)):
                first, checked = first or events[0].seq, checked + len(events)
                seen.update((e.seq, e.hash) for e in events if any(k.seq == e.seq for k in known))
            _, head_seq, head_hash = self.keyholder.checkpoint_head(caller)
        except IntegrityError as error:
            return AuditVerification(False, checked, first or 1, 0, "", None, str(error))
        seen[head_seq] = head_hash
        for k in known:
            if k.seq > head_seq:
                problem = f"the chain's head is behind {k.source} (events deleted?)"
                return AuditVerification(False, checked, first or 1, head_seq, head_hash.hex(), head_seq + 1, problem)
            if k.seq in seen and seen[k.seq] != k.hash:
                problem = f"event {k.seq} is not the one {k.source} names"
                return AuditVerification(False, checked, first or 1, head_seq, head_hash.hex(), k.seq, problem)
        return AuditVerification(True, checked, first or 1, head_seq, head_hash.hex())

    def _checkpoint(self, text: str) -> tuple[int, bytes]:
        """A signed checkpoint line, its signature verified under its signer's certified key."""
        parts = text.strip().split(":")
        if len(parts) != 8 or ":".join(parts[:2]) != CHECKPOINT_PREFIX:
            raise InvalidInput(
                "malformed audit checkpoint", hint="paste the whole line `credvault audit checkpoint` printed"
            )
        try:
            cp_vault, seq, digest, at = bytes.fromhex(parts[2]), int(parts[3]), bytes.fromhex(parts[4]), int(parts[5])
            signature = base64.b64decode(parts[7], validate=True)
        except (ValueError, binascii.Error):
            raise InvalidInput("malformed audit checkpoint") from None
        if cp_vault != self.keys.vault_id:
            raise InvalidInput("this checkpoint belongs to another vault")
        public = self.signers.checkpoint_key(parts[6])
        if not chain.checkpoint_valid(public, signature, cp_vault, seq, digest, at):
            raise UntrustedRecord("the checkpoint's signature is invalid")
        return seq, digest
