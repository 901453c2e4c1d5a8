"""The server's layer over data keys, removed in-process on the team server's host.

``credvault serve`` layers every stored data key under its master key (``vault/server/layer.py``,
docs/server.md §5) and removes the layer only for a request whose event has committed. An admin
working on the server's host with its key file (``credvault --server-key FILE``) holds that master
key anyway (``Core.host_layer``); there the admin's in-process work that must open or re-wrap data
keys removes the layer itself: a secret's metadata opened (``Secrets.open``), a purge's
fingerprints (``purge._DataKeys.inner``), a subject search's versions (``HostSubjectTransport``: the
keyholder's search opens each version's metadata; with the layer on, every version was passed over as
one that does not open, and a search on a served vault found nothing but client names), the reports'
secrets (``HostReportTransport``: a secret's name is read from its metadata; ``reports.stale`` failed
and ``reports.status`` called every secret to change damaged), and here a client-key rotation's pages
(``HostRotationTransport``): each page's keys are unlayered before the keyholder re-wraps them
under the new client-key version, and layered again, bound to that version, before the authority
stores them. Nothing here decrypts a data key: the layer's recipes are the server's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from vault.authority.report_requests import ReportRequest, ReportRows, SecretState
from vault.authority.rotation_batches import RewrapSeal
from vault.authority.rotation_requests import Batch, BatchDone, BatchRequest, Rewrapped, WrappedKey
from vault.authority.secret_requests import (
    AddRequest,
    ListSecretsRequest,
    ReadRequest,
    SecretPage,
    SecretRows,
    UpdateRequest,
)
from vault.authority.subjects import SubjectRequest, SubjectRows, SubjectSeal, SubjectVersion
from vault.storage import models as m
from vault.storage.rows import VersionRow
from vault.transport.reports import InProcessReportTransport
from vault.transport.rotation import InProcessRotationTransport
from vault.transport.secrets import InProcessSecretTransport
from vault.transport.subjects import InProcessSubjectTransport


class _Unlayering:
    """A rewrap seal whose pages come to the keyholder without the layer."""

    def __init__(self, inner: RewrapSeal, layer: Any, core: Any) -> None:
        self.inner, self.layer, self.core = inner, layer, core
        self.rewrapped: list[tuple[int, int]] = []

    def rewrap(self, batch: Batch) -> tuple[Rewrapped, ...]:
        with self.core.store.read() as s:
            vault_id = self.core.vid(s)
            rotation = s.get(m.Rotation, batch.rotation_id)
            if rotation is None:
                return tuple(self.inner.rewrap(batch))  # the keyholder refuses a batch of no rotation
            client_id = rotation.client_id
            rows = tuple(row._replace(wrapped_dek=self._inner(s, vault_id, client_id, row)) for row in batch.rows)
        done = tuple(self.inner.rewrap(dataclasses.replace(batch, rows=rows)))
        self.rewrapped = [(r.secret_id, r.version) for r in done]
        return done

    def _inner(self, s: Any, vault_id: bytes, client_id: int, row: WrappedKey) -> bytes:
        stored = VersionRow(row.version, row.key_version, row.wrapped_dek, b"", b"")
        return bytes(self.layer.unlayered(s, vault_id, client_id, row.secret_id, stored).wrapped_dek)


class HostRotationTransport(InProcessRotationTransport):
    """The in-process rotation transport, its pages' layer removed and put back (``core.host_layer``)."""

    def __init__(self, authority: Any, core: Any) -> None:
        super().__init__(authority)
        self.core = core

    def __repr__(self) -> str:
        return "HostRotationTransport()"

    def rewrap(self, request: BatchRequest, seal: RewrapSeal) -> BatchDone:
        layer = self.core.host_layer
        if layer is None:
            return self.authority.rewrap(request, seal)
        unlayering = _Unlayering(seal, layer, self.core)
        done = self.authority.rewrap(request, unlayering)
        # committed under the new client-key version (the authority checks each key's header):
        # the layer goes back on those rows at once, in a unit of their own
        layer.layer_rows(self.core.store, unlayering.rewrapped)
        return done


class _UnlayeredSeal:
    """A secrets seal shown each draft with its current version's layer removed (``core.host_layer``)."""

    def __init__(self, inner: Any, layer: Any, core: Any) -> None:
        self.inner, self.layer, self.core = inner, layer, core

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _plain(self, draft: SecretRows) -> SecretRows:
        row = draft.version
        if row is None:
            return draft
        with self.core.store.read() as s:
            found = self.layer.unlayered(s, self.core.vid(s), draft.client.id, draft.secret.id, row)
        return draft if found is row else dataclasses.replace(draft, version=found)

    def admit(self, draft: SecretRows) -> None:
        self.inner.admit(self._plain(draft))

    def encrypt(self, draft: SecretRows, version: int) -> Any:
        return self.inner.encrypt(self._plain(draft), version)


