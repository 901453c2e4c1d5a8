"""Data subjects: finding, reporting and purging what the vault holds about a person."""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.purge_requests import SUBJECT
from vault.errors import InvalidInput, NotFound, VaultError
from vault.service import validation
from vault.service.purge import MIN_QUERY, _request
from vault.service.records import ReceiptInfo, SubjectMatch
from vault.service.secrets import SENSITIVE_NOT_SHOWN, sensitive_field_names
from vault.storage import models as m

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

    # -- subjects (a person's access and erasure requests) ---------------------------------------

    def find(self, query: str) -> list[SubjectMatch]:
        """Where a person appears in decrypted metadata (every version), across all clients."""
        needle = _needle(query)
        with self.core.store.transaction() as s:
            self.trust.my_admin_row(s)
            matches = self._find(s, needle)
            self.journal.append(s, "subject-find", public={"matches": len(matches)})
            return matches

    def report(self, query: str) -> dict[str, Any]:
        """What is held about a person: every match with the metadata held alongside it."""
        needle = _needle(query)
        with self.core.store.transaction() as s:
            me = self.trust.my_admin_row(s)
            matches = self._find(s, needle)
            self.journal.append(s, "subject-report", public={"matches": len(matches), "by": me.name})
            return {
                "generated_at": self.core.clock().isoformat(),
                "generated_by": me.name,
                "matches": [x.to_json() for x in matches],
                "note": "Passwords held for matched accounts are not reproduced here; they exist as encrypted values.",
            }

    def purge(self, query: str, *, request: str, vacuum: bool = False) -> list[ReceiptInfo]:
        """Purge every secret whose metadata matches (one receipt per client)."""
        _request(request)
        needle = _needle(query)
        with self.core.store.read() as s:
            self.trust.my_admin_row(s)
            by_client: dict[int, set[int]] = {}
            for match in self._find(s, needle):  # the secrets' data keys are opened here, as they are searched
                if match.secret_id is not None:
                    by_client.setdefault(match.client_id, set()).add(match.secret_id)
            if not by_client:
                raise NotFound("no secret matches that query", hint="`credvault subject find QUERY` shows the matches")
            targets = []
            for client_id, ids in sorted(by_client.items()):
                client = s.get(m.Client, client_id)
                assert client is not None
                targets.append((client_id, client.slug_blob, tuple(sorted(ids))))
        receipts = self.purges.keyholder.secrets(SUBJECT, targets, request)  # one unit: every client's receipt
        self.purges.scrub(vacuum=vacuum)
        return receipts

    def _find(self, s: Session, needle: str) -> list[SubjectMatch]:
        out: list[SubjectMatch] = []
        for client in s.scalars(select(m.Client).order_by(m.Client.id)):
            slug = self.clients.slug(s, client)
            name = self.keys.client_field(s, client, client.name_blob, "name").decode("utf-8")
            if needle in _fold(name):
                out.append(SubjectMatch(slug, client.id, None, None, None, "client name", name))
            for secret in s.scalars(select(m.Secret).where(m.Secret.client_id == client.id).order_by(m.Secret.id)):
                for row in s.scalars(
                    select(m.SecretVersion)
                    .where(m.SecretVersion.secret_id == secret.id)
                    .order_by(m.SecretVersion.version)
                ):
                    try:
                        meta = self.secrets.open(s, client, secret, row).metadata
                    except VaultError:
                        continue
                    fields = {
                        "name": meta.get("name"),
                        "username": meta.get("username"),
                        "url": meta.get("url"),
                        "host": meta.get("host"),
                        "note": meta.get("note"),
                        **(meta.get("fields") or {}),
                    }
                    hidden = sensitive_field_names(meta)  # found (to be purged), revealed only by checkout
                    for field, value in fields.items():
                        if isinstance(value, str) and needle in _fold(value):
                            shown = SENSITIVE_NOT_SHOWN if field in hidden else value
                            out.append(
                                SubjectMatch(slug, client.id, meta.get("name"), secret.id, row.version, field, shown)
                            )
        return out
