"""Data subjects, where the engineer's keys are: verify every client's rows, then search them.

``SubjectKeyholder.search`` runs inside the authority's unit of work (``SubjectSeal``):
it checks the answer is this vault's and this admin's, opens each client's key versions
from the copies sealed to the recovery key (each record signed by an active admin, the
opened key matching its signed fingerprint), opens the client's slug and name (bound to
the client's id: a blob moved from another client does not open) and every version's
metadata (bound to client, secret and version: a version presented under another client
or secret does not open, and is passed over as an unreadable one always was), and hands
what it opened to the service's matcher. It never opens a password. The authority is
told only how many places were found.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, Protocol

from vault.authority.requests import Caller, SealedClientKey
from vault.authority.subjects import FIND, REPORT, SELECT, SubjectClient, SubjectRequest, SubjectRows
from vault.crypto import blobs, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL
from vault.errors import DecryptionFailed, UntrustedRecord, VaultError
from vault.keyholder.policies import Acting, verified_caller
from vault.keyholder.responses import ResponseChecks
from vault.records import SubjectMatch
from vault.storage.rows import KeyCache


class RecoveryKeys(Protocol):
    """An admin's unlocked keys: the session, and copies sealed to the recovery key opened."""

    def session(self) -> Acting: ...
    def sealing_public(self) -> bytes: ...
    def open_recovery(self) -> None: ...
    def recovery_version(self) -> int | None: ...
    def open_sealed(
        self, kind: str, recipient_id: int, version: int, blob: bytes, context: tuple[Any, ...]
    ) -> bytes: ...


class Matcher(Protocol):
    """Where a person appears in what was opened (the service's search)."""

    def client(self, slug: str, client_id: int, name: str) -> list[SubjectMatch]: ...
    def version(
        self, slug: str, client_id: int, secret_id: int, version: int, metadata: dict[str, Any]
    ) -> list[SubjectMatch]: ...


class SubjectTransport(Protocol):
    def search(self, request: SubjectRequest, seal: Any) -> SubjectRows: ...


class _Seal:
    def __init__(self, search: Callable[[SubjectRows], int]) -> None:
        self._search: Callable[[SubjectRows], int] | None = search

    def __repr__(self) -> str:
        return "SubjectSeal()"

    def search(self, draft: SubjectRows) -> int:
        if self._search is None:
            raise UntrustedRecord("this request is over")
        found, self._search = self._search(draft), None
        return found

    def close(self) -> None:
        self._search = None


class SubjectKeyholder:
    """Subject find and report for an admin: the search of every client, here."""

    def __init__(
        self, transport: SubjectTransport, keys: RecoveryKeys, cache: KeyCache, clock: Callable[[], dt.datetime]
    ) -> None:
        self.transport, self.keys, self.cache, self.clock = transport, keys, cache, clock

    def find(self, matcher: Matcher) -> tuple[list[SubjectMatch], SubjectRows]:
        return self._search(FIND, matcher)

    def report(self, matcher: Matcher) -> tuple[list[SubjectMatch], SubjectRows]:
        return self._search(REPORT, matcher)

    def select(self, matcher: Matcher) -> tuple[list[SubjectMatch], SubjectRows]:
        """The search before a subject purge (the purge records its own events)."""
        return self._search(SELECT, matcher)

    def _search(self, action: str, matcher: Matcher) -> tuple[list[SubjectMatch], SubjectRows]:
        self.keys.open_recovery()
        me = self.keys.session()
        found: list[SubjectMatch] = []
        searched: list[SubjectRows] = []

        def search(draft: SubjectRows) -> int:
            parts = (draft.vault_id, draft.org_signing_public, draft.org_chain, draft.me)
            checks = verified_caller(me, self.keys.sealing_public(), self.clock(), parts, admin=True)
            ids = [c.client_id for c in draft.clients]
            if ids != sorted(set(ids)):
                raise UntrustedRecord("the authority's clients are not one each, in order")
            found.clear()
            for client in draft.clients:
                found.extend(self._client(checks, client, matcher))
            searched.append(draft)
            return len(found)

        seal = _Seal(search)
        try:
            answer = self.transport.search(
                SubjectRequest(action, Caller(me.engineer_id, me.key_generation), me.org_signing_public), seal
            )
        finally:
            seal.close()
        if (
            not searched
            or answer.clients != searched[0].clients
            or answer.me != searched[0].me
            or (answer.seq < 1) != (action == SELECT)
        ):
            raise UntrustedRecord("the authority's answer is not the rows this keyholder searched")
        return found, answer

    def _client(self, checks: ResponseChecks, c: SubjectClient, matcher: Matcher) -> list[SubjectMatch]:
        sealed = {k.record.version: k for k in c.keys}
        if len(sealed) != len(c.keys):
            raise UntrustedRecord("the authority sent a client key version twice")

        def key(version: int) -> bytes:
            return self._client_key(checks, c.client_id, version, sealed.get(version))

        version = blobs.blob_key_version(c.slug_blob)
        slug = blobs.decrypt_client_field(key(version), version, c.slug_blob, c.client_id, "slug").decode("utf-8")
        version = blobs.blob_key_version(c.name_blob)
        name = blobs.decrypt_client_field(key(version), version, c.name_blob, c.client_id, "name").decode("utf-8")
        out = matcher.client(slug, c.client_id, name)
        secrets = set(c.secret_ids)
        for v in c.versions:
            if v.secret_id not in secrets:
                raise UntrustedRecord("the authority sent a version of a secret of another client")
            try:
                dek = blobs.unwrap_data_key(
                    key(v.key_version), v.key_version, v.wrapped_dek, c.client_id, v.secret_id, v.version
                )
                field = blobs.blob_key_version(v.metadata_blob)
                raw = blobs.decrypt_secret_field(
                    dek, field, v.metadata_blob, c.client_id, v.secret_id, v.version, "metadata"
                )
                metadata = json.loads(raw)
            except (VaultError, ValueError):
                continue  # a version that does not open is passed over, as it always was
            if isinstance(metadata, dict):
                out.extend(matcher.version(slug, c.client_id, v.secret_id, v.version, metadata))
        return out

    def _client_key(
        self, checks: ResponseChecks, client_id: int, version: int, sealed: SealedClientKey | None
    ) -> bytes:
        """Client key ``version``: the copy sealed to the recovery key, its record verified and
        its key matching the signed fingerprint, or the one held already (verified when cached)."""
        if sealed is not None:
            checks.client_key(sealed, client_id, version)
        cached = self.cache.get((client_id, version))
        if cached is not None:
            if sealed is not None and signing.client_key_fingerprint(cached) != sealed.record.fingerprint:
                raise UntrustedRecord(f"the signed record of client key version {version} names another key")
            return cached
        if sealed is None or sealed.blob is None:
            raise DecryptionFailed()
        recovery = self.keys.recovery_version()
        if (sealed.kind, sealed.recipient_id) != ("recovery", recovery):
            raise DecryptionFailed()
        context = (LABEL_CLIENT_KEY_SEAL, checks.vault_id, client_id, version, "recovery", sealed.recipient_id)
        key = self.keys.open_sealed("recovery", sealed.recipient_id, version, sealed.blob, context)
        if signing.client_key_fingerprint(key) != sealed.record.fingerprint:
            raise UntrustedRecord(f"the sealed client key does not match its signed version {version}")
        self.cache[(client_id, version)] = key
        return key
