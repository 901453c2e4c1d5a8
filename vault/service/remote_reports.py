"""``RemoteVault.reports``: an admin's reports through a team server, with no database here.

``status`` and ``stale`` are the in-process ``ReportKeyholder`` over ``HttpsReportTransport``
(``reports.status`` / ``reports.stale``: the server reads, this machine verifies and opens).

``access`` and ``at_risk`` (``report access`` / ``report at-risk``) are built here from what this
machine can verify (``server/access_routes.py``, ``keyholder/access_report.py``):

1. the report's start (``reports.access`` naming no reveal): the report's event (``report-access``
   or ``report-at-risk``, naming the engineer) on record on the server before any reveal is read,
   as in-process; an engineer is refused there (403), an unknown name is ``NotFound``;
2. the engineer's reveal events (``reveal``, ``checkout``, ``secret-view``), read as this admin's
   audit log (``audit.log`` with the engineer and those actions as filters), every page's hashes,
   links and signatures checked here, the clients named by their slugs (``AdminContexts``);
3. for each page, the versions to compare (``reports.access`` naming the page's reveals), each on
   record first (an event of the report's action; on a layered vault naming every version whose
   data key leaves), then opened here: whether each value changed since, as in-process.

``at_risk`` verifies the whole chain here first (``RemoteAudit.verify``, an admin's), as
in-process. What differs from in-process: through the server the report's event is appended
before the reveals are read, so ``report-at-risk`` names the engineer but not the number of
records (unknown then, as ``report-access``'s is in-process), and each page of the report appends
one more event of its action (the page's release on record).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, overload

from vault.authority.access_report_values import ACCESS, AT_RISK
from vault.authority.audit_requests import LOG, EventQuery
from vault.authority.journal import us
from vault.authority.requests import Caller
from vault.authority.secrets import KEPT_REASON, VIEW_KEPT, VIEW_PUBLIC_ONLY
from vault.errors import IntegrityError
from vault.keyholder.access_report import AccessReportKeyholder, Comparison
from vault.keyholder.reports import ClientKeys, ReportKeyholder
from vault.records import AccessRecord, AuditEntry, StaleSecret, StatusReport
from vault.service import validation
from vault.service.remote_nouns import _Noun, reported
from vault.service.reports import LEGACY_VIEW, REVEAL_ACTIONS, VIEW
from vault.service.secrets import sensitive_field_names
from vault.storage.repositories.audit import ChainedRow
from vault.transport.https_reports import HttpsReportTransport

if TYPE_CHECKING:
    from vault.service.remote_audit import RemoteAudit
    from vault.service.remotekeys import RemoteKeys
    from vault.transport.https import HttpsTransport


class RemoteReports(_Noun):
    """``reports.status/stale/access/at_risk`` through the server (module docstring)."""

    def __init__(
        self,
        keys: RemoteKeys,
        https: HttpsTransport,
        client_keys: ClientKeys,
        audit: RemoteAudit,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.keys, self.https, self.audit = keys, https, audit
        transport = HttpsReportTransport(https)
        self.keyholder = ReportKeyholder(transport, keys, client_keys, keys.client_keys, clock)
        self.access_keyholder = AccessReportKeyholder(transport, keys, client_keys, keys.client_keys, clock)

    def __repr__(self) -> str:
        return "RemoteReports()"

    def status(self) -> StatusReport:
        with reported(self.https):
            return self.keyholder.status()

    def stale(self) -> list[StaleSecret]:
        with reported(self.https):
            return self.keyholder.stale()

    @overload
    def access(self, engineer: str, *, stream: Literal[False] = False) -> list[AccessRecord]: ...

    @overload
    def access(self, engineer: str, *, stream: Literal[True]) -> Iterator[AccessRecord]: ...

    def access(self, engineer: str, *, stream: bool = False) -> list[AccessRecord] | Iterator[AccessRecord]:
        """As ``Vault.reports.access``: every reveal by ``engineer``, and whether it changed since."""
        validation.engineer_name(engineer)
        with reported(self.https):
            engineer_id = self.access_keyholder.start(ACCESS, engineer)  # on record before any reveal is read
        records = self._records(ACCESS, engineer, engineer_id)
        return records if stream else list(records)

    def at_risk(self, engineer: str) -> list[AccessRecord]:
        """As ``Vault.reports.at_risk``: the whole chain verified here first, then the latest reveal
        of each value ``engineer`` saw that has not changed since."""
        validation.engineer_name(engineer)
        check = self.audit.verify()
        if not check.ok:
            raise IntegrityError(
                f"the audit log does not verify ({check.problem}), so the at-risk list could be incomplete",
                hint="run `credvault audit verify`; until it is explained, treat every value the engineer "
                "could read as at risk",
            )
        with reported(self.https):
            engineer_id = self.access_keyholder.start(AT_RISK, engineer)
        latest: dict[tuple[str, str, str], AccessRecord] = {}
        for record in self._records(AT_RISK, engineer, engineer_id):
            if not record.changed_since:
                latest[(record.client, record.secret, record.field)] = record
        return sorted(latest.values(), key=lambda r: (r.client, r.secret, r.field))

    def _records(self, action: str, engineer: str, engineer_id: int) -> Iterator[AccessRecord]:
        """The reveals of the engineer a verified page at a time, each page compared (module docstring)."""
        me = self.keys.me()
        with reported(self.https):
            self.audit.signers.checked(refresh=True)  # a stream's signers, read afresh
        reader = self.audit.admin_entries()
        caller = Caller(me.engineer_id, me.key_generation)
        query = EventQuery(LOG, caller, None, engineer_id, None, (*REVEAL_ACTIONS, VIEW))
        pages = self.audit.keyholder.pages(query)
        while True:
            with reported(self.https):
                events = next(pages, None)
                if events is None:
                    return
                entries = [(e, reader.entry(e)) for e in events]
                comparison = self._compare(action, engineer, engineer_id, entries)
            yield from [r for e, entry in entries for r in _records(e, entry, comparison)]

    def _compare(
        self, action: str, engineer: str, engineer_id: int, entries: Sequence[tuple[ChainedRow, AuditEntry]]
    ) -> Comparison | None:
        items = set()
        for e, entry in entries:
            if e.client_id is None or e.secret_id is None:
                continue
            details = entry.details or {}
            if e.action == VIEW and details.get("fields") != VIEW_KEPT:
                if details.get("fields") != VIEW_PUBLIC_ONLY:
                    items.add((e.client_id, e.secret_id, 0, us(entry.at)))  # an old view: the version then
                continue
            version = details.get("version", 0)
            items.add((e.client_id, e.secret_id, version if type(version) is int and version > 0 else 0, 0))
        if not items:
            return None
        return self.access_keyholder.compare(action, engineer, engineer_id, sorted(items))


def _records(e: ChainedRow, entry: AuditEntry, comparison: Comparison | None) -> Iterator[AccessRecord]:
    """An event's records, as ``auditpages.AccessReader._records`` makes them in-process."""
    details = entry.details or {}
    client = entry.client or "?"
    name = None
    if comparison is not None and e.client_id is not None and e.secret_id is not None:
        name = comparison.name(e.client_id, e.secret_id)
    secret = name if name is not None else (entry.secret or f"#{e.secret_id}")
    if e.action == VIEW and details.get("fields") == VIEW_KEPT:  # an update through the server that kept it
        version = int(details.get("version", 0))
        changed = True
        if comparison is not None and e.client_id is not None and e.secret_id is not None:
            changed = comparison.changed(e.client_id, e.secret_id, version, "password")
        yield AccessRecord(e.seq, entry.at, client, secret, "password", version, KEPT_REASON, changed)
        return
    if e.action == VIEW:
        if details.get("fields") != VIEW_PUBLIC_ONLY and comparison is not None and e.client_id and e.secret_id:
            old = comparison.at(e.client_id, e.secret_id, us(entry.at))
            if old is not None:
                version, metadata = old
                for field in sensitive_field_names(metadata):
                    changed = comparison.changed(e.client_id, e.secret_id, version, field)
                    yield AccessRecord(e.seq, entry.at, client, secret, field, version, LEGACY_VIEW, changed)
        return
    field = str(details.get("field", "password"))
    version = int(details.get("version", 0))
    changed = True
    if comparison is not None and e.client_id is not None and e.secret_id is not None:
        changed = comparison.changed(e.client_id, e.secret_id, version, field)
    yield AccessRecord(e.seq, entry.at, client, secret, field, version, details.get("reason"), changed)
