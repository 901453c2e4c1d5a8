"""The engineers' listing over HTTPS: ``EngineerKeyholder``'s transport on the team server.

``HttpsEngineerTransport`` has the methods of ``InProcessEngineerTransport`` (``engineers.py``),
so the keyholder runs unchanged on it. ``list`` with the ``engineer-list`` action crosses as
the signed ``engineers.list`` request: the server appends the listing's ``engineer-list``
event in format 3 in the listing's unit and answers after the commit; the keyholder checks its
own row in the answer as in-process. ``confirm`` is a read of the pending rows and a commit of
the admin's certification with their digest (``server/confirm_routes.py``); for a re-invited
engineer the commit also carries the carry-over the keyholder made (``keyholder/carry.py``).
``change_passphrase`` is a read of the caller's stored key record and a commit of the record the
keyholder re-locked with its digest
(``server/passphrase_routes.py``). An enrolment over HTTPS needs no keyholder: it is
``https_enrolment.enroll_over_https``. Everything else (invite, enrolment through this value,
key records, unlock, rotation, removal, and ``whoami`` through this
value: ``HttpsTransport.whoami`` answers that) needs a seal, a draft or the local key record:
not served yet (``ConfigurationError``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vault.authority.confirm_requests import ConfirmCommit, pending_digest
from vault.authority.engineer_requests import (
    CONFIRM,
    LIST,
    PENDING,
    ConfirmRequest,
    EngineerAnswer,
    EnrollRequest,
    InviteRequest,
    KeyRecordDraft,
    KeyRecordRequest,
    KeyRecordRows,
    ListRequest,
    PassphraseRequest,
    RemovalAnswer,
    RemoveRequest,
    RotateRequest,
    UnlockRequest,
)
from vault.authority.passphrase_requests import PassphraseCommit, record_digest
from vault.errors import UntrustedRecord
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
        """``PENDING``: the pending rows (``engineers.pending_confirmation``, no event). ``CONFIRM``:
        the same read, the keyholder's certification of the rows it was shown (``seal.certify``:
        every check of the in-process confirmation), then the commit with their digest
        (``engineers.confirm``: the server recomputes them in its unit, 409 ``stale-draft`` if they
        changed, and appends ``engineer-confirm`` in format 3)."""
        if request.action == PENDING:
            return answer_of(self.https, "engineers.pending_confirmation", request, EngineerAnswer)
        fingerprint = request.fingerprint
        if request.action != CONFIRM or fingerprint is None:
            raise not_served(f"engineers.confirm with the action {request.action!r}")
        read = dataclasses.replace(request, action=PENDING)
        shown = answer_of(self.https, "engineers.pending_confirmation", read, EngineerAnswer)
        if shown.pending is None:
            raise UntrustedRecord("the server answered no pending enrolment")
        made = seal.certify(shown.pending)
        carried = seal.carry(shown.pending)  # a re-invitation's carry-over, verified and made there
        r, digest = request, pending_digest(shown.pending)
        commit = ConfirmCommit(r.caller, r.name, fingerprint, r.shown, r.org_pin, made, digest, carry=carried)
        return answer_of(self.https, "engineers.confirm", commit, EngineerAnswer)

    def change_passphrase(self, request: PassphraseRequest, seal: Any) -> EngineerAnswer:
        """The caller's stored key record (``engineers.passphrase_draft``), re-locked by the keyholder
        (``seal.relock``: opened with the old passphrase, its keys this session's), then the commit
        with the digest of the record it re-locked (``engineers.change_passphrase``: the server
        compares it in its unit, 409 ``stale-draft`` if the record changed, stores the new one and
        appends ``passphrase-change`` in format 3)."""
        draft = answer_of(self.https, "engineers.passphrase_draft", request, KeyRecordDraft)
        made = seal.relock(draft)
        commit = PassphraseCommit(request.caller, request.org_pin, made, record_digest(draft.key_record))
        return answer_of(self.https, "engineers.change_passphrase", commit, EngineerAnswer)

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
