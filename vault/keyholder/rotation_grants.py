"""The grant and revoke events a client-key rotation's start is shown, checked by the keyholder.

The authority's word on a grant row is not enough to seal a new client key to its engineer:
a DBA can blank a revocation's columns, or replay an old signed grant row. So the start's
draft carries every grant and revoke event of the client (``StartDraft.grant_events``),
whose details are sealed under the client's audit key, and ``check_grant_events`` opens
them with the ring the keyholder itself decrypted: each grantee's grant must be vouched
for by its own event and taken back by none after it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from vault.authority.rotation_requests import Grantee, GrantEvent, StartDraft
from vault.crypto import blobs
from vault.errors import UntrustedRecord, VaultError


def _opened(event: GrantEvent, ring: bytes, client_id: int) -> dict[str, Any] | None:
    """The event's details, opened under the client's audit key (bound to the client, the
    number and the action; in format 3, the request's id in place of the number: an admin's
    grant through the team server or on its host), or None if they do not open."""
    version, blob = event.key_version, event.details_blob
    if not isinstance(version, int) or not isinstance(blob, bytes) or not 1 <= version <= len(ring) // 32:
        return None
    key = ring[(version - 1) * 32 : version * 32]
    request_id = event.request_id
    try:
        if isinstance(request_id, bytes):
            raw = blobs.decrypt_audit_detail_v3(key, version, blob, client_id, request_id, event.action)
        else:
            raw = blobs.decrypt_audit_detail(key, version, blob, client_id, event.seq, event.action)
        details = json.loads(raw)
    except (VaultError, ValueError):
        return None
    return details if isinstance(details, dict) else None


def check_grant_events(draft: StartDraft, ring: bytes) -> None:
    """Each grantee's grant is not taken back by a grant or revoke event the audit log holds
    after it (opened here: the authority's word on the grant row is not enough, a DBA can
    blank its revocation columns), and its own event, if the grant names one, is there and
    is that grant's. An event after the grant that does not open refuses the grantee too."""
    check_events(draft.client.id, draft.grant_events, draft.grantees, ring)


def check_events(client_id: int, grant_events: object, grantees: Sequence[Grantee], ring: bytes) -> None:
    """``check_grant_events`` for the grantees of ``client_id`` and its events (a client-key
    rotation's start, or a re-invited engineer's carry-over: ``keyholder/carry.py``)."""
    events = sorted(grant_events, key=lambda e: e.seq) if isinstance(grant_events, tuple) else None
    if events is None or len({e.seq for e in events}) != len(events):
        raise UntrustedRecord("the authority's grant events are not a list of distinct events")
    opened = [(e, _opened(e, ring, client_id)) for e in events]
    for grantee in grantees:
        grant, name = grantee.grant, grantee.engineer.name
        after = grant.event_seq or 0
        own = False  # a grant no event of the log vouches for is refused, whatever its row says
        legacy = False
        if grant.event_seq is None:  # an older grant row: its event is the one that names its id
            mine = [e.seq for e, d in opened if d is not None and e.action == "grant" and d.get("grant") == grant.id]
            if not mine:  # from before grant events named their grant (issue 12): the engineer's last grant event
                legacy = True
                mine = [
                    e.seq
                    for e, d in opened
                    if d is not None and e.action == "grant" and d.get("engineer") == name and "grant" not in d
                ]
            after = max(mine, default=0)
        for event, details in opened:
            if event.seq == grant.event_seq or (grant.event_seq is None and event.seq == after):
                own = (
                    details is not None
                    and event.action == "grant"
                    and details.get("engineer") == name
                    and (details.get("grant") == grant.id or (legacy and "grant" not in details))
                )
                continue
            ids = details.get("grant_ids") if details is not None else None
            named = details is not None and details.get("engineer") == name
            if (details is None and event.seq > after) or (named and event.seq > after):
                raise UntrustedRecord(
                    f"the audit log takes {name!r}'s grant back (or holds an event after it that does not "
                    "open): the new client key is sealed to nobody unconfirmed"
                )
            if named and event.action == "revoke" and isinstance(ids, list) and grant.id in ids:
                raise UntrustedRecord(f"the audit log records the revocation of {name!r}'s grant")
        if not own:
            raise UntrustedRecord(f"the audit log does not hold the event of {name!r}'s grant")
