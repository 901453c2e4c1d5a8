"""What an invitation is and how the keyholder checks one (docs/format.md §5).

An invitation is signed by the inviting admin over the vault id, the engineer's id, name
and role, their previous certified key generation, the root version, the expiry and the
sealed invite secret; the enrolling engineer and the confirming admin both verify it
against an admin whose certificate verifies under the organisation key they trust. The
field layouts here are the ones the keyholder signs and verifies (``engineers.py``, and the
service's ``Invitations.verify_invite``); the engineer-key record's is ``trust.py``'s.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from vault.authority.engineer_requests import EngineerKeyRow, Invitation
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_INVITE
from vault.errors import UntrustedRecord
from vault.keyholder.responses import ResponseChecks
from vault.keyholder.trust import engineer_key_fields

__all__ = ["engineer_key_fields", "fingerprint_of", "invite_fields", "normalise_fingerprint", "verified_invitation"]
from vault.storage.rows import EngineerRow


def reinvite_hint(name: str) -> str:
    return f"invite them again: `credvault engineer invite {name}` (add --admin for an admin)"


def fingerprint_of(row: EngineerRow | EngineerKeyRow | Any) -> str | None:
    if row.sealing_public is None or row.signing_public is None:
        return None
    return signing.engineer_fingerprint(row.sealing_public, row.signing_public)


def normalise_fingerprint(text: str) -> str:
    raw = "".join(text.split()).lower()
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def invite_fields(vault_id: bytes, engineer_id: int, name: str, role: str, inv: Invitation) -> tuple[Any, ...]:
    """What an invitation's signature covers (docs/format.md §5)."""
    return (vault_id, engineer_id, name, role, inv.prev_generation, inv.root_version, inv.expires_at, inv.seal)


def verified_invitation(vault_id: bytes, org: bytes, now: dt.datetime, engineer: EngineerRow, inv: Invitation) -> str:
    """The invitation's signature by an active admin whose certificate verifies under ``org``;
    returns that admin's name, else UntrustedRecord (with the hint to invite again)."""
    name = engineer.name
    if None in (inv.signature, inv.signed_by, inv.prev_generation, inv.seal, inv.root_version, inv.expires_at):
        raise UntrustedRecord(
            f"engineer {name!r} has no invitation signed by an admin "
            "(made before credvault signed invitations, or not by an admin): not trusted",
            hint=reinvite_hint(name),
        )
    try:
        signer = ResponseChecks(vault_id, org, now).admin(inv.signer, inv.signed_by or 0)
        if signer.signing_public is None:
            raise UntrustedRecord("the invitation's signer has no signing key")
        signing.verify(
            signer.signing_public,
            inv.signature,
            LABEL_SIG_INVITE,
            *invite_fields(vault_id, engineer.id, name, engineer.role, inv),
            what=f"the invitation of engineer {name!r}",
        )
    except UntrustedRecord as error:
        raise UntrustedRecord(f"not trusted: {error}", hint=reinvite_hint(name)) from None
    return signer.name
