"""The in-process transport of the engineers' requests (``inprocess.py`` is the checkout's).

``InProcessEngineerTransport(authority)`` hands each request value to the engineers'
authority and returns its answer: no copy, no serialisation. ``seal`` is the keyholder's
``EngineerSeal`` (vault/authority/engineers.py), the in-process seam: it lends the
authority the keyholder's hands inside its unit of work (sign the invitation drafted,
make the enrolling engineer's keys for the invitation shown, certify the pending keys
after checking the fingerprint compared), and signs an enrolment's event with the new
key. Only a transport inside one process can carry it; the team-server issue replaces it.
"""

from __future__ import annotations

from typing import Any

from vault.authority.engineer_removal import EngineerRemovalAuthority
from vault.authority.engineer_requests import (
    ConfirmRequest,
    EngineerAnswer,
    EnrollRequest,
    InviteRequest,
    KeyRecordRequest,
    KeyRecordRows,
    ListRequest,
    PassphraseRequest,
    RemovalAnswer,
    RemoveRequest,
    RotateRequest,
    UnlockRequest,
)
from vault.authority.engineer_rotation import EngineerRotationAuthority
from vault.authority.engineers import EngineerAuthority


class InProcessEngineerTransport:
    """Calls the engineers' authority directly."""

    def __init__(
        self, authority: EngineerAuthority, rotation: EngineerRotationAuthority, removal: EngineerRemovalAuthority
    ) -> None:
        self.authority, self.rotation, self.removal = authority, rotation, removal

    def __repr__(self) -> str:
        return "InProcessEngineerTransport()"

    def invite(self, request: InviteRequest, seal: Any) -> EngineerAnswer:
        return self.authority.invite(request, seal)

    def enroll(self, request: EnrollRequest, seal: Any) -> EngineerAnswer:
        return self.authority.enroll(request, seal)

    def confirm(self, request: ConfirmRequest, seal: Any) -> EngineerAnswer:
        return self.authority.confirm(request, seal)

    def list(self, request: ListRequest) -> EngineerAnswer:
        return self.authority.list(request)

    def change_passphrase(self, request: PassphraseRequest, seal: Any) -> EngineerAnswer:
        return self.authority.change_passphrase(request, seal)

    def key_record(self, request: KeyRecordRequest) -> KeyRecordRows:
        return self.authority.key_record(request)

    def unlock_failed(self, request: KeyRecordRequest) -> int:
        return self.authority.unlock_failed(request)

    def unlock(self, request: UnlockRequest) -> EngineerAnswer:
        return self.authority.unlock(request)

    def rotate(self, request: RotateRequest, seal: Any) -> EngineerAnswer:
        return self.rotation.rotate(request, seal)

    def remove(self, request: RemoveRequest, seal: Any) -> RemovalAnswer:
        return self.removal.remove(request, seal)
