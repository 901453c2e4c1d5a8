"""An admin's search for a data subject and its purge through a team server, with no database on this machine.

``RemoteVault.subjects.find``, ``report`` and ``purge`` (``credvault --server URL subject find`` / ``subject
report`` / ``purge subject``)
run the in-process ``SubjectKeyholder`` unchanged over ``HttpsSubjectTransport``: the server answers
every client's rows page by page, each page on record first (``subject-search``) and its data keys'
layer removed after; this machine verifies every row (the client keys opened from the copies sealed
to the recovery key of the admin's root bundle, each against its signed record), opens every slug,
name and version's metadata and matches the query with the in-process matcher (``_Match``): the server
never sees the query, only that an admin searched (and, for a purge, under which request reference).

The purge then runs the in-process ``PurgeKeyholder`` once per client with a match (``subject`` kind,
over ``HttpsPurgeTransport``: a draft, a receipt signed over the commit's request id, a commit, each
client its own request and unit), fingerprinting the data keys this search opened (``_SearchedKeys``):
a version the search did not open (added since) is refused here (``ConcurrentChange``: run the purge
again). In-process every client's purge is one unit; through the server, an error at one client
leaves the clients before it purged (each with its receipt and event) and the rest untouched: running
the purge again searches again and purges what still matches. ``report`` is ``find`` with the
in-process report's shape (its search's event says ``report``); freed pages are scrubbed on the host
(``--vacuum``: the server's host vacuums once the last client's purge committed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from vault.authority.purge_requests import SUBJECT, PurgedVersion
from vault.authority.purge_subject_values import PURGE, REPORT
from vault.authority.subjects import SubjectRows, SubjectVersion
from vault.crypto import blobs
from vault.crypto.labels import BLOB_SERVER_LAYER
from vault.errors import ConcurrentChange, UntrustedRecord
from vault.keyholder.purge import PurgeKeyholder
from vault.keyholder.subjects import SubjectKeyholder
from vault.records import ReceiptInfo, SubjectMatch
from vault.service.purge import _request as checked_request_ref
from vault.service.remote_admin2 import RemotePurge
from vault.service.remote_nouns import _Noun
from vault.service.remotekeys import RemoteKeys
from vault.service.subjects import _Match, _needle, purge_targets, report_of
from vault.storage.rows import KeyCache
from vault.transport.https import HttpsTransport
from vault.transport.https_subjects import HttpsSubjectTransport

SEARCH_AGAIN = "the secret changed since this machine searched it: run the purge again"


class _SearchedKeys:
    """``DataKeys`` of the purge keyholder for a subject's purge: the client keys the search opened
    (each verified there against its signed record) and every version's data key as the search's page
    answered it (its layer removed on the server, on record); where the draft's is stored without the
    layer, the two must be equal."""

    def __init__(self, cache: KeyCache, searched: SubjectRows) -> None:
        self.cache = cache
        self.versions: dict[tuple[int, int, int], SubjectVersion] = {
            (c.client_id, v.secret_id, v.version): v for c in searched.clients for v in c.versions
        }

    def __repr__(self) -> str:
        return f"SearchedKeys(versions={len(self.versions)})"

    def client_key(self, client_id: int, version: int) -> bytes:
        key = self.cache.get((client_id, version))
        if key is None:
            raise ConcurrentChange(SEARCH_AGAIN)
        return key

    def inner(self, client_id: int, v: PurgedVersion) -> bytes:
        searched = self.versions.get((client_id, v.secret_id, v.version))
        if searched is None or searched.key_version != v.key_version:
            raise ConcurrentChange(SEARCH_AGAIN)
        if not blobs.has_type(v.wrapped_dek, BLOB_SERVER_LAYER) and v.wrapped_dek != searched.wrapped_dek:
            raise UntrustedRecord("the purge's draft names another data key than the one searched")
        return searched.wrapped_dek

    def forget(self, client_id: int) -> None:
        """A subject purge leaves the client: nothing to forget."""


class RemoteSubjects(_Noun):
    """An admin's ``subjects.find``, ``report`` and ``purge`` through the server (module docstring)."""

    def __init__(
        self, keys: RemoteKeys, https: HttpsTransport, clock: Callable[[], dt.datetime], purge: RemotePurge
    ) -> None:
        self.keys, self.https, self.clock, self.purges = keys, https, clock, purge

    def __repr__(self) -> str:
        return "RemoteSubjects()"

    def find(self, query: str) -> list[SubjectMatch]:
        """As ``Vault.subjects.find``, through the server (an admin's)."""
        needle = _needle(query)
        self.keys.me()
        matches, _ = self._keyholder(HttpsSubjectTransport(self.https)).find(_Match(needle))
        return matches

    def report(self, query: str) -> dict[str, Any]:
        """As ``Vault.subjects.report``, through the server (an admin's)."""
        needle = _needle(query)
        self.keys.me()
        matches, rows = self._keyholder(HttpsSubjectTransport(self.https, REPORT)).report(_Match(needle))
        return report_of(matches, rows, self.clock())

    def purge(self, query: str, *, request: str, vacuum: bool = False) -> list[ReceiptInfo]:
        """As ``Vault.subjects.purge``, through the server: one receipt per client, each committed on its own."""
        checked_request_ref(request)
        needle = _needle(query)
        self.keys.me()
        matches, rows = self._keyholder(HttpsSubjectTransport(self.https, PURGE, request)).select(_Match(needle))
        targets = purge_targets(matches, rows)
        keyholder = PurgeKeyholder(
            self.purges.transport, self.keys, self.purges.lookup, _SearchedKeys(self.keys.client_keys, rows), self.clock
        )
        receipts: list[ReceiptInfo] = []
        for target in targets:
            receipts.extend(keyholder.secrets(SUBJECT, [target], request))
        if vacuum and receipts:  # once, after the last client's purge committed: the host vacuums them all
            receipts[-1] = self.purges.vacuumed(receipts[-1])
        return receipts

    def _keyholder(self, transport: HttpsSubjectTransport) -> SubjectKeyholder:
        return SubjectKeyholder(transport, self.keys, self.keys.client_keys, self.clock)
