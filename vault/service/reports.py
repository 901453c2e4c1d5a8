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
from typing import TYPE_CHECKING, Literal, overload

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.authority.audit_requests import ACCESS, EventQuery
from vault.authority.audit_verify_requests import AT_RISK
from vault.authority.reports import ReportAuthority
from vault.authority.requests import Caller
from vault.errors import IntegrityError, NotFound, VaultError
from vault.keyholder.reports import ReportKeyholder
from vault.keyholder.sessionkeys import SessionKeys
from vault.service import auditpages, listing, validation
from vault.service.clientparts import TrustChecks
from vault.service.hostlayer import HostReportTransport
from vault.service.records import (
    AccessRecord,
    StaleSecret,
    StatusReport,
)
from vault.service.secrets import sensitive_field_names
from vault.storage import models as m
from vault.transport.https_reports import HttpsReportTransport

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.audit import Audit
    from vault.service.checkouts import Checkouts
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.policies import PolicyCheck
    from vault.service.secrets import Secrets
    from vault.transport.https import HttpsTransport


REVEAL_ACTIONS = ("reveal", "checkout")
VIEW = "secret-view"
LEGACY_VIEW = "(secret show, before sensitive fields were kept for checkout)"


class Reports:
    """Reports: ``vault.reports.access/at_risk/stale/status``."""

    def __init__(
        self,
        core: Core,
        keys: Keys,
        trust: Trust,
        journal: Journal,
        policy_check: PolicyCheck,
        clients: Clients,
        secrets: Secrets,
        checkouts: Checkouts,
        audit: Audit,
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.policy_check = policy_check
        self.clients = clients
        self.secrets = secrets
        self.checkouts = checkouts
        self.audit = audit
        self._keyholder: ReportKeyholder | None = None

    @overload
    def access(self, engineer: str, *, stream: Literal[False] = False) -> list[AccessRecord]: ...

    @overload
    def access(self, engineer: str, *, stream: Literal[True]) -> Iterator[AccessRecord]: ...

    def access(self, engineer: str, *, stream: bool = False) -> list[AccessRecord] | Iterator[AccessRecord]:
        """Every secret ``engineer`` revealed: when, why, and whether it changed since.

        ``stream=True``: as an iterator, a page of events read as the caller consumes it,
        each page in short read units of its own and checked by the keyholder before it is
        shown (bounded memory at any length of the log, no transaction held while the
        caller is slow; ``credvault report access`` prints as it reads); nothing is read
        before the first ``next()``. See
        ``_access_stream`` for when the ``report-access`` event is appended."""
        records = self._access_stream(engineer)
        return records if stream else list(records)

    def _access_stream(self, engineer: str) -> Iterator[AccessRecord]:
        """The report, its event first: a report that streams cannot wait for its end to be
        audited (what it printed is out already), so "nothing is shown before its event is
        committed" is kept by appending first. The caller's admin row and the named
        engineer are checked in a read (a refused or mistaken report appends nothing, as
        before); the ``report-access`` event is appended and committed in a short write
        (naming the engineer; no longer the count of records, unknown until the end); only
        then are the reveals read, a verified page at a time (``_iter_access_records``)."""
        validation.engineer_name(engineer)
        with self.core.store.read() as s:
            self.trust.my_admin_row(s)
            self._engineer_id(s, engineer)
        listing.append_after_read(self, "report-access", public={"engineer": engineer})
        yield from self._iter_access_records(engineer)

    def at_risk(self, engineer: str) -> list[AccessRecord]:
        """The latest reveal of each value ``engineer`` saw that has not changed since.

        It is read from the audit log, so the whole chain is verified first: a reveal event
        deleted or altered in the database would otherwise drop out of the list unseen."""
        return self.report_at_risk(engineer, self.verified_log())

    def verified_log(self, since: tuple[int, bytes] | None = None) -> tuple[int, bytes]:
        """Verify the audit chain (from genesis, or on from ``since``, a (seq, hash) this
        object verified moments ago); its head, or IntegrityError naming the first bad event.
        The authority streams the chain to an admin only (``report-at-risk``); the keyholder
        verifies it (service/auditcheck.py, keyholder/auditverify.py)."""
        check = self.audit.chain_check.run(AT_RISK, since=since if since is not None and since[0] > 0 else None)
        if not check.ok:
            raise IntegrityError(
                f"the audit log does not verify ({check.problem}), so the at-risk list could be incomplete",
                hint="run `credvault audit verify`; until it is explained, treat every value the engineer "
                "could read as at risk",
            )
        return check.head_seq, bytes.fromhex(check.head_hash)

    def report_at_risk(self, engineer: str, verified: tuple[int, bytes]) -> list[AccessRecord]:
        """``report_at_risk`` on a log verified up to ``verified`` (later events are checked here).

        Read without the write lock (``Store.read()``), a page of events per statement;
        the ``report-at-risk`` event is appended after, in a short write, and the list
        returned once it is committed (``listing.append_after_read``)."""
        self.verified_log(since=verified)
        latest: dict[tuple[str, str, str], AccessRecord] = {}
        for record in self._iter_access_records(engineer):
            if not record.changed_since:  # the latest reveal of a value that is still current
                latest[(record.client, record.secret, record.field)] = record
        out = sorted(latest.values(), key=lambda r: (r.client, r.secret, r.field))
        listing.append_after_read(self, "report-at-risk", public={"engineer": engineer, "records": len(out)})
        return out

    def _engineer_id(self, s: Session, engineer: str) -> int:
        validation.engineer_name(engineer)
        found = s.scalar(select(m.Engineer.id).where(m.Engineer.name == engineer))
        if found is None:
            raise NotFound(f"no engineer named {engineer!r}")
        return int(found)

    def _iter_access_records(self, engineer: str) -> Iterator[AccessRecord]:
        """The reveals of ``engineer`` in the order of the log: the caller (an admin) and the
        engineer checked in a short read, then a verified page of reveal events at a time
        (keyholder/audit.py), each asked of the authority and opened in read units of their
        own (auditpages.py): a slow consumer holds no transaction between pages."""
        with self.core.store.read() as s:
            self.trust.my_admin_row(s)
            engineer_id = self._engineer_id(s, engineer)
        me = self.keys.me()
        caller = Caller(me.engineer_id, me.key_generation)
        query = EventQuery(ACCESS, caller, engineer_id=engineer_id, actions=(*REVEAL_ACTIONS, VIEW))
        pages = self.audit.keyholder.pages(query)
        return auditpages.AccessReader(self).records(self.core.store, pages)

    def legacy_view_records(
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
            row = self.secrets.version(s, secret, version)
            names = sensitive_field_names(self.secrets.open(s, client, secret, row).metadata)
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
                self.changed_since(s, client.id, secret.id, row.version, field),
            )
            for field in names
        ]

    def changed_since(self, s: Session, client_id: int | None, secret_id: int | None, version: int, field: str) -> bool:
        client = s.get(m.Client, client_id) if client_id is not None else None
        secret = s.get(m.Secret, secret_id) if secret_id is not None else None
        if client is None or secret is None:
            return True  # purged or deleted: nothing left to change
        if secret.current_version == version:
            return False
        try:
            old = self.checkouts.field_value(s, client, secret, self.secrets.version(s, secret, version), field, "")
            new = self.checkouts.field_value(s, client, secret, self.secrets.version(s, secret, None), field, "")
        except VaultError:
            return False  # cannot tell: report it as still at risk
        return not hmac.compare_digest(old.encode("utf-8"), new.encode("utf-8"))

    # -- status and stale: split (authority/reports.py, keyholder/reports.py) -----------------

    def status(self) -> StatusReport:
        """Warnings an admin should act on: old keys, unfinished rotations, values to change,
        a schema older than this version of credvault, objects credvault did not create.

        An admin's (refused before any row but the caller's is read). The authority reads in
        ``Store.read()``, set-based (``ReportAuthority.status``); the keyholder verifies what
        it uses and opens the slugs and names (``ReportKeyholder.status``). No event."""
        return self._report_keyholder().status()

    def stale(self) -> list[StaleSecret]:
        """Secrets unused for longer than their client's stale_days (nothing is deleted); an
        admin's, read set-based and verified the same way. No event."""
        return self._report_keyholder().stale()

    def _report_keyholder(self) -> ReportKeyholder:
        """This Vault object's reports keyholder, over the in-process transport to its authority."""
        if self._keyholder is None:
            core = self.core
            authority = ReportAuthority(core.store, TrustChecks(self.trust), core.clock)
            self._keyholder = ReportKeyholder(
                HostReportTransport(authority, core),  # on the server's host: the layer removed
                SessionKeys(self.keys, core.store),
                self.clients._client_keyholder(),
                self.keys.client_keys,
                core.clock,
            )
        return self._keyholder


def https_report_keyholder(reports: Reports, https: HttpsTransport) -> ReportKeyholder:
    """A reports keyholder of this Vault's unlocked admin over a team server (``https``): its keys,
    client keyholder and key cache, ``status`` and ``stale`` read through the server."""
    core = reports.core
    return ReportKeyholder(
        HttpsReportTransport(https),
        SessionKeys(reports.keys, core.store),
        reports.clients._client_keyholder(),
        reports.keys.client_keys,
        core.clock,
    )