class HostSecretTransport(InProcessSecretTransport):
    """The in-process secrets transport whose seals see the current version without the layer; the
    version an add or update writes is layered after its unit commits (``Secrets._layered``)."""

    def __repr__(self) -> str:
        return "HostSecretTransport()"

    def __init__(self, authority: Any, listing: Any, core: Any) -> None:
        super().__init__(authority, listing)
        self.core = core

    def _call(self, call: Any, request: Any, seal: Any) -> SecretRows:
        """``call`` with ``seal`` shown plain drafts, and its answer plain as the seal admitted it."""
        layer = self.core.host_layer
        if layer is None:
            return call(request, seal)  # type: ignore[no-any-return]
        plain = _UnlayeredSeal(seal, layer, self.core)
        return plain._plain(call(request, plain))

    def read(self, request: ReadRequest, seal: Any) -> SecretRows:
        return self._call(self.authority.read, request, seal)

    def add(self, request: AddRequest, seal: Any) -> SecretRows:
        return self._call(self.authority.add, request, seal)

    def update(self, request: UpdateRequest, seal: Any) -> SecretRows:
        return self._call(self.authority.update, request, seal)

    def list_secrets(self, request: ListSecretsRequest) -> Iterator[SecretPage]:
        """The listing's pages, each version's data key without the layer (the host's admin lists
        as the server's route lists after its event; the listing's event is appended after, as
        in-process)."""
        layer = self.core.host_layer
        for page in super().list_secrets(request):
            if layer is None or not page.secrets:
                yield page
                continue
            with self.core.store.read() as s:
                vault_id = self.core.vid(s)
                rows = tuple(
                    row
                    if row.version is None
                    else dataclasses.replace(
                        row, version=layer.unlayered(s, vault_id, row.client_id, row.secret_id, row.version)
                    )
                    for row in page.secrets
                )
            yield dataclasses.replace(page, secrets=rows)


class _UnlayeredSubjects:
    """A subjects seal shown every version's data key without the layer (``core.host_layer``)."""

    def __init__(self, inner: SubjectSeal, layer: Any, core: Any) -> None:
        self.inner, self.layer, self.core = inner, layer, core

    def __repr__(self) -> str:
        return "UnlayeredSubjectSeal()"

    def plain(self, rows: SubjectRows) -> SubjectRows:
        with self.core.store.read() as s:
            vault_id = self.core.vid(s)
            clients = tuple(
                dataclasses.replace(
                    c,
                    versions=tuple(
                        dataclasses.replace(v, wrapped_dek=self._inner(s, vault_id, c.client_id, v)) for v in c.versions
                    ),
                )
                for c in rows.clients
            )
        return dataclasses.replace(rows, clients=clients)

    def _inner(self, s: Any, vault_id: bytes, client_id: int, v: SubjectVersion) -> bytes:
        stored = VersionRow(v.version, v.key_version, v.wrapped_dek, b"", b"")
        return bytes(self.layer.unlayered(s, vault_id, client_id, v.secret_id, stored).wrapped_dek)

    def search(self, draft: SubjectRows) -> int:
        return self.inner.search(self.plain(draft))


class HostSubjectTransport(InProcessSubjectTransport):
    """The in-process subjects transport whose seal, and answer, show data keys without the layer."""

    def __init__(self, authority: Any, core: Any) -> None:
        super().__init__(authority)
        self.core = core

    def __repr__(self) -> str:
        return "HostSubjectTransport()"

    def search(self, request: SubjectRequest, seal: SubjectSeal) -> SubjectRows:
        layer = self.core.host_layer
        if layer is None:
            return self.authority.search(request, seal)
        plain = _UnlayeredSubjects(seal, layer, self.core)
        return plain.plain(self.authority.search(request, plain))


class HostReportTransport(InProcessReportTransport):
    """The in-process reports transport whose answers show each secret's data key without the layer."""

    def __init__(self, authority: Any, core: Any) -> None:
        super().__init__(authority)
        self.core = core

    def __repr__(self) -> str:
        return "HostReportTransport()"

    def status(self, request: ReportRequest) -> ReportRows:
        return self._plain(self.authority.status(request))

    def stale(self, request: ReportRequest) -> ReportRows:
        return self._plain(self.authority.stale(request))

    def _plain(self, rows: ReportRows) -> ReportRows:
        layer = self.core.host_layer
        if layer is None or not rows.secrets:
            return rows
        with self.core.store.read() as s:
            vault_id = self.core.vid(s)
            secrets = tuple(
                dataclasses.replace(x, wrapped_dek=self._inner(s, layer, vault_id, x)) for x in rows.secrets
            )
        return dataclasses.replace(rows, secrets=secrets)

    @staticmethod
    def _inner(s: Any, layer: Any, vault_id: bytes, x: SecretState) -> bytes:
        stored = VersionRow(x.version, x.key_version, x.wrapped_dek, b"", b"")
        return bytes(layer.unlayered(s, vault_id, x.client_id, x.id, stored).wrapped_dek)
