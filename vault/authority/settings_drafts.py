"""An admin's change of the vault settings through the team server, where the database is.

docs/server.md (session 14, helper C). In-process the settings' authority (``settings.py``) stores
the row the admin's keyholder signed and leaves its signature to every reader. Through the server
the read the keyholder signs over (``settings.get``: the row as stored, its signer's row; no event,
as in-process) is the draft, and the change (``settings.set``) is checked in full before anything
is written, in one write unit: the request's nonce; the caller (an active, certified admin); the
stored row locked and still the one the keyholder read (``replaces``; else ``CHANGED_SINCE_READ``,
409 ``stale-draft``); the new row signed by the caller (its ``signed_by`` the caller, else 403),
within bounds (400), dated near the server's clock (400) and its signature under the caller's
certified key over the vault id and both values (``LABEL_SIG_SETTINGS``; else 403). Then the row is
stored and the format-3 ``settings`` event (the setting changed and its new value, public, as
in-process) appended in the same unit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.policies_caller import CallerChecks, CallerGate
from vault.authority.serverjournal import ServerJournal
from vault.authority.settings import SettingsAuthority, _stored, checked_request
from vault.authority.settings_requests import (
    CHANGED_SINCE_READ,
    SET,
    SETTINGS,
    SettingsRequest,
    SettingsRows,
    in_bounds,
    settings_fields,
)
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_SETTINGS
from vault.errors import AccessDenied, ConcurrentChange, InvalidInput, NotFound, UntrustedRecord
from vault.storage import models as m
from vault.storage.engine import Store

CLOCK_SKEW_SECONDS = 300  # a row signed further from the server's clock is refused
NOT_SIGNED = "the settings are not signed by the calling admin"


class ServedSettingsAuthority:
    """The settings' read and an admin's signed change through the server (module docstring)."""

    def __init__(self, store: Store, checks: CallerChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.clock = store, clock
        self.gate = CallerGate(checks)
        self.settings = SettingsAuthority(store, checks, _NoRecorder(), clock)  # its read and rows

    def __repr__(self) -> str:
        return "ServedSettingsAuthority()"

    def read(self, request: SettingsRequest) -> SettingsRows:
        return self.settings.read(request)

    def write(self, request: SettingsRequest, event: ServerEvent) -> SettingsRows:
        checked_request(request)
        if request.action != SET or request.signed is None or request.changed is None:
            raise InvalidInput("a settings read is not a change")
        new = request.signed
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)
            caller = self.gate.authorise(s, request.caller, admin=True)
            me = caller.me
            info = s.get(m.VaultInfo, 1, with_for_update=True)
            if info is None:
                raise NotFound("this database holds no vault")
            if _stored(info) != request.replaces:
                raise ConcurrentChange(CHANGED_SINCE_READ)
            if new.signed_by != me.id or me.signing_public is None or new.signature is None:
                raise AccessDenied(NOT_SIGNED)
            if not in_bounds(new.retention_versions, new.cryptoperiod_days):
                raise InvalidInput("the settings are out of bounds")
            if abs(int(new.signed_at or 0) - int(self.clock().timestamp())) > CLOCK_SKEW_SECONDS:
                raise InvalidInput("the settings are signed at another time than now")
            try:
                signing.verify(me.signing_public, new.signature, LABEL_SIG_SETTINGS,
                               *settings_fields(caller.vault_id, new), what="the settings")  # fmt: skip
            except UntrustedRecord:
                raise AccessDenied(NOT_SIGNED, hint="read the settings again and sign what is stored") from None
            info.retention_versions, info.cryptoperiod_days = new.retention_versions, new.cryptoperiod_days
            info.settings_signed_by, info.settings_signed_at = new.signed_by, new.signed_at
            info.settings_signature = new.signature
            public = {request.changed: getattr(new, request.changed)}
            appended = ServerJournal(UnitCore(self.clock), event.seal).append(
                s, SETTINGS, event.request, engineer_id=me.id, key_generation=me.key_generation, public=public
            )
            s.flush()
            seq = int(appended.seq)
            rows = SettingsAuthority._rows(s, request.org_pin, caller.vault_id, caller.org_signing_public, me)
        return SettingsRows(seq, rows.vault_id, rows.org_signing_public, rows.org_chain, rows.me, rows.stored,
                            rows.signer)  # fmt: skip


class _NoRecorder:
    """The in-process journal's place: through the server every event is format 3 (``ServerEvent``)."""

    def append(self, *_: object, **__: object) -> int:
        raise InvalidInput("the team server appends format-3 events only")
