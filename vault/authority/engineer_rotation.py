"""An engineer's keys destroyed and re-invited (a lost laptop), where the database is.

One unit of work: the caller authorised as an admin (``EngineerAuthority.authorise``, before
the engineer acted on is read); the engineer's row (not the caller's own, active); the
keyholder shown the row and verifying its certificate (the role re-invited is the certified
one, not the row's word), certifying the record of their current key generation if it has
none (the generation whose grants a re-confirmation carries over); the records the engineer
signed adopted by the caller (``Adoption``: in-process, service/offboarding.py — it opens
client keys, the seam the team-server issue moves to the keyholder); every sealed copy of
theirs deleted and their key record destroyed; a new invitation signed by the keyholder
(``issue_invitation``) with its ``engineer-invite`` event; the ``engineer-key-rotate`` event;
the commit.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from sqlalchemy import delete
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.engineer_requests import ROTATE, EngineerAnswer, RekeyDraft, Rekeyed, RotateRequest
from vault.authority.engineers import (
    KEY_BYTES,
    SIGNATURE_BYTES,
    EngineerAuthority,
    EngineerSeal,
    checked_bytes,
    checked_caller,
    checked_name,
    engineer_row,
)
from vault.errors import InvalidInput
from vault.storage import models as m
from vault.storage.rows import ACTIVE


class Adoption(Protocol):
    """Re-sign, as the acting admin, the records the engineer signed (service/offboarding.py)."""

    def adopt(self, s: Session, engineer_id: int) -> None: ...


class RotationSeal(EngineerSeal, Protocol):
    def rekey(self, draft: RekeyDraft) -> Rekeyed: ...


class EngineerRotationAuthority:
    """``rotate``: destroy an engineer's keys and re-invite them, in one unit of work."""

    def __init__(self, engineers: EngineerAuthority, adoption: Adoption) -> None:
        self.engineers, self.adoption = engineers, adoption

    def __repr__(self) -> str:
        return "EngineerRotationAuthority()"

    def rotate(self, request: RotateRequest, seal: RotationSeal) -> EngineerAnswer:
        if not isinstance(request, RotateRequest) or request.action != ROTATE:
            raise InvalidInput("not a key-rotation request")
        caller, name = checked_caller(request.caller), checked_name(request.name)
        expires_at = validation.number("invitation expiry", request.expires_at, 1, 2**40)
        pin = checked_bytes("organisation key", request.org_pin, KEY_BYTES)
        e = self.engineers
        with e.store.transaction() as s:
            identity = e.authorise(s, caller, org_pin=pin, admin=True)
            row = e.engineer(s, name)
            if row.id == identity.me.id:
                raise InvalidInput(
                    "you cannot rotate your own keys this way", hint="another admin can; or use `credvault passwd`"
                )
            if row.status != ACTIVE:
                raise InvalidInput(f"engineer {name!r} is {row.status}, not active")
            root = e.root_copy(s, identity.me)
            key = s.get(m.EngineerKey, (row.id, row.key_generation))
            made = seal.rekey(RekeyDraft(identity, root, engineer_row(row), key is not None))
            if not isinstance(made, Rekeyed) or (made.key_certificate is None) != (key is not None):
                raise InvalidInput("the keyholder's answer is not for this engineer's keys")
            if made.key_certificate is not None:
                certificate = checked_bytes("key record's certificate", made.key_certificate, SIGNATURE_BYTES)
                s.add(
                    m.EngineerKey(
                        engineer_id=row.id,
                        generation=row.key_generation,
                        state=ACTIVE,
                        sealing_public=row.sealing_public,
                        signing_public=row.signing_public,
                        certified_at=row.certified_at,
                        certificate=certificate,
                    )
                )
                s.flush()
            self.adoption.adopt(s, row.id)
            destroy_keys(s, row, e.clock(), keep_public=False)
            e.issue_invitation(s, identity, root, row, row.role, expires_at, seal)
            public = {"engineer": name, "old_generation": row.key_generation}
            seq = e.recorder.append(s, ROTATE, public=public)
            answer = EngineerAnswer(seq, identity, engineer_row(row), row.created_at)
        return answer


def destroy_keys(s: Session, row: m.Engineer, now: dt.datetime, *, keep_public: bool) -> None:
    """Every copy sealed to the engineer deleted, their engineer-key record of the current
    generation marked destroyed and their key record gone; ``keep_public`` (a removal): their
    public keys and certificate kept, so that the events they signed still verify (a rotation
    clears them: the engineer enrols new keys)."""
    mine = (m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == row.id)
    s.execute(delete(m.ClientKeySeal).where(*mine))
    s.execute(delete(m.RootSeal).where(m.RootSeal.engineer_id == row.id))
    key = s.get(m.EngineerKey, (row.id, row.key_generation))
    if key is not None:
        key.state, key.destroyed_at = "destroyed", now
    row.key_record = None
    if not keep_public:
        row.sealing_public = row.signing_public = row.certificate = None
        row.certified_at = None
