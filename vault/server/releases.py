"""A listing's or a report's release of data keys on a layered vault: the event first, then the layer off.

``checkouts.list`` answers each open checkout's current version, whose name the keyholder
opens under the version's data key. On a layered vault those data keys are under the
server's layer (docs/server.md §5), and a read that appends no event releases none ("no log,
no key"). ``ListingRelease.checkout_list`` is what the route does instead when the server
holds the master key and its signing key: it appends one format-3 ``checkout-list`` event in
a unit of its own, signed by the server and keeping the engineer's signed request, whose
public details name every version it releases (``released``: ``[client, secret, version]``,
sorted); only after that unit committed does it remove the layer, from those versions only.
A listing whose keys are all unlayered, or that lists nothing, appends nothing. The
engineer's listing shows only their own checkouts (``CheckoutListAuthority``), so an
engineer is released only the keys of versions they hold checked out.

``reports.status`` and ``reports.stale`` (``ListingRelease.report``) likewise: each answers, for
every secret it names (``status``: those flagged to be changed after a checkout; ``stale``:
those unused for longer than their client's stale-after), that secret's current version's
wrapped data key and metadata blob, because the secret's name is only in the metadata, under
the data key (docs/format.md §4), and the keyholder shows names. No other data key is in a
report's answer (clients' slugs are under the client key, which the admin holds), so the
report releases exactly the versions of the secrets it names, and none when it names none. It
appends one ``report-status`` / ``report-stale`` event (``released`` as above), commits it, then
removes the layer from those versions only. Both reports are an admin's: an engineer is
refused (403) before any row is read, so nothing is appended or released for them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from vault.authority.checkout_events import UnitCore
from vault.authority.report_requests import STALE, STATUS, ReportRows
from vault.authority.requests import ListResponse
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.server.handlers import Call
from vault.server.layer import ServerLayer, is_layered
from vault.storage.engine import Store
from vault.storage.rows import VersionRow

CHECKOUT_LIST = "checkout-list"
REPORT_STATUS, REPORT_STALE = "report-status", "report-stale"
REPORT_ACTIONS = {STATUS: REPORT_STATUS, STALE: REPORT_STALE}  # the report's action -> its event's


class ListingRelease:
    """The release of a listing's data keys after its event (module docstring)."""

    def __init__(self, store: Store, layer: ServerLayer, seal: ServerSeal, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.layer, self.journal = store, layer, ServerJournal(UnitCore(clock), seal)

    def __repr__(self) -> str:
        return f"ListingRelease({self.layer!r})"

    def checkout_list(self, call: Call, response: ListResponse) -> ListResponse:
        layered = [c for c in response.checkouts if is_layered(c.version.wrapped_dek)]
        if not layered or call.recorded is None:
            return response
        self._record(call, CHECKOUT_LIST, [(c.client.id, c.secret.id, c.version.version) for c in layered])
        with self.store.read() as s:  # committed: the layer comes off the versions the event names
            checkouts = tuple(
                dataclasses.replace(
                    c, version=self.layer.unlayered(s, response.vault_id, c.client.id, c.secret.id, c.version)
                )
                for c in response.checkouts
            )
        return dataclasses.replace(response, checkouts=checkouts)

    def report(self, call: Call, rows: ReportRows) -> ReportRows:
        """A report's answer with the layer off the versions it names, after its event (module
        docstring); as it is if none is layered (or without a kept request: fail closed)."""
        layered = [x for x in rows.secrets if is_layered(x.wrapped_dek)]
        if not layered or call.recorded is None:
            return rows
        self._record(call, REPORT_ACTIONS[rows.action], [(x.client_id, x.id, x.version) for x in layered])
        with self.store.read() as s:  # committed: the layer comes off the versions the event names
            secrets = []
            for x in rows.secrets:
                row = VersionRow(x.version, x.key_version, x.wrapped_dek, b"", x.metadata_blob)
                inner = self.layer.unlayered(s, rows.vault_id, x.client_id, x.id, row).wrapped_dek
                secrets.append(dataclasses.replace(x, wrapped_dek=inner))
        return dataclasses.replace(rows, secrets=tuple(secrets))

    def _record(self, call: Call, action: str, versions: list[tuple[int, int, int]]) -> None:
        """One format-3 ``action`` event naming ``versions`` (``released``, sorted), committed."""
        assert call.recorded is not None
        released = sorted(set(versions))
        me = call.caller.me
        with self.store.transaction() as s:
            self.journal.append(
                s,
                action,
                call.recorded,
                engineer_id=me.id,
                key_generation=me.key_generation,
                public={"released": [list(row) for row in released]},
            )
