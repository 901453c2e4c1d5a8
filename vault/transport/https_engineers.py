"""The engineers' listing over HTTPS: ``EngineerKeyholder``'s transport on the team server.

``HttpsEngineerTransport`` has the methods of ``InProcessEngineerTransport`` (``engineers.py``),
so the keyholder runs unchanged on it. ``list`` with the ``engineer-list`` action crosses as
the signed ``engineers.list`` request: the server appends the listing's ``engineer-list``
event in format 3 in the listing's unit and answers after the commit; the keyholder checks its
own row in the answer as in-process. Everything else (invite, enrolment, confirmation,
passphrase change, key records, unlock, rotation, removal, and ``whoami`` through this
value: ``HttpsTransport.whoami`` answers that) needs a seal, a draft or the local key record:
not served yet (``ConfigurationError``).
"""

from __future__ import annotations

from typing import Any

from vault.authority.engineer_requests import (
    LIST,
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
from vault.transport.https_calls import Calls, answer_of, not_served


class HttpsEngineerTransport:
    """``engineers.list`` through a team server (module docstring)."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsEngineerTransport()"

    def list(self, request: ListRequest) -> EngineerAnswer:
        if request.action != LIST:
            raise not_served("engineers.whoami through a listing request")
        return answer_of(self.https, "engineers.list", request, EngineerAnswer)

    def invite(self, request: InviteRequest, seal: Any) -> EngineerAnswer:
        raise not_served("engineers.invite")

    def enroll(self, request: EnrollRequest, seal: Any) -> EngineerAnswer:
        raise not_served("engineers.enroll")

    def confirm(self, request: ConfirmRequest, seal: Any) -> EngineerAnswer:
        raise not_served("engineers.confirm")

    def change_passphrase(self, request: PassphraseRequest, seal: Any) -> EngineerAnswer:
        raise not_served("engineers.change_passphrase")

    def key_record(self, request: KeyRecordRequest) -> KeyRecordRows:
        raise not_served("reading a key record")

    def unlock_failed(self, request: KeyRecordRequest) -> int:
        raise not_served("recording a failed unlock")

    def unlock(self, request: UnlockRequest) -> EngineerAnswer:
        raise not_served("engineers.unlock")

    def rotate(self, request: RotateRequest, seal: Any) -> EngineerAnswer:
        raise not_served("engineers.rotate")

    def remove(self, request: RemoveRequest, seal: Any) -> RemovalAnswer:
        raise not_served("engineers.remove")
