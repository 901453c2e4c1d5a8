"""The in-process transport of the backups' requests (``inprocess.py`` is the checkout's).

``InProcessBackupTransport(authority)`` hands each request value to the backups' authority
and returns its answer: no copy, no serialisation. ``seal`` is the keyholder's
``BackupSeal`` (vault/authority/backups.py), the in-process seam: it lends the authority
the keyholder's hands inside its unit of work (verify the backup-key context and open the
keys; write the key export, or seal and write each section, before the commit). A restore's
``source`` hands the authority the sections the keyholder opened and checked, one at a
time. Only a transport inside one process can carry either; through the team server a backup
is split into values that cross alone (``https_backups.py``, ``authority/backup_served.py``).
"""

from __future__ import annotations

from vault.authority.backup_requests import BackupDone, BackupRequest, RestorePlan
from vault.authority.backups import BackupAuthority, BackupSeal, RestoreSource


class InProcessBackupTransport:
    """Calls the backups' authority directly."""

    def __init__(self, authority: BackupAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessBackupTransport()"

    def export_keys(self, request: BackupRequest, seal: BackupSeal) -> BackupDone:
        return self.authority.export_keys(request, seal)

    def create(self, request: BackupRequest, seal: BackupSeal) -> BackupDone:
        return self.authority.create(request, seal)

    def restore(self, plan: RestorePlan, source: RestoreSource) -> None:
        self.authority.restore(plan, source)
