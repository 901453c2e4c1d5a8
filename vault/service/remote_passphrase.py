"""An engineer's passphrase change through a team server (``RemoteVault.engineers.change_passphrase``).

The same ``EngineerKeyholder.change_passphrase`` as in-process, over ``HttpsEngineerTransport``:
the engineer's stored key record is read from the server (``engineers.passphrase_draft``),
opened here with the old passphrase (its keys must be this session's), locked under the new one
here, and committed with the digest of the record it was made on (``engineers.change_passphrase``,
signed by the engineer's certified key: the server stores it for that engineer only, and appends
the ``passphrase-change`` event in format 3). The passphrases never leave this machine; the
request carries the new record locked under the new passphrase. Once the server has stored it,
the key record kept on this machine (``serverpins.KeyRecordFile``, what a remote unlock opens) is
replaced by it: the old passphrase opens neither. Another machine of the same engineer still
holds the old copy: at its next unlock (``check_kept``) the server's record is read, found to
differ, and must open with the passphrase typed: the old passphrase unlocks nothing there either
(the unlock is refused, and that machine's copy replaced by the server's record), and the new
one then unlocks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from vault.authority.engineer_requests import EngineerAnswer, KeyRecordDraft, PassphraseRequest
from vault.authority.requests import Caller
from vault.crypto import keyrecord, sealing
from vault.errors import UntrustedRecord, WrongPassphrase
from vault.keyholder.engineers import EngineerKeyholder
from vault.service.remotekeys import RemoteKeys
from vault.service.serverpins import KeyRecordFile
from vault.service.sessions import UnlockedSession
from vault.transport.https import HttpsTransport
from vault.transport.https_calls import answer_of
from vault.transport.https_engineers import HttpsEngineerTransport

__all__ = ["RemotePassphrase"]


class _SessionKeys:
    """What ``EngineerKeyholder`` reads of ``Keys`` for a passphrase change: the session and its sealing key."""

    def __init__(self, keys: RemoteKeys) -> None:
        self._keys = keys

    def __repr__(self) -> str:
        return "_SessionKeys()"

    def me(self) -> UnlockedSession:
        return self._keys.me()

    def session_sealing_public(self, me: UnlockedSession) -> bytes:
        return sealing.KeyPair(me.sealing_private).public


class _Keeping:
    """The keyholder's seal, keeping the record it re-locked (to replace this machine's copy)."""

    def __init__(self, seal: Any) -> None:
        self._seal = seal
        self.record: bytes | None = None

    def __repr__(self) -> str:
        return "_Keeping(<redacted>)"

    def relock(self, draft: KeyRecordDraft) -> bytes:
        self.record = self._seal.relock(draft)
        return self.record


class _RelockTransport:
    """``HttpsEngineerTransport.change_passphrase``, remembering the record the server accepted."""

    def __init__(self, https: HttpsTransport) -> None:
        self.inner = HttpsEngineerTransport(https)
        self.stored: bytes | None = None

    def __repr__(self) -> str:
        return "_RelockTransport()"

    def change_passphrase(self, request: PassphraseRequest, seal: Any) -> EngineerAnswer:
        self.stored = None
        keeping = _Keeping(seal)
        answer = self.inner.change_passphrase(request, keeping)
        self.stored = keeping.record
        return answer


class RemotePassphrase:
    """``engineers.change_passphrase`` through the server (module docstring)."""

    def __init__(
        self,
        keys: RemoteKeys,
        https: HttpsTransport,
        clock: Callable[[], dt.datetime],
        kdf_params: Callable[[], keyrecord.Argon2Params | None],
    ) -> None:
        self.keys, self.https = keys, https
        self.transport = _RelockTransport(https)
        self.keyholder = EngineerKeyholder(
            self.transport,  # type: ignore[arg-type]  # only change_passphrase is asked of it
            _SessionKeys(keys),  # type: ignore[arg-type]
            clock,
            lambda: kdf_params() or keyrecord.DEFAULT_PARAMS,
        )

    def __repr__(self) -> str:
        return "RemotePassphrase()"

    def check_kept(self, kept: KeyRecordFile, passphrase: str) -> None:
        """After an unlock with this machine's copy of the key record (its session being tried): the
        record the server stores, if it is another, must open with the same passphrase (else the
        passphrase was changed from another machine: ``WrongPassphrase``, the old one unlocks
        nothing) and hold this session's keys; it then replaces this machine's copy."""
        me = self.keys.me()
        request = PassphraseRequest(Caller(me.engineer_id, me.key_generation), me.org_signing_public)
        draft = answer_of(self.https, "engineers.passphrase_draft", request, KeyRecordDraft)
        if draft.key_record == kept.record:
            return
        self.keyholder.verified_me(draft.identity, admin=False)
        try:
            bundle = keyrecord.open_record(draft.key_record, passphrase, me.vault_id, me.engineer_id, me.key_generation)
        except WrongPassphrase:
            # changed from another machine: the old passphrase unlocks nothing; this machine keeps the
            # record as the server stores it now (its own copy no longer unlocks), which the new one opens
            KeyRecordFile(me.vault_id, me.engineer_id, me.name, me.key_generation, draft.key_record).save()
            error = WrongPassphrase()
            error.hint = "your passphrase was changed from another machine: unlock with the new passphrase"
            raise error from None
        if bundle.signing_seed != me.signing_seed or bundle.sealing_private != me.sealing_private:
            raise UntrustedRecord("the key record the server stores holds other keys than this machine's")
        KeyRecordFile(me.vault_id, me.engineer_id, me.name, me.key_generation, draft.key_record).save()

    def change(self, old: str, new: str) -> None:
        """Re-lock the acting engineer's key record under ``new``, on the server and on this machine."""
        me = self.keys.me()
        kept = KeyRecordFile.load(me.vault_id, me.name)  # this machine's copy, replaced below
        if (kept.engineer_id, kept.key_generation) != (me.engineer_id, me.key_generation):
            raise UntrustedRecord("the key record kept on this machine is not this session's engineer or key")
        self.keyholder.change_passphrase(old, new)
        record = self.transport.stored
        if record is None:
            raise UntrustedRecord("the server answered a passphrase change this keyholder did not make")
        KeyRecordFile(me.vault_id, me.engineer_id, me.name, me.key_generation, record).save()
