"""Helpers of the tests of a re-invited engineer's confirmation through the team server (the carry-over of
their grants: ``test_carry_https.py``, ``test_carry_set_aside_https.py``): re-key and enrol an engineer
again over HTTPS, read the stored state, and tap the admin's transport (a compromised server's draft, or
the commit kept unsent)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from remote_admin_harness import Stop, stored_state
from server_harness import Keyed
from sqlalchemy import select

from vault.authority.confirm_requests import ConfirmCommit
from vault.authority.engineer_requests import EngineerAnswer
from vault.crypto import keyrecord
from vault.service.remote import RemoteVault
from vault.service.remote_admin2 import RemoteInvitations
from vault.storage import models as m
from vault.transport.https_enrolment import EnrolledRecord, enroll_over_https

CHANGED_IN_PLACE = ("engineers", "engineer_keys", "grants", "client_key_seals", "root_seals")
NEW_PASS = "the second passphrase"


def state(world: Keyed) -> dict[str, object]:
    return stored_state(world.served.db_url, CHANGED_IN_PLACE)


def re_enrolled(world: Keyed, admin: RemoteVault, name: str, monkeypatch: pytest.MonkeyPatch) -> EnrolledRecord:
    """``name`` granted acme and excl through the server, re-keyed there, and enrolled again over HTTPS."""
    monkeypatch.setattr(keyrecord, "DEFAULT_PARAMS", keyrecord.FLOOR)
    admin.grants.grant(name, "acme")
    admin.grants.grant(name, "excl")
    code = admin.engineers.rotate(name)
    served = world.served
    return enroll_over_https(served.url, ca_file=str(served.ca.ca_file), name=name, code=code,
                             passphrase=NEW_PASS, kdf_params=keyrecord.FLOOR)  # fmt: skip


def grants_of(world: Keyed, engineer_id: int) -> list[m.Grant]:
    with world.store.read() as s:
        found = list(s.scalars(select(m.Grant).where(m.Grant.engineer_id == engineer_id).order_by(m.Grant.id)))
        s.expunge_all()
    return found


class Tap:
    """The admin's ``HttpsTransport``: ``change`` applied to the pending rows' answer (a compromised
    server), and the commit named kept, not sent, if ``keep``."""

    def __init__(self, https: Any, change: Any = None, keep: bool = False) -> None:
        self.https, self.change, self.keep = https, change, keep
        self.commit: Any = None
        self.sent: list[str] = []

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        self.sent.append(name)
        if name == "engineers.confirm" and self.keep:
            self.commit = body
            raise Stop
        answer = self.https.call(name, body, request_id)
        if name == "engineers.pending_confirmation" and self.change is not None:
            assert isinstance(answer, EngineerAnswer) and answer.pending is not None
            answer = dataclasses.replace(answer, pending=self.change(answer.pending))
        return answer


def tapped(admin: RemoteVault, tap: Tap) -> Any:
    engineers: Any = admin.engineers
    return RemoteInvitations(engineers.keys, tap, engineers.clock, engineers.history.live_grants).keyholder  # type: ignore[arg-type]


def captured(admin: RemoteVault, name: str, fingerprint: str) -> ConfirmCommit:
    tap = Tap(admin.https, keep=True)
    with pytest.raises(Stop):
        tapped(admin, tap).confirm(name, fingerprint, None)
    assert isinstance(tap.commit, ConfirmCommit) and tap.commit.carry is not None
    return tap.commit  # type: ignore[no-any-return]
