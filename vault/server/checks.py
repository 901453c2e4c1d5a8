"""The checkout authority's public checks on the team server (``CheckoutAuthority``'s ``PublicChecks``).

In-process, ``vault/service/checkouts.py`` builds them on the keyholder's ``Trust`` (the
organisation key the unlocked engineer pinned). The server holds no session: it trusts the
organisation key it was given, or the first it read, and the signed chain from it
(``authentication.PinnedOrganisation``, the check each request's signer passed already), and
verifies every other record with the same layouts the keyholder uses, now in
``vault/authority/`` (``certificates.py``, ``grant_signatures.py``, ``policy.py``):

* a grant: the head of the engineer's ledger for the client, signed by a certified, active
  admin, unrevoked, unexpired by the server's clock;
* a policy: through its admin's signature, else the strict policy;
* an event's key: the certified signing key of an engineer's key generation (the current one
  by the engineer's certificate, an older one by its ``engineer_keys`` record), or None.

Public keys and signatures only; nothing here imports the keyholder or the service.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from vault.authority.certificates import verify_engineer_key
from vault.authority.grant_signatures import head_grant
from vault.authority.policy import Policy, verified_policy
from vault.authority.server_keys import certified_key
from vault.errors import UntrustedRecord
from vault.server.authentication import PinnedOrganisation
from vault.storage import models as m
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRecord, EngineerRow, GrantRecord, PolicyRow


class ServerChecks:
    """``PublicChecks`` under the organisation key the server trusts (module docstring)."""

    def __init__(self, organisation: PinnedOrganisation, clock: Callable[[], dt.datetime]) -> None:
        self.organisation, self.clock = organisation, clock

    def __repr__(self) -> str:
        return "ServerChecks()"

    def organisation_key(self, s: Session, current: bytes) -> None:
        self.organisation.organisation_key(s, current)

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        self.organisation.certificate(s, row)

    def trusted(self, s: Session) -> tuple[bytes, bytes]:
        """(vault id, organisation key) as ``organisation_key`` checked them in this unit."""
        return self.organisation.trusted(s)

    def admin(self, s: Session, row: EngineerRecord | None) -> EngineerRecord:
        """The signer of a record: certified, an admin, active; else UntrustedRecord."""
        if row is None:
            raise UntrustedRecord("a record is signed by an unknown engineer")
        self.certificate(s, row)
        if row.role != ROLE_ADMIN or row.status != ACTIVE:
            raise UntrustedRecord(f"a record is signed by {row.name!r}, who is not an active admin")
        return row

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        vault_id, _ = self.organisation.trusted(s)
        return head_grant(
            vault_id,
            grants,
            signers,
            engineer,
            lambda grant, row: self.admin(s, row if row is not None else s.get(m.Engineer, grant.granted_by)),
            int(self.clock().timestamp()),
        )

    def policy(
        self, s: Session, client_id: int, row: PolicyRow | None, known: tuple[EngineerRow | None, ...]
    ) -> Policy:
        vault_id, _ = self.organisation.trusted(s)

        def signer(signer_id: int) -> EngineerRecord:
            for seen in known:
                if seen is not None and seen.id == signer_id:
                    return self.admin(s, seen)
            return self.admin(s, s.get(m.Engineer, signer_id))

        return verified_policy(vault_id, client_id, row, signer)

    def server_key(self, s: Session, version: int) -> bytes | None:
        vault_id, org = self.organisation.trusted(s)
        return certified_key(s, version, vault_id, org)

    def event_key(self, s: Session, engineer_id: int, generation: int) -> bytes | None:
        row = s.get(m.Engineer, engineer_id)
        try:
            if row is not None and row.key_generation == generation and row.signing_public is not None:
                self.certificate(s, row)
                return row.signing_public
            key = s.get(m.EngineerKey, (engineer_id, generation))
            if key is None or row is None:
                return None
            vault_id, org = self.organisation.trusted(s)
            return verify_engineer_key(vault_id, org, key, key.certificate, row.name)
        except UntrustedRecord:
            return None
