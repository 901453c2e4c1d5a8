"""What an admin's grant signature covers, and which grant of a ledger counts.

One definition, used to sign (the admin's keyholder, ``keyholder/grants.py``) and to verify:
by the keyholder's ``Trust`` in a unit of work, on the rows of an answer
(``keyholder/responses.py``), and by the team server (``vault/server/checks.py``) before a
checkout. Public keys and signatures only: nothing here opens a secret.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_GRANT, LABEL_SIG_GRANT_V3
from vault.errors import GrantExpired, NotFound
from vault.storage.rows import EngineerRecord, GrantRecord, is_revoked

NO_GRANT = "no such client, or you hold no grant for it"


def grant_label(grant: GrantRecord) -> bytes:
    """The label a grant's signature is made under: ``LABEL_SIG_GRANT_V3`` for a grant made
    through the team server (it names the request that committed it), else ``LABEL_SIG_GRANT``."""
    return LABEL_SIG_GRANT if grant.request_id is None else LABEL_SIG_GRANT_V3


def grant_fields(vault_id: bytes, grant: GrantRecord, sealing_public: bytes | None) -> tuple[signing.ContextItem, ...]:
    """What a grant's signature covers (under ``grant_label``). A grant of the ledger (``seq``
    set, revision 0007 on) also covers its position among the grants of its (engineer, client)
    and the audit event that recorded it; a row from before has the older, shorter layout (and
    a ledger row whose ``seq`` is cleared no longer verifies: the layouts differ). A grant made
    through the team server (``request_id`` set, revision 0019) is signed before its event
    exists: it covers the id of the request that commits it in place of the event's number."""
    if grant.request_id is not None:
        return (
            vault_id,
            grant.id,
            grant.engineer_id,
            sealing_public,
            grant.client_id,
            grant.signed_at,
            grant.until or 0,
            grant.seq or 0,
            grant.request_id,
        )
    fields: tuple[signing.ContextItem, ...] = (
        vault_id,
        grant.id,
        grant.engineer_id,
        sealing_public,
        grant.client_id,
        grant.signed_at,
        grant.until or 0,
    )
    if grant.seq is not None:
        fields += (grant.seq, grant.event_seq or 0)
    return fields


def verify_grant(vault_id: bytes, grant: GrantRecord, engineer: EngineerRecord, admin: EngineerRecord) -> None:
    """The grant's signature by ``admin`` (whose row the caller checked: certified, an active admin)."""
    assert admin.signing_public is not None
    signing.verify(
        admin.signing_public,
        grant.signature,
        grant_label(grant),
        *grant_fields(vault_id, grant, engineer.sealing_public),
        what="the grant",
    )


def head_grant(
    vault_id: bytes,
    grants: Sequence[GrantRecord],
    signers: Sequence[EngineerRecord | None],
    engineer: EngineerRecord,
    admin: Callable[[GrantRecord, EngineerRecord | None], EngineerRecord],
    now: int,
) -> int:
    """The index of the grant that counts: the head of the engineer's ledger for the client
    (``grants`` newest first, by signed ``seq``, then id; ``signers``: each one's signer row
    when fetched with it, else None). It must verify under ``admin(grant, that row)`` (the
    signer, checked as a certified, active admin, else UntrustedRecord), be unrevoked and
    unexpired at ``now`` (epoch seconds); an older row never stands in for it (a superseded
    or revoked grant is not revived by clearing columns of the newer one). Else NotFound, or
    GrantExpired."""
    if not grants:
        raise NotFound(NO_GRANT)
    head = grants[0]
    if is_revoked(head):  # a mark of revocation only ever takes access away: no signature needed
        raise NotFound(NO_GRANT)
    verify_grant(vault_id, head, engineer, admin(head, signers[0]))
    if head.until is not None and head.until <= now:
        until = dt.datetime.fromtimestamp(head.until, dt.UTC).isoformat(timespec="minutes")
        raise GrantExpired(f"your grant for this client expired at {until}", hint="ask an admin to renew it")
    return 0
