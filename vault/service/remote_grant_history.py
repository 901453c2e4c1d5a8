"""An admin's grant history through a team server: what the verified audit chain says about grants.

In-process, an admin's ``grants.list`` shows a grant ``active`` only where the signed audit log
backs it (``grantledger.GrantLedger.grant_history``: the grant, revoke and client-key rotation
events, each verified, their details opened; a grant is confirmed when it is the last word of the
log about its engineer and client and nothing after it is missing or doubtful). A grant row alone
cannot prove that nothing newer existed: a writer of the database can delete the newest entry of a
ledger, or clear every column of a revocation, and the grant before it then reads as the head.

Through the server the admin's machine decides it from what it verifies itself, never from a row
or a verdict of the server's:

1. **The whole chain**, by the admin's ``audit verify`` through the server (``RemoteChain``:
   ``audit.points`` and ``audit.chain``, an admin's only, 403 to an engineer before anything is
   read): every event from 1 to the recorded head, its hash, link, signature under its signer's
   certified key within that key's lifetime, format-3 events under a certified server key. The
   grant, revoke and rotation events about the clients listed are kept as the pages stream
   (``ChainVerifier.verify(observe=...)``); since every event of the chain is verified in order,
   the set kept is the chain's, complete: a server cannot leave the later ``revoke`` out without
   cutting the chain, nor change it without breaking its hash or signature.
2. **The details**, opened here: each client's audit-key ring from its context learned by id and
   verified under the admin's root bundle (``AdminContexts``, as an admin's audit log names a
   client); a rotation through the server has public details (``grantledger.public_rotation``).
   A grant or revoke event whose details do not open is a doubt about its client, as in-process.
3. **Who is an admin**: the signer's row certified under the organisation key this admin's pin
   leads to, its certified role ``admin`` (``RemoteSigners``, a removed admin's included: what they
   signed in their lifetime stays theirs, as in-process).

If the chain does not verify, no grant is confirmed (each is ``unconfirmed``): in-process only the
grants of the clients whose events fail are, since the host reads each event itself; through the
server, nothing after a break can be placed.

The history keeps the head it verified last and the grant, revoke and rotation events up to it
(``KEPT_EVENTS`` at most); the next listing verifies from that head as an incremental ``audit
verify`` does (the anchor checked again, then every event after it), so a server that answers a
shorter chain, consistently cut before a ``revoke``, is refused at the anchor. A failed check keeps
what was verified before. What it costs: the first listing of a ``RemoteVault`` reads and verifies the
whole chain (about as long as ``audit verify``); the next ones the events since.

``live_grants`` (session 17) answers from the same verified events which grants the log says an engineer
holds: a re-invited engineer's confirmation through the server requires the server's plan to name each
(``keyholder/carry.py``, ``named_in_plan``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from vault.errors import IntegrityError, VaultError
from vault.keyholder.grant_list import Confirms
from vault.service.auditpages import _opened_details
from vault.service.grantledger import GRANT_ACTIONS, ROTATE_ACTION, GrantHistory, public_rotation
from vault.storage.rows import ROLE_ADMIN

if TYPE_CHECKING:
    from vault.service.remote_audit import RemoteAudit
    from vault.service.remote_chain import AdminContexts
    from vault.storage.repositories.audit import ChainedRow

__all__ = ["RemoteGrantHistory"]

ACTIONS = frozenset((*GRANT_ACTIONS, ROTATE_ACTION))
KEPT_EVENTS = 200_000  # grant, revoke and rotation events kept between listings, at most


class RemoteGrantHistory:
    """``GrantHistorySource`` of an admin's ``grants.list`` through the server (module docstring).
    ``audit`` is the ``RemoteVault``'s ``RemoteAudit`` (set once it exists)."""

    def __init__(self) -> None:
        self.audit: RemoteAudit | None = None
        self.seen: tuple[int, bytes] | None = None  # the head verified last: the next check starts there
        self.events: dict[int, ChainedRow] = {}  # every grant, revoke, rotation event up to it, by seq

    def __repr__(self) -> str:
        return "RemoteGrantHistory()"

    def confirmations(self, client_ids: set[int]) -> Confirms:
        verified = self._verified()
        if isinstance(verified, str):
            return lambda name, client_id, grant: verified
        audit, events = verified
        history = self.history(audit, [e for e in events if e.client_id in client_ids])
        return lambda name, client_id, grant: history.confirms(name, client_id, grant)

    def live_grants(self, name: str, now: int) -> dict[int, int | None]:
        """Each client the verified chain says ``name`` holds a live grant of: the log's last word
        about them and the client a ``grant`` by an admin, its until not passed by ``now`` and nothing
        doubtful after it, with the grant's id (None: an event from before grant events named it).
        A re-invited engineer's confirmation checks that the server's plan names each (``keyholder/
        carry.py``, ``named_in_plan``). ``IntegrityError`` if the chain does not verify."""
        verified = self._verified()
        if isinstance(verified, str):
            raise IntegrityError(verified, hint="run `credvault audit verify` and tell the server's operator")
        history = self.history(*verified)
        live: dict[int, int | None] = {}
        for client_id in history.clients_of(name):
            last = history.last(name, client_id)
            if last is None or last.action != "grant" or not last.by_admin:
                continue
            if (last.until is None or last.until > now) and not history.doubted_after(client_id, last.seq):
                live[client_id] = last.grant_id
        return live

    def _verified(self) -> tuple[RemoteAudit, list[ChainedRow]] | str:
        """The whole chain verified from the head verified last (module docstring), and every grant,
        revoke and rotation event up to its head in chain order; or why it does not verify."""
        audit = self.audit
        if audit is None:
            raise IntegrityError("no audit chain to confirm the grants against")
        new: dict[int, ChainedRow] = {}

        def keep(e: ChainedRow) -> None:
            if e.action in ACTIONS and e.client_id is not None:
                new[e.seq] = e

        check = audit.verify_whole(keep, since=self.seen)
        if not check.ok:
            # what was verified up to ``seen`` stays: the next listing starts there again (a server that
            # cut the tail before it, or rewrote an event after it, is refused again)
            return f"the audit chain does not verify at event {check.first_bad_seq} ({check.problem})"
        self.events.update(new)
        self.seen = (check.head_seq, bytes.fromhex(check.head_hash))
        if len(self.events) > KEPT_EVENTS:
            self.seen, self.events = None, {}  # too many to keep: verified whole each time
        return audit, [e for _, e in sorted({**self.events, **new}.items())]

    @staticmethod
    def history(audit: RemoteAudit, events: list[ChainedRow]) -> GrantHistory:
        """The grant history of ``events`` (verified, in chain order), their details opened here."""
        checked = audit.signers.checked()
        certified = checked.certified  # (engineer, generation) whose certificate verified here
        rows = checked.rows.engineers
        admins = {r.id for r in rows if r.role == ROLE_ADMIN and (r.id, r.key_generation) in certified}
        contexts = audit.admin_contexts()
        history = GrantHistory()
        for e in events:
            assert e.client_id is not None
            history.add(e.seq, e.at_us, e.client_id, e.action, e.engineer_id in admins, _details(contexts, e))
        return history


def _details(contexts: AdminContexts, e: ChainedRow) -> dict[str, Any] | None:
    """The event's details opened with its client's audit-key ring (public for a rotation through
    the server), or None where they do not open (a doubt about the client)."""
    if e.details_blob is None:
        return public_rotation(e.action, e.request_id, e.details_json)
    assert e.client_id is not None
    context = contexts.get(e.client_id)
    ring: bytes = getattr(context, "ring", b"")
    generation = e.key_version
    if context is None or generation is None or not 1 <= generation <= len(ring) // 32:
        return None
    try:
        key = ring[(generation - 1) * 32 : generation * 32]
        details = json.loads(_opened_details(key, e, e.client_id, generation, e.details_blob))
    except (VaultError, ValueError):
        return None
    return details if isinstance(details, dict) else None
