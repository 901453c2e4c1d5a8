"""Reports for admins: what an engineer revealed, and what is at risk when they leave.

``report_access`` lists every reveal (checkout or plain reveal) by an engineer, with
the reason, and whether the revealed value has changed since: the revealed version's
value is compared, inside the vault, with the current one. A value that has not
changed is at risk if that engineer leaves: someone must change it on the equipment.
"""

from __future__ import annotations

import hmac

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.errors import NotFound, VaultError
from vault.service import validation
from vault.service.audit import AuditOps
from vault.service.checkouts import CheckoutOps
from vault.service.records import AccessRecord
from vault.storage import models as m

REVEAL_ACTIONS = ("reveal", "checkout")


class ReportOps(CheckoutOps, AuditOps):
    def report_access(self, engineer: str) -> list[AccessRecord]:
        """Every secret ``engineer`` revealed: when, why, and whether it changed since."""
        with self.store.transaction() as s:
            self._my_admin_row(s)
            out = self._access_records(s, engineer)
            self._append(s, "report-access", public={"engineer": engineer, "records": len(out)})
            return out

    def report_at_risk(self, engineer: str) -> list[AccessRecord]:
        """The latest reveal of each value ``engineer`` saw that has not changed since."""
        with self.store.transaction() as s:
            self._my_admin_row(s)
            latest: dict[tuple[str, str, str], AccessRecord] = {}
            for record in self._access_records(s, engineer):
                if not record.changed_since:  # the latest reveal of a value that is still current
                    latest[(record.client, record.secret, record.field)] = record
            out = list(latest.values())
            self._append(s, "report-at-risk", public={"engineer": engineer, "records": len(out)})
            return sorted(out, key=lambda r: (r.client, r.secret, r.field))

    def _access_records(self, s: Session, engineer: str) -> list[AccessRecord]:
        validation.engineer_name(engineer)
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == engineer)).first()
        if row is None:
            raise NotFound(f"no engineer named {engineer!r}")
        names = {e.id: e.name for e in s.scalars(select(m.Engineer))}
        events = s.scalars(
            select(m.AuditEvent)
            .where(m.AuditEvent.engineer_id == row.id, m.AuditEvent.action.in_(REVEAL_ACTIONS))
            .order_by(m.AuditEvent.seq)
        ).all()
        out = []
        for event in events:
            entry = self._entry(s, event, names)
            details = entry.details or {}
            field = str(details.get("field", "password"))
            version = int(details.get("version", 0))
            changed = self._changed_since(s, event.client_id, event.secret_id, version, field)
            out.append(
                AccessRecord(
                    event.seq,
                    entry.at,
                    entry.client or "?",
                    entry.secret or f"#{event.secret_id}",
                    field,
                    version,
                    details.get("reason"),
                    changed,
                )
            )
        return out

    def _changed_since(
        self, s: Session, client_id: int | None, secret_id: int | None, version: int, field: str
    ) -> bool:
        client = s.get(m.Client, client_id) if client_id is not None else None
        secret = s.get(m.Secret, secret_id) if secret_id is not None else None
        if client is None or secret is None:
            return True  # purged or deleted: nothing left to change
        if secret.current_version == version:
            return False
        try:
            old = self._field_value(s, client, secret, self._version(s, secret, version), field, "")
            new = self._field_value(s, client, secret, self._version(s, secret, None), field, "")
        except VaultError:
            return False  # cannot tell: report it as still at risk
        return not hmac.compare_digest(old.encode("utf-8"), new.encode("utf-8"))
