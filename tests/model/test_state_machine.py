"""Model-based test (issue 6): a hypothesis state machine over the vault's life cycle.

The machine drives one SQLite vault (a copy of a prepared template, FLOOR Argon2, a
clock it moves) through enrol, grant (with or without --until), revoke, advancing the
clock, add and update secret, checkout with a reason, client-key rotation, engineer
removal and client purge, and keeps a model of who may read what. After every step:

* only current grantees (active, grant unrevoked and unexpired) and admins can reveal;
  everyone else gets NotFound, GrantExpired, AccessDenied or Locked, never a value;
* every live secret reveals its model value to the admin;
* a purged client is unreadable by everyone (NotFound) and its receipt verifies;
* the audit chain verifies.

Each engineer keeps one Vault object for the whole run, so a client key cached before
a revoke, an expiry or a removal must not let them read afterwards.

The short run is in the default suite; ``-m slow`` runs a longer one.
"""

from __future__ import annotations

import atexit
import datetime as dt
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import AccessDenied, Locked, NotFound
from vault.service.sessions import MemorySessionStore

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
REASON = "T-1 model test"
CLIENTS = ("acme", "globex")
SECRET_NAMES = ("fw01", "vpn", "db")
SESSION = dt.timedelta(hours=12)
DENIED = (NotFound, AccessDenied, Locked)  # GrantExpired < AccessDenied, SessionExpired < Locked
MAX_ENGINEERS = 4

_TEMPLATE: dict[str, Path] = {}


def _template() -> Path:
    """A vault with an admin and the clients, built once per process and copied per example."""
    if "path" not in _TEMPLATE:
        path = Path(tempfile.mkdtemp(prefix="credvault-model-tpl-")) / "vault.db"
        atexit.register(shutil.rmtree, path.parent, ignore_errors=True)
        admin, _ = Vault.create(f"sqlite:///{path}", admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FLOOR)
        admin.engineers.unlock(ADMIN, ADMIN_PASS)
        for slug in CLIENTS:
            admin.clients.add(slug, slug.title())
        admin.close()
        _TEMPLATE["path"] = path
    return _TEMPLATE["path"]


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now


