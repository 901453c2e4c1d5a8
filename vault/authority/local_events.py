"""An admin's work on the team server's host, recorded in format 3.

Once a vault has a certified server key, its audit chain is the server's: every event after
the first format-3 one must be format 3 (a format-2 event there is a downgrade ``audit verify``
refuses), and an in-process append is refused. The admin's nouns that no route serves yet
(clients, grants, policies, engineers, settings...) would then have no way to record anything.
An admin working **on the server's host**, with the server key file (``credvault --server-key
FILE ...``), records them in format 3 instead:

* the admin's keyholder signs, in-process, a request of the operation ``local.record`` whose
  envelope is a ``LocalRecord`` (caller, action, client, secret) under a fresh request id, as
  ``httpsig.sign_request`` signs any request (``@authority`` ``local``);
* private details are sealed to that request id (``LABEL_AUDIT_DETAIL_V3``), public ones kept;
* ``ServerJournal`` appends the event in the same unit of work and the server key signs it.

So ``audit verify`` checks every such event as it checks the server's: the server's signature,
the admin's signed request naming this action on this client, its time within the window. Only
someone holding both an admin's unlocked key and the server key file can write one. Actions only
the server's routes append (a reveal and what releases or lists it: ``eventrequest.SERVED_ONLY``)
are refused here as before: the layer over data keys comes off only through the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from vault.authority.local_requests import LocalRecord
from vault.authority.requests import Caller
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.crypto.serverkey import SigningKeys
from vault.crypto.signing import SigningKey
from vault.errors import ConfigurationError
from vault.storage import models as m
from vault.storage.rows import EngineerRecord
from vault.wire import codec, httpsig
from vault.wire.eventrequest import (
    CONTENT_TYPE,
    LOCAL_AUTHORITY,
    LOCAL_OPERATION,
    METHOD,
    SERVED_ONLY,
    keyid_of,
    record,
    route_path,
)

SERVED_ONLY_HINT = "check out, reveal and check in through the team server (credvault --server URL ...)"


def append_local(
    journal: ServerJournal,
    s: Session,
    action: str,
    *,
    actor: EngineerRecord,
    seed: bytes,
    request_id: bytes,
    sealed: Callable[[], tuple[int, bytes]] | None,
    client_id: int | None,
    secret_id: int | None,
    public: dict[str, Any] | None,
) -> m.AuditEvent:
    """Append ``action`` in format 3 for ``actor`` (signing its request with ``seed``); ``sealed``:
    the keyholder's private details, sealed to ``request_id`` (audit-key generation, blob)."""
    if action in SERVED_ONLY:
        raise ConfigurationError(f"a {action} is recorded only by the team server", hint=SERVED_ONLY_HINT)
    body = codec.envelope(
        LOCAL_OPERATION, LocalRecord(Caller(actor.id, actor.key_generation), action, client_id, secret_id), request_id
    )
    path = route_path(LOCAL_OPERATION)
    keyid = keyid_of(actor.id, actor.key_generation)
    created = int(journal.core.clock().timestamp())  # the event's own clock: the window is checked against it
    headers = httpsig.sign_request(
        METHOD, LOCAL_AUTHORITY, path, CONTENT_TYPE, body, SigningKey(seed), keyid, created=created
    )
    recorded = record(METHOD, LOCAL_AUTHORITY, path, headers, body, request_id)
    key_version, blob = sealed() if sealed is not None else (None, None)
    return journal.append(
        s,
        action,
        recorded,
        engineer_id=actor.id,
        key_generation=actor.key_generation,
        client_id=client_id,
        secret_id=secret_id,
        key_version=key_version,
        details_blob=blob,
        public=public,
    )


def local_journal(core: Any, key: SigningKeys) -> ServerJournal:
    return ServerJournal(core, ServerSeal(key))
