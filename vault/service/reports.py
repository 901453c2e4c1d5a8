"""Reports for admins: what an engineer revealed, and what is at risk when they leave.

``report_access`` lists every reveal (checkout or plain reveal) by an engineer, with
the reason, and whether the revealed value has changed since: the revealed version's
value is compared, inside the vault, with the current one. A value that has not
changed is at risk if that engineer leaves: someone must change it on the equipment.
The at-risk list is made only from a log whose whole chain verifies (issue 12, item 7).

Sensitive custom fields (secrets.py) are revealed only by checkout, so they appear here
like the password. Before they existed, ``secret show`` printed every custom field: a
``secret-view`` event without the "public-only" mark counts as a reveal of each
sensitive field of the version current at that time.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.errors import IntegrityError, NotFound, VaultError
from vault.service import auditpages, listing, validation
from vault.service.audit import AuditOps
from vault.service.policyadmin import PolicyAdminOps
from vault.service.records import AccessRecord
from vault.service.secrets import sensitive_field_names
from vault.storage import models as m

REVEAL_ACTIONS = ("reveal", "checkout")
VIEW = "secret-view"
LEGACY_VIEW = "(secret show, before sensitive fields were kept for checkout)"


class ReportOps(PolicyAdminOps, AuditOps):
    def report_access(self, engineer: str) -> list[AccessRecord]:
        """Every secret ``engineer`` revealed: when, why, and whether it changed since.

        Read without the write lock, a page of events per statement (auditpages.py); the
        ``report-access`` event is appended after, and the report returned once it is committed."""
        with self.store.read() as s:
            self._my_admin_row(s)
            out = self._access_records(s, engineer)
        listing.append_after_read(self, "report-access", public={"engineer": engineer, "records": len(out)})
        return out

    def report_at_risk(self, engineer: str) -> list[AccessRecord]:
        """The latest reveal of each value ``engineer`` saw that has not changed since.

        It is read from the audit log, so the whole chain is verified first: a reveal event
        deleted or altered in the database would otherwise drop out of the list unseen."""
        return self._report_at_risk(engineer, self._verified_log())

    def _verified_log(self, since: tuple[int, bytes] | None = None) -> tuple[int, bytes]:
        """Verify the audit chain (from genesis, or on from ``since``, a (seq, hash) this
        object verified moments ago); its head, or IntegrityError naming the first bad event."""
        check = self.verify_audit(since=since if since is not None and since[0] > 0 else None)
        if not check.ok:
            raise IntegrityError(
                f"the audit log does not verify ({check.problem}), so the at-risk list could be incomplete",
                hint="run `credvault audit verify`; until it is explained, treat every value the engineer "
                "could read as at risk",
            )
        return check.head_seq, bytes.fromhex(check.head_hash)

    def _report_at_risk(self, engineer: str, verified: tuple[int, bytes]) -> list[AccessRecord]:
        """``report_at_risk`` on a log verified up to ``verified`` (later events are checked here)."""
        self._verified_log(since=verified)
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
        return list(self._iter_access_records(s, engineer))

    def _iter_access_records(self, s: Session, engineer: str) -> Iterator[AccessRecord]:
        """The reveals of ``engineer`` in the order of the log, a page of events per statement."""
        validation.engineer_name(engineer)
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == engineer)).first()
        if row is None:
            raise NotFound(f"no engineer named {engineer!r}")
        return auditpages.AccessReader(self, s).records(row.id)

    def _legacy_view_records(
        self, s: Session, event: m.AuditEvent, client_slug: str, secret_name: str | None, at: dt.datetime
    ) -> list[AccessRecord]:
        """The sensitive fields a ``secret show`` logged before they were kept for checkout
        printed: those of the version current then (or now, if that one is gone)."""
        client = s.get(m.Client, event.client_id) if event.client_id is not None else None
        secret = s.get(m.Secret, event.secret_id) if event.secret_id is not None else None
        if client is None or secret is None:
            return []  # purged or deleted: nothing left to change
        version = s.scalar(
            select(func.max(m.SecretVersion.version)).where(
                m.SecretVersion.secret_id == secret.id, m.SecretVersion.created_at <= at
            )
        )
        try:
            row = self._version(s, secret, version)
            names = sensitive_field_names(self._open(s, client, secret, row).metadata)
        except VaultError:
            return []
        name = secret_name or f"#{event.secret_id}"
        return [
            AccessRecord(
                event.seq,
                at,
                client_slug,
                name,
                field,
                row.version,
                LEGACY_VIEW,
                self._changed_since(s, client.id, secret.id, row.version, field),
            )
            for field in names
        ]

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
