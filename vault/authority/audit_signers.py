"""Who signed the audit chain, as stored: what an engineer's machine with no database checks events under.

In-process, ``audit log`` checks every event under the chain's certified signing keys and
their lifetimes (``keyholder/signers.Signers``: the engineers' and archived keys' certificates
verified under the organisation key, each key's lifetime read from the chain's key events) and
under the certified server keys (``service/serverkeys.ServerKeysRead``), all read from the
database. Through the team server the engineer's machine asks for the same rows, unverified:
``SignersRequest`` → ``SignerRows`` (``audit.signers``, a read: no event). Its keyholder
(``service/remote_audit.py``) believes nothing of them before it has checked them: the vault id
is the pinned one; the organisation key is the pinned one or one the signed chain from it leads
to; each engineer's and each archived key's certificate verifies under it (a row that does not
is left out, as in-process: its events are then refused); the server keys' certificates too;
and the lifetimes come from the key events by the same function as in-process
(``keyholder/signers.chain_lifetimes``). A key event the server forges or drops changes a
lifetime: the events that key signed are then refused, or, for a key event itself, its own hash
and signature are checked where it appears in a page, as in-process.

The caller is checked as for a page of the log (``AuditAuthority``: present, certified, active,
of the key generation the request names). Only public rows leave: names, roles, statuses, public
keys, certificates, the key events' public details (who was invited, confirmed, rotated or
removed, and when), and the server keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection

from vault import validation
from vault.authority.audit import AuditAuthority
from vault.authority.checkout_reads import ORG_KEYS
from vault.authority.purge_requests import EngineerKeyRow
from vault.authority.requests import Caller, OrgKeyRow
from vault.authority.server_keys import ServerKeyRow, stored_rows
from vault.errors import InvalidInput
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import EngineerRow

MAX_SIGNER_ROWS = 4_000  # engineers, archived keys or key events: one answer within 8 MiB (https.RESPONSE_LIMITS)


@dataclass(frozen=True)
class SignersRequest:
    """The chain's signers, for ``caller``."""

    caller: Caller


@dataclass(frozen=True)
class KeyEvent:
    """A key event of the chain (``m.KEY_EVENTS``): what ``chain_lifetimes`` reads of it."""

    seq: int
    engineer_id: int | None
    key_generation: int
    action: str
    details_json: str | None


@dataclass(frozen=True)
class SignerRows:
    """The rows the chain's signers are decided from, as stored (module docstring)."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    engineers: tuple[EngineerRow, ...]
    keys: tuple[EngineerKeyRow, ...]
    key_events: tuple[KeyEvent, ...]
    first_action: str | None  # event 1's action: "vault-init" unless the vault is older than its chain
    server_keys: tuple[ServerKeyRow, ...]

    def __repr__(self) -> str:
        return f"SignerRows(engineers={len(self.engineers)}, key_events={len(self.key_events)})"


class SignerAuthority:
    """``audit.signers``: the rows of ``SignerRows`` in one read unit, after the caller's check."""

    def __init__(self, store: Store, audit: AuditAuthority) -> None:
        self.store, self.audit = store, audit

    def __repr__(self) -> str:
        return "SignerAuthority()"

    def signers(self, request: SignersRequest) -> SignerRows:
        if not isinstance(request, SignersRequest) or not isinstance(request.caller, Caller):
            raise InvalidInput("the request names no caller")
        validation.number("engineer id", request.caller.engineer_id, 1)
        validation.number("key generation", request.caller.key_generation, 0)
        with self.store.read() as s:
            conn: Connection = s.info["connection"]
            vault_id, _ = self.audit._caller(s, conn, request.caller)  # the page's caller check, as for a page
            info = s.get(m.VaultInfo, 1)
            assert info is not None  # the caller's check read it
            e = m.AuditEvent
            columns = [m.Engineer.__table__.c[name] for name in EngineerRow._fields]
            engineers = tuple(EngineerRow._make(r) for r in s.execute(select(*columns).order_by(m.Engineer.id)))
            keys = tuple(
                EngineerKeyRow(k.engineer_id, k.generation, k.sealing_public, k.signing_public,
                               k.certified_at, k.certificate)
                for k in s.scalars(select(m.EngineerKey).order_by(m.EngineerKey.engineer_id, m.EngineerKey.generation))
                if k.certificate is not None and k.certified_at is not None  # uncertified: nothing verifies under it
            )  # fmt: skip
            events = tuple(
                KeyEvent(r[0], r[1], r[2], r[3], r[4])
                for r in s.execute(
                    select(e.seq, e.engineer_id, e.key_generation, e.action, e.details_json)
                    .where(m.KEY_EVENTS)
                    .order_by(e.seq)
                )
            )
            if max(len(engineers), len(keys), len(events)) > MAX_SIGNER_ROWS:
                raise InvalidInput("the chain has more signers than one answer carries")
            return SignerRows(
                vault_id,
                bytes(info.org_signing_public),
                tuple(OrgKeyRow(*r) for r in ORG_KEYS.all(conn, {})),
                engineers,
                keys,
                events,
                s.scalar(select(e.action).where(e.seq == 1)),
                tuple(stored_rows(s)),
            )
