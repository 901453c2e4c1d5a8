"""``audit verify`` and ``report at-risk``'s chain check, composed from their two halves.

``ChainCheck.run`` builds what the keyholder's ``ChainVerifier`` (keyholder/auditverify.py)
needs and hands it the request: the caller (engineer id, key generation), the action
(``audit-verify``: any engineer; ``report-at-risk``: an admin; the authority checks it
first, vault/authority/audit_verify.py), the (seq, hash) to start after, and what this
machine saw before (the head it remembers, each signed checkpoint, verified here first:
its signer's certificate and its signature). The chain's certified signing keys and their
lifetimes are read by the keyholder's ``Signers`` in a read unit of its own, as for
``audit log``; so are the team server's certified signing keys (``keyholder/serverkeys.py``:
each certificate checked under the organisation key this engineer's pin leads to), which
sign the events of format 3.

A database holding objects credvault did not create (a trigger that deletes events at
commit, a view, …) does not verify, whatever its events say (``Store.inspecting``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.audit_verify import AuditChainAuthority
from vault.authority.policies_caller import CallerGate
from vault.authority.requests import Caller
from vault.crypto import chain
from vault.errors import InvalidInput, UntrustedRecord
from vault.keyholder.auditchain import Keys, Problems
from vault.keyholder.auditverify import ChainVerifier, Known
from vault.records import AuditVerification
from vault.service.clientparts import TrustChecks
from vault.service.serverkeys import ServerKeysRead
from vault.storage import models as m
from vault.transport.audit_verify import InProcessChainTransport

if TYPE_CHECKING:
    from vault.keyholder.keys import Keys as SessionKeys
    from vault.keyholder.signers import Signers
    from vault.keyholder.trust import Trust
    from vault.service.core import Core

CHECKPOINT_PREFIX = "credvault-checkpoint:1"


class ChainCheck:
    """The chain verified for ``audit verify`` (any engineer) or ``report at-risk`` (an admin)."""

    def __init__(self, core: Core, keys: SessionKeys, trust: Trust, signers: Signers) -> None:
        self.core, self.keys, self.trust, self.signers = core, keys, trust, signers
        authority = AuditChainAuthority(core.store, CallerGate(TrustChecks(trust)))
        transport, servers = InProcessChainTransport(authority), ServerKeysRead(core, trust)
        self.verifier = ChainVerifier(transport, core.vault_id, self._signer_keys, server_keys=servers)

    def __repr__(self) -> str:
        return "ChainCheck()"

    def run(
        self,
        action: str,
        *,
        since: tuple[int, bytes] | None = None,
        known_head: tuple[int, bytes] | None = None,
        checkpoints: Sequence[str] = (),
        workers: int | None = None,
    ) -> AuditVerification:
        """Recompute hashes and signatures from ``since`` (a trusted (seq, hash)) to the head."""
        with self.core.store.inspecting() as foreign:
            known = [Known(*known_head, "the head this machine saw")] if known_head is not None else []
            if checkpoints:
                with self.core.store.read() as s:
                    vault_id = self.core.vid(s)
                    parsed = [self._parse_checkpoint(s, vault_id, text) for text in checkpoints]
                known += [Known(seq, digest, "a signed checkpoint") for seq, digest in parsed]
            me = self.keys.me()
            caller = Caller(me.engineer_id, me.key_generation)
            result = self.verifier.verify(action, caller, since=since, known=known, workers=workers)
        if not foreign:
            return result
        problem = (
            f"the database holds {', '.join(foreign)} that credvault did not create: they can hide or rewrite "
            "events, so the log cannot be trusted"
        )
        if not result.ok:
            problem += f"; and {result.problem}"
        return AuditVerification(
            False, result.checked, result.first_seq, result.head_seq, result.head_hash, result.first_bad_seq, problem
        )

    def _signer_keys(self) -> tuple[Keys, Problems]:
        """The chain's certified signing keys, verified, each with the sequence numbers it may
        sign between, and what the pass over the key events found, in a read unit of its own."""
        with self.core.store.read() as s:
            keys, problems, _ = self.signers.key_lifetimes(s, self.signers.signing_keys(s))
            return keys, problems

    def _parse_checkpoint(self, s: Session, vault_id: bytes, text: str) -> tuple[int, bytes]:
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
        if cp_vault != vault_id:
            raise InvalidInput("this checkpoint belongs to another vault")
        signer = s.scalars(select(m.Engineer).where(m.Engineer.name == parts[6])).first()
        if signer is None or signer.signing_public is None:
            raise UntrustedRecord("the checkpoint's signer is unknown")
        self.trust.verify_certificate(s, signer)
        if not chain.checkpoint_valid(signer.signing_public, signature, vault_id, seq, digest, at):
            raise UntrustedRecord("the checkpoint's signature is invalid")
        return seq, digest
