"""The secrets' writes over HTTPS: the keyholder's ``SecretTransport`` on the team server.

``HttpsSecretTransport.add(request, seal)`` / ``update(request, seal)`` is what
``SecretKeyholder`` calls in-process on ``InProcessSecretTransport``; here the seal's hands
are used between two requests instead of inside the authority's unit (docs/server.md §4
rule 2, ``authority/secret_draft_requests.py``):

1. the draft (``secrets.add_draft``, which reserves the new secret's id, or
   ``secrets.update_draft``, on record as a ``secret-view``); its digest is the server's, over
   the rows as stored (an update's current data key under the server's layer, answered here
   without it), and is sent back as it came;
2. ``seal.admit(rows)``: the keyholder verifies every row, as in-process;
   ``seal.encrypt(rows, number)``: the new version, for the secret id and number drafted;
3. the commit (``secrets.add`` / ``secrets.update``) with that version and the draft's
   digest. A 409 ``stale-draft`` (the secret or its client key changed between the two)
   drafts once more; a second one is raised.

The answer must be the draft as committed: the same rows, with only the event's number, the
secret's new current version, the version stored and the times changed (and an update's
kind, as asked); the keyholder then checks the version stored is the one it encrypted.

An update that sets a new password is drafted with the current one withheld. One that keeps the
password asks the draft for it (``keep_password``): the server answers its blob, its data key's
layer removed, only after the draft's ``secret-view`` naming the password (``password-kept``) has
committed, and the reports count that view as a reveal of the password.

The reads (``server/secret_read_routes.py``): ``read`` sends ``secrets.show`` or
``secrets.history`` (by the request's action); the server answers once the event committed,
and the keyholder's seal admits the answer (its number set aside) *after* the event, as the
checkout does: ``SecretKeyholder`` then checks that the answer is the draft it admitted.
``list_secrets`` walks the listing one bounded page at a time (``secrets.list_page``, each
page on record before it is answered; ``LIST_PAGE`` asked, the server caps it) and hands each
on as it comes for ``SecretListKeyholder`` to verify, so that the next page is asked for only
once this one verified. The cursor is the server's ``next_after``, which must move past every
secret of the page (else ``UntrustedRecord``). A later page sends again the row of a client an
earlier one did: the same row is dropped here (the keyholder opens each client once), another
one is handed on, and the keyholder refuses it. The answers carry no password blob (withheld
by the server), which neither read opens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Protocol

from vault.authority.requests import NewVersion
from vault.authority.secret_draft_requests import (
    STALE_DRAFT,
    AddCommit,
    AddDraftRequest,
    SecretDraft,
    UpdateCommit,
    UpdateDraftRequest,
)
from vault.authority.secret_requests import (
    HISTORY,
    VIEW,
    AddRequest,
    ListSecretsRequest,
    ReadRequest,
    SecretListPage,
    SecretPage,
    SecretPageRequest,
    SecretRows,
    UpdateRequest,
)
from vault.errors import ConcurrentChange, InvalidInput, UntrustedRecord

DRAFTS = 2  # a stale draft is drafted once more, then the refusal stands
READS = {VIEW: "secrets.show", HISTORY: "secrets.history"}
LIST_PAGE = 250  # secrets asked for in one page of a listing (the server may answer fewer)


class Calls(Protocol):
    """``HttpsTransport``: a signed request, its decoded answer."""

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object: ...


class DraftSeal(Protocol):
    """The keyholder's ``SecretSeal``: verify a draft, encrypt the version it drafts."""

    def admit(self, draft: SecretRows) -> None: ...

    def encrypt(self, draft: SecretRows, version: int) -> NewVersion: ...


