"""``--vacuum`` on a purge through the team server: the vacuum run on the server's host, after the commit.

In-process ``purge client|secret|subject --vacuum`` scrubs the database file itself once the purge
has committed (``storage/scrub.py``). Through the server the admin's machine has no database, so,
once the purge's receipt is back (its unit committed), it asks for ``purge.vacuum`` naming that
receipt: the caller is authorised first (an active, certified admin of the key generation named;
anyone else refused before any other row is read), the receipt must exist (a vacuum follows a
purge), then the server runs the scrub with ``vacuum`` on its own database and answers what it did,
which the receipt the admin is shown carries (``ReceiptInfo.scrubbed``). It appends no event: the
purge's own event is the record, and a vacuum reads and releases nothing. Its request's nonce is
remembered by the authenticator (a replay is refused).
"""

from __future__ import annotations

from dataclasses import dataclass

from vault import validation
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller
from vault.authority.requests import Caller
from vault.errors import NotFound, StoreUnavailable
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.scrub import scrub


@dataclass(frozen=True)
class VacuumRequest:
    """An admin's vacuum after the purge whose receipt is ``receipt_id``."""

    caller: Caller
    receipt_id: int


@dataclass(frozen=True)
class VacuumDone:
    """What the server's host ran (``storage/scrub.py``'s account of it)."""

    receipt_id: int
    done: str


class VacuumAuthority:
    """``purge.vacuum`` (module docstring)."""

    def __init__(self, store: Store, checks: CallerChecks) -> None:
        self.store, self.gate = store, CallerGate(checks)

    def __repr__(self) -> str:
        return "VacuumAuthority()"

    def vacuum(self, request: VacuumRequest) -> VacuumDone:
        checked_caller(request.caller)
        receipt_id = validation.number("receipt id", request.receipt_id, 1)
        with self.store.read() as s:
            self.gate.authorise(s, request.caller, admin=True)  # nothing else read when it refuses
            if s.get(m.PurgeReceipt, receipt_id) is None:
                raise NotFound(f"no purge receipt #{receipt_id}", hint="`credvault receipts` lists them")
        try:
            done = scrub(self.store, vacuum=True)
        except Exception as error:  # the purge is committed; the vacuum may be run again
            raise StoreUnavailable(
                f"the purge is committed but the vacuum on the server's host failed ({type(error).__name__})",
                hint="run `credvault --db URL purge scrub --vacuum` on the server's host",
            ) from None
        return VacuumDone(receipt_id, done)
