"""Data subjects: finding, reporting and purging what the vault holds about a person.

The search is the subjects' keyholder's (vault/keyholder/subjects.py): inside the
authority's unit of work (vault/authority/subjects.py) it opens every client's slug and
name and every version's metadata and hands them to ``_Match`` here, which knows what a
match is and hides the values of sensitive fields; the authority records how many places
were found (``subject-find``, ``subject-report``). A subject purge searches without an
event, then purges the matching secrets through the purges' keyholder (one receipt per
client, all in one unit of work).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import TYPE_CHECKING, Any

from vault.authority.purge_requests import SUBJECT
from vault.authority.subjects import SubjectAuthority, SubjectRows
from vault.errors import InvalidInput, NotFound
from vault.keyholder.sessionkeys import SessionKeys
from vault.keyholder.subjects import SubjectKeyholder
from vault.service import validation
from vault.service.hostlayer import HostSubjectTransport
from vault.service.policyparts import CallerTrust, Recorder
from vault.service.purge import MIN_QUERY, _request
from vault.service.records import ReceiptInfo, SubjectMatch
from vault.service.secrets import SENSITIVE_NOT_SHOWN, sensitive_field_names

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.purge import Purge
    from vault.service.secrets import Secrets


def _fold(value: str) -> str:
    return unicodedata.normalize("NFC", value).casefold()


def _needle(query: str) -> str:
    validation.valid_text("search", query, limit=validation.MAX_TEXT)
    if not query.isprintable():
        raise InvalidInput("the search contains control characters", hint="search for a name or an email address")
    needle = _fold(query.strip())
    if len(needle) < MIN_QUERY:
        raise InvalidInput(
            f"the search is shorter than {MIN_QUERY} characters", hint="search for a name or an email address"
        )
    return needle


class _Match:
    """Where ``needle`` appears in what the keyholder opened: a client's name, or a field of
    a version's metadata (a sensitive field's value is not shown: it is found, to be purged,
    and revealed only by checkout)."""

    def __init__(self, needle: str) -> None:
        self.needle = needle

    def client(self, slug: str, client_id: int, name: str) -> list[SubjectMatch]:
        if self.needle in _fold(name):
            return [SubjectMatch(slug, client_id, None, None, None, "client name", name)]
        return []

    def version(
        self, slug: str, client_id: int, secret_id: int, version: int, meta: dict[str, Any]
    ) -> list[SubjectMatch]:
        fields = {
            "name": meta.get("name"),
            "username": meta.get("username"),
            "url": meta.get("url"),
            "host": meta.get("host"),
            "note": meta.get("note"),
            **(meta.get("fields") or {}),
        }
        hidden = sensitive_field_names(meta)
        out = []
        for field, value in fields.items():
            if isinstance(value, str) and self.needle in _fold(value):
                shown = SENSITIVE_NOT_SHOWN if field in hidden else value
                out.append(SubjectMatch(slug, client_id, meta.get("name"), secret_id, version, field, shown))
        return out


def report_of(matches: list[SubjectMatch], rows: SubjectRows, now: dt.datetime) -> dict[str, Any]:
    """A subject report: every match with the metadata held alongside it, and who made it when."""
    return {
        "generated_at": now.isoformat(),
        "generated_by": rows.me.name,
        "matches": [x.to_json() for x in matches],
        "note": "Passwords held for matched accounts are not reproduced here; they exist as encrypted values.",
    }


def purge_targets(matches: list[SubjectMatch], rows: SubjectRows) -> list[tuple[int, bytes, tuple[int, ...]]]:
    """The secrets a subject purge destroys, per client in id order (id, slug blob, secret ids); none: NotFound."""
    by_client: dict[int, set[int]] = {}
    for match in matches:
        if match.secret_id is not None:
            by_client.setdefault(match.client_id, set()).add(match.secret_id)
    if not by_client:
        raise NotFound("no secret matches that query", hint="`credvault subject find QUERY` shows the matches")
    blobs = {c.client_id: c.slug_blob for c in rows.clients}
    return [(client_id, blobs[client_id], tuple(sorted(ids))) for client_id, ids in sorted(by_client.items())]


class Subjects:
    """Data subjects: ``vault.subjects.find/report/purge``."""

    def __init__(
        self, core: Core, keys: Keys, trust: Trust, journal: Journal, clients: Clients, secrets: Secrets, purges: Purge
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.clients = clients
        self.secrets = secrets
        self.purges = purges
        authority = SubjectAuthority(core.store, CallerTrust(trust), Recorder(journal))
        self.keyholder = SubjectKeyholder(
            HostSubjectTransport(authority, core), SessionKeys(keys, core.store), keys.client_keys, core.clock
        )

    # -- subjects (a person's access and erasure requests) ---------------------------------------

    def find(self, query: str) -> list[SubjectMatch]:
        """Where a person appears in decrypted metadata (every version), across all clients."""
        matches, _ = self.keyholder.find(_Match(_needle(query)))
        return matches

    def report(self, query: str) -> dict[str, Any]:
        """What is held about a person: every match with the metadata held alongside it."""
        matches, rows = self.keyholder.report(_Match(_needle(query)))
        return report_of(matches, rows, self.core.clock())

    def purge(self, query: str, *, request: str, vacuum: bool = False) -> list[ReceiptInfo]:
        """Purge every secret whose metadata matches (one receipt per client)."""
        _request(request)
        matches, rows = self.keyholder.select(_Match(_needle(query)))
        targets = purge_targets(matches, rows)
        receipts = self.purges.keyholder.secrets(SUBJECT, targets, request)  # one unit: every client's receipt
        self.purges.scrub(vacuum=vacuum)
        return receipts