class HttpsSecretTransport:
    """Secrets' adds and updates through a team server (module docstring)."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsSecretTransport()"

    def read(self, request: ReadRequest, seal: DraftSeal) -> SecretRows:
        """``secret show`` / ``history``: the answer, admitted by ``seal`` after its event committed."""
        operation = READS.get(request.action)
        if operation is None:
            raise InvalidInput("not a secret read")
        answer = self.https.call(operation, request)
        if not isinstance(answer, SecretRows) or answer.seq < 1:
            raise UntrustedRecord("the server's answer is not a committed secret read")
        seal.admit(dataclasses.replace(answer, seq=0))  # raises if it does not verify
        return answer

    def list_secrets(self, request: ListSecretsRequest) -> Iterator[SecretPage]:
        """``secret list``: its pages, one request each, each once its event committed (module docstring)."""
        after, sent = 0, dict[int, object]()
        while True:
            ask = SecretPageRequest(
                request.caller, request.client_ids, request.known_key_versions, request.org_pin, request.named,
                after, LIST_PAGE,
            )  # fmt: skip
            answer = self.https.call("secrets.list_page", ask)
            if not isinstance(answer, SecretListPage) or answer.seq < 1:
                raise UntrustedRecord("the server's answer is not a committed page of a secret listing")
            page, cursor = answer.page, answer.next_after
            if cursor is not None and (cursor <= after or any(r.secret_id > cursor for r in page.secrets)):
                raise UntrustedRecord("the listing's next page does not start after this one")
            clients = tuple(c for c in page.clients if sent.setdefault(c.id, c) is c or sent[c.id] != c)
            yield dataclasses.replace(page, clients=clients)
            if cursor is None:
                return
            after = cursor

    def add(self, request: AddRequest, seal: DraftSeal) -> SecretRows:
        for attempt in range(DRAFTS):
            draft = self._draft("secrets.add_draft", AddDraftRequest(request.target, request.kind))
            rows, digest = draft.rows, draft.digest
            seal.admit(rows)
            new = seal.encrypt(rows, draft.next_version)
            commit = AddCommit(request.target, request.kind, rows.secret.id, new, digest)
            try:
                answer = self.https.call("secrets.add", commit)
            except ConcurrentChange as error:
                if str(error) == STALE_DRAFT and attempt + 1 < DRAFTS:
                    continue
                raise
            return _committed(rows, answer, draft.next_version, request.kind)
        raise AssertionError("unreachable")  # pragma: no cover

    def update(self, request: UpdateRequest, seal: DraftSeal) -> SecretRows:
        keep = not request.password_changed  # the draft answers the password too, on record as its view
        for attempt in range(DRAFTS):
            draft = self._draft("secrets.update_draft", UpdateDraftRequest(request.target, keep_password=keep))
            rows, digest = draft.rows, draft.digest
            seal.admit(rows)
            new = seal.encrypt(rows, draft.next_version)
            commit = UpdateCommit(request.target, request.kind, not keep, rows.secret.id, new, digest)
            try:
                answer = self.https.call("secrets.update", commit)
            except ConcurrentChange as error:
                if str(error) == STALE_DRAFT and attempt + 1 < DRAFTS:
                    continue
                raise
            return _committed(rows, answer, draft.next_version, request.kind or rows.kind)
        raise AssertionError("unreachable")  # pragma: no cover

    def _draft(self, operation: str, body: object) -> SecretDraft:
        answer = self.https.call(operation, body)
        if not isinstance(answer, SecretDraft):
            raise UntrustedRecord("the server's answer is not a draft")
        return answer


def _committed(rows: SecretRows, answer: object, number: int, kind: str) -> SecretRows:
    """``answer`` if it is the draft ``rows`` as committed (module docstring), else UntrustedRecord."""
    if not isinstance(answer, SecretRows):
        raise UntrustedRecord("the server's answer is not a secret's")
    written = answer.secret
    if (written.id, written.name_tag, written.current_version, answer.kind) != (
        rows.secret.id,
        rows.secret.name_tag,
        number,
        kind,
    ):
        raise UntrustedRecord("the server's answer is not the version this keyholder wrote")
    same = dataclasses.replace(
        answer,
        seq=0,
        kind=rows.kind,
        secret=rows.secret,
        version=rows.version,
        created_at=rows.created_at,
        updated_at=rows.updated_at,
    )
    if same != rows or answer.seq < 1:
        raise UntrustedRecord("the server's answer is not the draft this keyholder verified")
    return answer
