"""The values of ``report access`` / ``report at-risk`` through a team server (``reports.access``).

In-process the report appends its event, then reads the engineer's reveals and decides for each
whether the value revealed has changed since by opening the revealed and the current version of
the field inside the vault (``service/reports.py``). Through the server the admin's machine reads
the reveal events as its audit log (every page verified there), and asks ``reports.access`` for
what it cannot read there: the versions to compare. One request value, two uses:

* ``items`` empty: the report's start. The server checks the caller (an admin) and the engineer
  named, appends the report's event (``report-access`` or ``report-at-risk``, naming the
  engineer) and answers the engineer's id, before any reveal is read;
* ``items``: a page of reveals to compare, each ``(client, secret, version, at_us)`` (``version``
  0 with ``at_us``: the version current at that time, for an old ``secret-view`` event; both 0:
  the secret's current version only, for an event that names no version). The
  server answers each secret it still holds with its current version and the versions named
  (ciphertext), after an event of the same action naming, on a layered vault, every version whose
  data key it releases (``released``). A secret it does not hold is left out: it was purged or
  deleted, so nothing is left to change.

What is answered is read, unopened: the caller's own row and the organisation key chain from the
pin, the client keys the keyholder lacks (sealed to the recovery key), the versions. The
keyholder verifies all of it before it opens anything (``keyholder/access_report.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.authority.requests import Caller, OrgKeyRow, SealedClientKey
from vault.storage.rows import EngineerRow, VersionRow

ACCESS, AT_RISK = "report-access", "report-at-risk"
ACTIONS = (ACCESS, AT_RISK)
MAX_ITEMS = 500  # reveals compared in one request at most (a page of the audit log is 200 events)


@dataclass(frozen=True)
class AccessReportRequest:
    """A report's start (no ``items``) or a page of reveals to compare (module docstring)."""

    action: str
    caller: Caller
    engineer: str
    items: tuple[tuple[int, int, int, int], ...]
    known_key_versions: tuple[tuple[int, int], ...]
    org_pin: bytes

    def __repr__(self) -> str:
        return f"AccessReportRequest({self.action}, engineer={self.caller.engineer_id}, items={len(self.items)})"


@dataclass(frozen=True, repr=False)
class ComparedSecret:
    """A secret the server holds: its current version, and the versions asked (with the current
    one, by number); ``at_versions``: (at_us, version) for each time asked."""

    client_id: int
    id: int
    current: int
    versions: tuple[VersionRow, ...]
    at_versions: tuple[tuple[int, int], ...]

    def __repr__(self) -> str:
        return f"ComparedSecret(id={self.id}, client={self.client_id}, versions={len(self.versions)})"


@dataclass(frozen=True, repr=False)
class AccessAnswer:
    """What the server read for a report's request, unopened; ``seq``: its event."""

    action: str
    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    engineer_id: int
    secrets: tuple[ComparedSecret, ...]
    sealed_keys: tuple[SealedClientKey, ...]
    seq: int = 0

    def __repr__(self) -> str:
        return f"AccessAnswer({self.action}, engineer={self.engineer_id}, secrets={len(self.secrets)})"