class VaultMachine(RuleBasedStateMachine):
    engineers = Bundle("engineers")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="credvault-model-"))
        self.path = self.dir / "vault.db"
        shutil.copy(_template(), self.path)
        self.url = f"sqlite:///{self.path}"
        self.clock = Clock()
        self.admin = self._open(ADMIN)
        self.vaults: dict[str, Vault] = {}
        self.passphrases: dict[str, str] = {ADMIN: ADMIN_PASS}
        self.session_until: dict[str, dt.datetime] = {}
        self._unlock(ADMIN, self.admin)
        # the model
        self.active: set[str] = set()
        self.removed: set[str] = set()
        self.grants: dict[tuple[str, str], dt.datetime | None] = {}  # (engineer, client) -> until
        self.secrets: dict[str, str] = {}  # ref -> current password
        self.purged: dict[str, tuple[int, list[str]]] = {}  # client -> (receipt id, refs it had)
        self.counter = 0

    # -- helpers -------------------------------------------------------------------------

    def _open(self, name: str) -> Vault:
        return Vault.open(self.url, engineer=name, clock=self.clock, kdf_params=FLOOR, sessions=MemorySessionStore())

    def _unlock(self, name: str, vault: Vault) -> None:
        vault.engineers.unlock(name, self.passphrases[name], ttl=SESSION)
        self.session_until[name] = self.clock.now + SESSION

    def _fresh(self, name: str, vault: Vault) -> None:
        """Re-unlock a session the moving clock has expired (not a removed engineer's)."""
        if self.clock.now >= self.session_until[name] - dt.timedelta(seconds=1):
            self._unlock(name, vault)

    def _may_read(self, engineer: str, client: str) -> bool:
        if engineer not in self.active or (engineer, client) not in self.grants:
            return False
        until = self.grants[(engineer, client)]
        return until is None or self.clock.now < until

    def _live_clients(self) -> list[str]:
        return [c for c in CLIENTS if c not in self.purged]

    # -- rules ---------------------------------------------------------------------------

    @precondition(lambda self: len(self.active) < MAX_ENGINEERS)
    @rule(target=engineers)
    def enrol_engineer(self) -> str:
        name = f"eng{self.counter}"
        self.counter += 1
        self._fresh(ADMIN, self.admin)
        code = self.admin.engineers.invite(name)
        mine = self._open(name)
        self.admin.engineers.confirm(name, mine.engineers.enroll(name, code, f"pass of {name}"))
        self.passphrases[name] = f"pass of {name}"
        self._unlock(name, mine)
        self.vaults[name] = mine
        self.active.add(name)
        return name

    @rule(engineer=engineers, client=st.sampled_from(CLIENTS), hours=st.none() | st.integers(1, 6))
    def grant(self, engineer: str, client: str, hours: int | None) -> None:
        if engineer not in self.active or client in self.purged:
            return
        self._fresh(ADMIN, self.admin)
        until = None if hours is None else self.clock.now + dt.timedelta(hours=hours)
        self.admin.grants.grant(engineer, client, until=until, reason="T-2 model grant")
        self.grants[(engineer, client)] = until

    @rule(engineer=engineers, client=st.sampled_from(CLIENTS))
    def revoke(self, engineer: str, client: str) -> None:
        if engineer not in self.active or client in self.purged:
            return
        self._fresh(ADMIN, self.admin)
        held = (engineer, client) in self.grants
        try:
            self.admin.grants.revoke(engineer, client)
        except NotFound:
            # only when the model holds no grant, or one that has expired (and been swept)
            assert not held or not self._may_read(engineer, client), (engineer, client)
        else:
            assert held, (engineer, client)
        self.grants.pop((engineer, client), None)

    @rule(hours=st.integers(1, 5), minutes=st.sampled_from([0, 30]))
    def advance_clock(self, hours: int, minutes: int) -> None:
        self.clock.now += dt.timedelta(hours=hours, minutes=minutes)

    @rule(
        client=st.sampled_from(CLIENTS), name=st.sampled_from(SECRET_NAMES), password=st.text(min_size=1, max_size=20)
    )
    def add_secret(self, client: str, name: str, password: str) -> None:
        ref = f"{client}/{name}"
        if client in self.purged or ref in self.secrets or "\x00" in password:
            return
        self._fresh(ADMIN, self.admin)
        self.admin.secrets.add(ref, password=password)
        self.secrets[ref] = password

    @rule(data=st.data(), password=st.text(min_size=1, max_size=20))
    def update_secret(self, data: st.DataObject, password: str) -> None:
        if not self.secrets or "\x00" in password:
            return
        ref = data.draw(st.sampled_from(sorted(self.secrets)))
        self._fresh(ADMIN, self.admin)
        self.admin.secrets.update(ref, password=password)
        self.secrets[ref] = password

    @rule(data=st.data())
    def checkout(self, data: st.DataObject) -> None:
        if not self.secrets:
            return
        ref = data.draw(st.sampled_from(sorted(self.secrets)))
        who = data.draw(st.sampled_from([ADMIN, *sorted(self.vaults)]))
        vault = self.admin if who == ADMIN else self.vaults[who]
        if who == ADMIN or who in self.active:
            self._fresh(who, vault)
        client = ref.split("/")[0]
        if who == ADMIN or self._may_read(who, client):
            assert vault.checkouts.checkout(ref, reason=REASON).value == self.secrets[ref]
        else:
            with pytest.raises(DENIED):
                vault.checkouts.checkout(ref, reason=REASON)

    @rule(client=st.sampled_from(CLIENTS))
    def rotate_client(self, client: str) -> None:
        if client in self.purged:
            return
        self._fresh(ADMIN, self.admin)
        assert self.admin.keys.rotate_client(client, batch_size=2).state == "done"

    @rule(engineer=consumes(engineers))
    def remove_engineer(self, engineer: str) -> None:
        if engineer not in self.active:
            return
        self._fresh(ADMIN, self.admin)
        self.admin.engineers.remove(engineer, batch_size=2)
        self.active.discard(engineer)
        self.removed.add(engineer)
        for key in [k for k in self.grants if k[0] == engineer]:
            del self.grants[key]

    @rule(client=st.sampled_from(CLIENTS))
    def purge_client(self, client: str) -> None:
        if client in self.purged:
            return
        self._fresh(ADMIN, self.admin)
        receipt = self.admin.purge.client(client, request="REQ-42")
        refs = [r for r in self.secrets if r.startswith(client + "/")]
        for ref in refs:
            del self.secrets[ref]
        for key in [k for k in self.grants if k[1] == client]:
            del self.grants[key]
        self.purged[client] = (receipt.id, refs)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def only_current_grantees_and_admins_can_reveal(self) -> None:
        for ref, password in self.secrets.items():
            client = ref.split("/")[0]
            self._fresh(ADMIN, self.admin)
            assert self.admin.checkouts.reveal(ref, reason=REASON) == password, ref
            for name, vault in self.vaults.items():
                if name in self.active:
                    self._fresh(name, vault)
                if self._may_read(name, client):
                    assert vault.checkouts.reveal(ref, reason=REASON) == password, (name, ref)
                else:
                    with pytest.raises(DENIED):
                        vault.checkouts.reveal(ref, reason=REASON)

    @invariant()
    def a_purged_client_is_unreadable_and_its_receipt_verifies(self) -> None:
        for client, (receipt_id, refs) in self.purged.items():
            self._fresh(ADMIN, self.admin)
            check = self.admin.purge.verify_receipt(receipt_id)
            assert check.ok, check.problems
            for ref in [*refs, f"{client}/{SECRET_NAMES[0]}"]:
                with pytest.raises(NotFound):
                    self.admin.checkouts.reveal(ref, reason=REASON)
                for name, vault in self.vaults.items():
                    if name in self.active:
                        self._fresh(name, vault)
                    # an active engineer is told the client does not exist; a removed one may be refused first
                    with pytest.raises(NotFound if name in self.active else DENIED):
                        vault.checkouts.reveal(ref, reason=REASON)

    @invariant()
    def the_audit_chain_verifies(self) -> None:
        self._fresh(ADMIN, self.admin)
        result = self.admin.audit.verify()
        assert result.ok, result.problem

    def teardown(self) -> None:
        for vault in [self.admin, *self.vaults.values()]:
            vault.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much]

TestVaultStateMachine = VaultMachine.TestCase
TestVaultStateMachine.settings = settings(
    max_examples=8, stateful_step_count=12, deadline=None, suppress_health_check=_HEALTH
)


class LongVaultMachine(VaultMachine):
    pass


TestLongVaultStateMachine = pytest.mark.slow(LongVaultMachine.TestCase)
TestLongVaultStateMachine.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=_HEALTH
)
