"""The vault settings, where the database is: authorise, read the row as stored, store what
the keyholder signed, record, commit.

One unit of work per request. The caller is authorised first (``CallerGate``): any active,
certified engineer for ``settings-get`` (a check-in prunes by the retention), an admin for
``settings-set``; nothing of the settings is read before that (the caller's read takes
only the vault's identity from its row). Then the settings are read as stored, with the
row of the engineer who signed them: this module never decides whether they verify (the
keyholder does, and applies the defaults where they do not).

A change comes signed (``SettingsRequest.signed``): it is stored only if the stored row is
still the one the keyholder verified and signed over (``replaces``; else
``ConcurrentChange``: two admins changing the two settings at once cannot undo each
other's change), if it is signed by the caller and within bounds, with one ``settings``
event naming the setting changed and its new value. The signature itself is the
keyholder's to verify (on every read).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.settings_requests import (
    CHANGED_SINCE_READ,
    GET,
    SET,
    SETTING_NAMES,
    SETTINGS,
    SettingsRequest,
    SettingsRow,
    SettingsRows,
    in_bounds,
    is_count,
)
from vault.errors import ConcurrentChange, InvalidInput, NotFound
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import EngineerRow

SIGNATURE_BYTES = 64


class Recorder(Protocol):
    """Appends an event in the caller's unit of work (the Journal)."""

    def append(
        self, s: Session, action: str, *, client_id: int | None, secret_id: int | None, public: dict[str, Any] | None
    ) -> int:
        """The new event's seq."""


def _checked_row(row: object, what: str) -> SettingsRow:
    if not isinstance(row, SettingsRow):
        raise InvalidInput(f"the request carries no {what}")
    if not (is_count(row.retention_versions) and is_count(row.cryptoperiod_days)):
        raise InvalidInput(f"the {what} are not numbers")
    for value in (row.signed_by, row.signed_at):
        if value is not None and not is_count(value):
            raise InvalidInput(f"the {what} name no signer and time")
    if row.signature is not None and not isinstance(row.signature, bytes):
        raise InvalidInput(f"the {what} carry no signature")
    return row


def checked_request(request: object) -> SettingsRequest:
    """``request`` if every field is of its type and range, else InvalidInput (before any SQL)."""
    if not isinstance(request, SettingsRequest) or request.action not in (GET, SET):
        raise InvalidInput("unknown settings action")
    checked_caller(request.caller)
    checked_pin(request.org_pin)
    if request.action == GET:
        if (request.signed, request.replaces, request.changed) != (None, None, None):
            raise InvalidInput("a settings-get request carries no settings")
        return request
    signed = _checked_row(request.signed, "new settings")
    _checked_row(request.replaces, "settings it replaces")
    if request.changed not in SETTING_NAMES:
        raise InvalidInput("the request names no setting changed")
    if signed.signed_by != request.caller.engineer_id or not is_count(signed.signed_at):
        raise InvalidInput("the new settings are not signed by the caller")
    if not isinstance(signed.signature, bytes) or len(signed.signature) != SIGNATURE_BYTES:
        raise InvalidInput("the new settings' signature is not a signature")
    if not in_bounds(signed.retention_versions, signed.cryptoperiod_days):
        raise InvalidInput("the new settings are out of bounds")
    return request


class SettingsAuthority:
    """Get and set of the vault settings, given a request, one unit of work each."""

    def __init__(
        self, store: Store, checks: CallerChecks, recorder: Recorder, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.gate, self.recorder, self.clock = store, CallerGate(checks), recorder, clock

    def read(self, request: SettingsRequest) -> SettingsRows:
        """The settings as stored, with their signer's row."""
        checked_request(request)
        if request.action != GET:
            raise InvalidInput("a settings change is not a read")
        with self.store.read() as s:
            caller = self.gate.authorise(s, request.caller, admin=False)
            return self._rows(s, request.org_pin, caller.vault_id, caller.org_signing_public, caller.me)

    def write(self, request: SettingsRequest) -> SettingsRows:
        """Store the signed settings the request carries, if the stored ones are still those it
        replaces; one ``settings`` event."""
        checked_request(request)
        if request.action != SET:
            raise InvalidInput("a settings read is not a change")
        assert request.signed is not None and request.changed is not None
        with self.store.transaction() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)
            info = s.get(m.VaultInfo, 1, with_for_update=True)
            if info is None:
                raise NotFound("this database holds no vault")
            if _stored(info) != request.replaces:
                raise ConcurrentChange(CHANGED_SINCE_READ)
            new = request.signed
            info.retention_versions, info.cryptoperiod_days = new.retention_versions, new.cryptoperiod_days
            info.settings_signed_by, info.settings_signed_at = new.signed_by, new.signed_at
            info.settings_signature = new.signature
            public = {request.changed: getattr(new, request.changed)}
            seq = self.recorder.append(s, SETTINGS, client_id=None, secret_id=None, public=public)
            s.flush()
            written = self._rows(s, request.org_pin, caller.vault_id, caller.org_signing_public, caller.me)
        return SettingsRows(seq, *(getattr(written, f) for f in _ROW_FIELDS))

    @staticmethod
    def _rows(s: Session, pin: bytes, vault_id: bytes, org_public: bytes, me: EngineerRow) -> SettingsRows:
        """The settings as stored, with the row of the engineer they name as signer."""
        query = (
            select(m.VaultInfo, m.Engineer)
            .outerjoin(m.Engineer, m.Engineer.id == m.VaultInfo.settings_signed_by)
            .where(m.VaultInfo.id == 1)
        )
        found = s.execute(query).first()
        if found is None:
            raise NotFound("this database holds no vault")
        info, signer = found
        return SettingsRows(
            0,
            vault_id,
            org_public,
            org_chain(s, pin, org_public),
            me,
            _stored(info),
            None if signer is None else _engineer_row(signer),
        )


_ROW_FIELDS = ("vault_id", "org_signing_public", "org_chain", "me", "stored", "signer")


def _stored(info: m.VaultInfo) -> SettingsRow:
    return SettingsRow(
        info.retention_versions,
        info.cryptoperiod_days,
        info.settings_signed_by,
        info.settings_signed_at,
        info.settings_signature,
    )


def _engineer_row(e: m.Engineer) -> EngineerRow:
    return EngineerRow(*(getattr(e, f) for f in EngineerRow._fields))


__all__ = ["GET", "SET", "Recorder", "SettingsAuthority", "checked_request"]
