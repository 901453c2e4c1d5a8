"""The in-process collaborators of the setup's two halves (creating a vault, a pending
engineer's fingerprint): the journal's append of ``vault-init``, signed by the new admin's
key that the keyholder's seal lends in-process, and ``setup_keyholder`` that joins the
keyholder (``vault/keyholder/setup.py``) to the authority (``vault/authority/setup.py``)
through the in-process transport (``vault/transport/setup.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from vault.authority.setup import SetupAuthority
from vault.errors import UntrustedRecord
from vault.keyholder.setup import SetupKeyholder
from vault.storage import models as m
from vault.transport.setup import InProcessSetupTransport

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.service.core import Core


class _Recorder:
    """The Journal's append of ``vault-init``, signed by the new admin (the seal's key, in-process)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def append(self, s: Session, action: str, *, public: dict[str, Any], admin_id: int, seal: Any) -> int:
        admin = s.get(m.Engineer, admin_id)
        if admin is None or getattr(seal, "admin_id", None) != admin_id:
            raise UntrustedRecord("the new admin's keys were not made for this row")
        return self._journal.append(s, action, actor=admin, seed=seal.event_seed(), public=public).seq


def setup_keyholder(core: Core, journal: Journal) -> SetupKeyholder:
    """The setup keyholder of this Vault object, over an in-process transport to its authority."""
    authority = SetupAuthority(core.store, _Recorder(journal), lambda: core.clock())
    return SetupKeyholder(InProcessSetupTransport(authority), lambda: core.clock(), lambda: core.kdf_params)
