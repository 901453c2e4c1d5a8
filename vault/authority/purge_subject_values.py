"""The values of an admin's search and purge of a data subject through the team server.

docs/server.md (session 15, helper D) and docs/format.md §10; the authority is
``purge_subject_drafts.py``, the keyholder's transports ``transport/https_subjects.py`` (the search)
and ``transport/https_purge.py`` (the purge). In-process the subjects' keyholder searches inside the
authority's unit (``SubjectSeal``) and the purges' keyholder admits and signs inside another
(``PurgeSeal``, one unit for every client); over HTTPS the server never sees the query:

* ``SubjectSearchRequest`` asks for one page of every client's rows as the in-process search is
  shown them (``SubjectRows``: slug and name blobs, the client keys sealed to the recovery key, every
  version's wrapped data key and metadata blob), the clients after ``after`` in id order. Each page
  is on record first (its format-3 ``subject-search`` event: the purpose, the request reference of
  a purge, the clients and versions answered), then the server's layer comes off the data keys it
  answers ("no log, no key"). The admin's machine opens everything and decides what matches.
* ``PurgeSubjectDraftRequest`` names one client by id and the secrets of it that matched; the draft
  reserves the receipt's id and answers the ``PurgeRows`` the in-process seal admits (the secrets
  still there, their versions as stored: layered), the receipt the server will store (unsigned) and
  their digest. Nothing is released: the admin's machine fingerprints the data keys its search
  opened (a version it did not search is refused there).
* ``PurgeSubjectCommit`` carries the fingerprints, the signature over the receipt with the commit's
  request id (``LABEL_SIG_RECEIPT_V3``) and the draft's digest; its event is ``purge-subject``, as
  in-process, one per client (one request, one unit, one receipt each).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from vault.authority.purge_requests import PurgeRows, ReceiptRow
from vault.authority.requests import Caller
from vault.authority.subjects import SubjectRows

SUBJECT_SEARCH = "subject-search"  # a page of the search: it releases every data key it answers
PURGE_SUBJECT = "purge-subject"  # the commit's event (as in-process: ``purge-<kind>``)
PURGE_SUBJECT_DRAFT = "purge-subject-draft"  # the draft's request action (no event: it releases nothing)
FIND, REPORT, PURGE = "find", "report", "purge"  # what a search is for (the event's public ``purpose``)


@dataclass(frozen=True)
class SubjectSearchRequest:
    """A page of the search of every client (``purpose`` ``find``, ``report``, or ``purge`` under ``request_ref``)."""

    caller: Caller
    org_pin: bytes
    purpose: str
    request_ref: str
    after: int
    action: str = SUBJECT_SEARCH


@dataclass(frozen=True, repr=False)
class SubjectPage:
    """A page of clients (their data keys' server layer removed), whether more follow, its event."""

    rows: SubjectRows
    more: bool

    def __repr__(self) -> str:
        return f"SubjectPage({self.rows!r}, more={self.more})"


@dataclass(frozen=True)
class PurgeSubjectDraftRequest:
    """An admin's draft of the purge of the secrets ``secret_ids`` of ``client_id`` that matched."""

    caller: Caller
    client_id: int
    secret_ids: tuple[int, ...]
    request_ref: str
    org_pin: bytes
    action: str = PURGE_SUBJECT_DRAFT


@dataclass(frozen=True, repr=False)
class PurgeSubjectDraft:
    """What will be destroyed (as stored), the unsigned receipt, their digest, the reservation's end."""

    rows: PurgeRows
    receipt: ReceiptRow
    digest: bytes
    expires_at: dt.datetime

    def __repr__(self) -> str:
        return f"PurgeSubjectDraft({self.rows!r}, receipt={self.receipt.id})"


@dataclass(frozen=True, repr=False)
class PurgeSubjectCommit:
    """The keyholder's fingerprints and signature for the drafted receipt of one client's secrets."""

    caller: Caller
    client_id: int
    secret_ids: tuple[int, ...]
    request_ref: str
    org_pin: bytes
    receipt_id: int
    fingerprints: tuple[str, ...]
    signature: bytes
    draft_digest: bytes
    action: str = PURGE_SUBJECT

    def __repr__(self) -> str:
        return f"PurgeSubjectCommit(client={self.client_id}, secrets={len(self.secret_ids)})"
