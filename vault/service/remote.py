"""``RemoteVault``: an engineer's vault through a team server, with no database on this machine.

    vault = RemoteVault(ServerPins.load().get("https://vault.example.net:8443"), engineer="bob")
    vault.engineers.unlock("bob", passphrase)
    revealed = vault.checkouts.checkout("acme/fw01-admin", reason="ticket 4711")

The same noun methods as ``Vault`` for the engineer's everyday work, by the same keyholders
(which verify every row the server answers), over ``HttpsTransport`` to a server this
machine pinned (``serverpins.py``; every answer must carry the pinned server key's response
signature when the pin names one): ``engineers.unlock/lock/whoami/change_passphrase``,
``checkouts.checkout/reveal/checkin/break_checkout/list``, ``grants.list`` (an engineer's own),
``secrets.add`` and ``secrets.update`` with a new password, ``policies.get``,
``audit.log/export/head/checkpoint`` (an engineer's, every page checked here: ``remote_audit.py``),
``engineers.change_passphrase`` (``remote_passphrase.py``), and an admin's ``grants.grant``,
``grants.revoke``, ``clients.add`` (a draft, then a signed commit: ``remote_admin.py``) and
``policies.set``, ``purge.client`` with its receipt, ``purge.verify_receipt`` and
``engineers.invite`` (``remote_admin2.py``), ``backups.create`` (an admin's backup streamed by the server
and sealed here: ``remote_backups.py``) and ``--vacuum`` on a purge (run on the server's host).
The key record is opened here
(``serverpins.KeyRecordFile``): the server never sees the passphrase, and a wrong one is
not recorded on the server (there is no request to record). The session then proves itself
with a signed ``whoami``: an engineer the server no longer accepts (removed, disabled, a
rotated key) does not unlock.

A client is named by its slug; the server is asked only for ids (``remote_lookup.RemoteLookup``).
Every other noun raises ``ConfigurationError`` saying it is not served through
a server yet (docs/server.md, "Status"): it runs where the database is (embedded mode).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from vault import validation as checks
from vault.authority.requests import BREAK, CHECKIN
from vault.crypto import keyrecord
from vault.errors import (
    ConfigurationError,
    InvalidInput,
    UntrustedRecord,
)
from vault.keyholder.checkins import CheckinKeyholder
from vault.keyholder.checkouts import CheckoutKeyholder, ClientContext
from vault.keyholder.contexts import ContextLearner
from vault.records import CheckoutInfo, EngineerInfo, PendingConfirmation, ReceiptInfo, Revealed, SessionInfo
from vault.service import validation
from vault.service.checkouts import checked_reason, new_value
from vault.service.core import utcnow
from vault.service.engineers import MAX_SESSION_TTL
from vault.service.offboarding import INVITE_TTL
from vault.service.remote_admin import fresh_contexts, root_seal
from vault.service.remote_admin2 import ClientSlugs, RemoteInvitations, RemotePolicyWrites, RemotePurge, RemoteSettings
from vault.service.remote_audit import RemoteAudit
from vault.service.remote_backups import RemoteBackups
from vault.service.remote_engineers import RemoteEngineerWrites
from vault.service.remote_lookup import RemoteLookup
from vault.service.remote_nouns import RemoteClients, RemoteGrants, RemoteSecrets, _Noun, not_served, reported
from vault.service.remote_passphrase import RemotePassphrase
from vault.service.remote_policies import RemotePolicies
from vault.service.remote_reports import RemoteReports
from vault.service.remote_root import SessionChain
from vault.service.remote_rotation import DEFAULT_BATCH, RemoteKeyRotation
from vault.service.remote_subjects import RemoteSubjects
from vault.service.remotekeys import RemoteKeys
from vault.service.serverkey_renewal import ServerKeyRenewal
from vault.service.serverpins import KeyRecordFile, ServerPin
from vault.service.servicekeys import ServiceKeyFile, new_token
from vault.service.sessions import DEFAULT_TTL, MemorySessionStore, SessionStore, UnlockedSession
from vault.storage.rows import ROLE_ADMIN, ROLE_ENGINEER, ROLE_SERVICE
from vault.transport.https import HttpsTransport
from vault.transport.https_checkouts import HttpsCheckoutTransport
from vault.transport.https_enrolment import enroll_over_https
from vault.transport.https_grants import HttpsGrantListTransport

__all__ = ["RemoteVault"]


class RemoteEngineers(_Noun):
    """``engineers.enroll/unlock/lock/whoami`` on this machine's key record and the server's word."""

    def __init__(self, pin: ServerPin, keys: RemoteKeys, https: HttpsTransport, clock: Callable[[], dt.datetime]):
        self.pin, self.keys, self.https, self.clock = pin, keys, https, clock
        self.kdf_params: keyrecord.Argon2Params | None = None  # the key record's (None: the default)
        self.started: tuple[int, ...] = ()  # the client-key rotations the last removal started
        self.rotations: Any = None  # RemoteVault.keys (remote_rotation.RemoteKeyRotation): a removal's re-wrap
        self.reports: Any = None  # RemoteVault.reports (remote_reports.RemoteReports): a removal's at-risk list
        self.history: Any = None  # RemoteVault.grants.history: a re-invite's plan checked against the chain
        self.audit: Any = None  # RemoteVault.audit: a removal verifies the whole chain first
        self.chain: SessionChain | None = None  # the session's chain verified (remote_root.SessionChain)
        self.root: Any = None  # the root rotation of the last removal (an admin's)
        self.skipped: tuple[str, ...] = ()  # what its adoption set aside
        self.passphrase = RemotePassphrase(keys, https, clock, lambda: self.kdf_params)

    def enroll(self, name: str, code: str, passphrase: str) -> str:
        """As ``Vault.engineers.enroll``, through the server (``enroll_over_https``: the key record made
        here and kept on this machine, ``keys/<vault>/<name>.json``); the fingerprint to read to an admin."""
        record, fingerprint = self._enrolled(name, code, passphrase, self.kdf_params, (ROLE_ENGINEER, ROLE_ADMIN))
        record.save()
        return fingerprint

    def enroll_service(self, name: str, code: str, key_file: Path) -> str:
        """A service identity's enrolment (``servicekeys.py``): a fresh token as its passphrase, the key
        record and the token written to ``key_file`` (created, mode 0600; refused if it exists, before
        anything is enrolled); only for an invitation an admin signed for the role ``service``."""
        ServiceKeyFile.refuse_existing(key_file)
        token = new_token()
        record, fingerprint = self._enrolled(name, code, token, keyrecord.FLOOR, (ROLE_SERVICE,))
        ServiceKeyFile(self.pin.url, record, token).save(key_file)
        return fingerprint

    def _enrolled(
        self, name: str, code: str, passphrase: str, kdf: keyrecord.Argon2Params | None, roles: tuple[str, ...]
    ) -> tuple[KeyRecordFile, str]:
        enrolled = enroll_over_https(
            self.pin.url, ca_file=self.pin.ca_file, name=name, code=code, passphrase=passphrase,
            kdf_params=kdf, clock=self.clock, roles=roles,
        )  # fmt: skip
        if enrolled.vault_id != self.pin.vault_id:
            raise UntrustedRecord("the server enrolled you in another vault than the one this machine pinned")
        record = KeyRecordFile(
            enrolled.vault_id, enrolled.engineer_id, enrolled.name, enrolled.key_generation, enrolled.key_record
        )
        return record, enrolled.fingerprint

    def __repr__(self) -> str:
        return "RemoteEngineers()"

    def unlock(
        self,
        name: str,
        passphrase: str,
        *,
        ttl: dt.timedelta = DEFAULT_TTL,
        remember: bool = True,
        org_memory: object = None,
    ) -> SessionInfo:
        """Open ``name``'s key record kept here with ``passphrase``; the session is kept (in the
        session store when ``remember``) only once the server accepted a request it signed."""
        if not dt.timedelta(seconds=1) <= ttl <= MAX_SESSION_TTL:
            raise InvalidInput("bad session length", hint="use between 1s and 12h, e.g. --ttl 15m")
        validation.engineer_name(name)
        return self._unlock(KeyRecordFile.load(self.pin.vault_id, name), passphrase, ttl, remember)

    def unlock_key_file(self, key_file: Path, *, ttl: dt.timedelta = DEFAULT_TTL) -> SessionInfo:
        """A service identity's session from its key file, for this process only (never kept in a
        session store): refused if the file names another server or vault than this pin."""
        found = ServiceKeyFile.load(key_file)
        if found.server.rstrip("/") != self.pin.url.rstrip("/") or found.record.vault_id != self.pin.vault_id:
            raise ConfigurationError(
                f"the key file {key_file} is for another server or vault than {self.pin.url}",
                hint="pass --server with the URL the service enrolled at",
            )
        if not dt.timedelta(seconds=1) <= ttl <= MAX_SESSION_TTL:
            raise InvalidInput("bad session length", hint="use between 1s and 12h, e.g. --ttl 15m")
        return self._unlock(found.record, found.token, ttl, False)

    def _unlock(self, record: KeyRecordFile, passphrase: str, ttl: dt.timedelta, remember: bool) -> SessionInfo:
        name = record.name
        bundle = keyrecord.open_record(
            record.record, passphrase, record.vault_id, record.engineer_id, record.key_generation
        )
        session = UnlockedSession(
            vault_id=record.vault_id,
            engineer_id=record.engineer_id,
            name=name,
            key_generation=record.key_generation,
            sealing_private=bundle.sealing_private,
            signing_seed=bundle.signing_seed,
            org_signing_public=bundle.org_signing_public,
            expires_at=self.clock() + ttl,
        )
        previous = self.keys.trying(name, session)  # for the signed whoami; kept once the server accepts it
        try:
            answer = self.https.whoami()
            if (answer.vault_id, answer.engineer_id, answer.name, answer.key_generation) != (
                record.vault_id, record.engineer_id, name, record.key_generation,
            ):  # fmt: skip
                raise UntrustedRecord("the server answered for another engineer or key than this machine's record")
            self.passphrase.check_kept(record, passphrase)  # a passphrase changed from another machine
        except BaseException:
            self.keys.drop(previous)
            raise
        if remember:
            self.keys.keep(session)
        return SessionInfo(name, answer.role, session.expires_at, record.vault_id.hex())

    def lock(self) -> bool:
        return self.keys.lock()

    def change_passphrase(self, old: str, new: str) -> None:
        """As ``Vault.engineers.change_passphrase``, through the server (``remote_passphrase.py``)."""
        self.passphrase.change(old, new)

    def invite(self, name: str, *, role: str = ROLE_ENGINEER, valid_for: dt.timedelta = INVITE_TTL) -> str:
        """As ``Vault.engineers.invite``, through the server (an admin's): the code, made on this machine."""
        return RemoteInvitations(self.keys, self.https, self.clock).invite(name, role=role, valid_for=valid_for)

    def list(self) -> builtins.list[EngineerInfo]:
        """As ``Vault.engineers.list``, through the server (``engineers.list``: on record as ``engineer-list``,
        the caller's own row verified here)."""
        self.keys.me()
        with reported(self.https):
            return RemoteInvitations(self.keys, self.https, self.clock).keyholder.list()

    def pending_confirmation(self, name: str) -> PendingConfirmation:
        """As ``Vault.engineers.pending_confirmation``, through the server (an admin's): the pending
        rows read (``engineers.pending_confirmation``) and verified on this machine."""
        validation.engineer_name(name)
        self.keys.me()
        return self._confirming().keyholder.pending(name)

    def confirm(self, name: str, fingerprint: str, *, shown: PendingConfirmation | None = None) -> EngineerInfo:
        """As ``Vault.engineers.confirm``, through the server (an admin's): the rows certified on this
        machine, committed with their digest (``engineers.confirm``: 409 if they changed since)."""
        validation.engineer_name(name)
        self.keys.me()
        return self._confirming().keyholder.confirm(name, fingerprint, shown)

    def _confirming(self) -> RemoteInvitations:
        """A confirmation's keyholder: the plan checked against the grants the verified chain says live."""
        live = None if self.history is None else self.history.live_grants
        return RemoteInvitations(self.keys, self.https, self.clock, live)

    def rotate(self, name: str, *, valid_for: dt.timedelta = INVITE_TTL) -> str:
        """As ``Vault.engineers.rotate``, through the server (an admin's; ``remote_engineers.py``)."""
        return RemoteEngineerWrites(self.keys, self.https, self.clock).rotate(name, valid_for=valid_for)

    def remove(
        self, name: str, *, batch_size: int = 0, progress: Any = None
    ) -> tuple[builtins.list[Any], builtins.list[Any]]:
        """As ``Vault.engineers.remove``, through the server (an admin's; ``remote_engineers.py``): committed
        (``started``: every client's rotation), each rotation run through the server, then the at-risk list."""
        writes = RemoteEngineerWrites(self.keys, self.https, self.clock, self.audit, self.chain)
        self.started = writes.remove(name)
        self.root, self.skipped = writes.root, writes.skipped  # an admin's: the root rotation made here
        rotations = []
        if self.rotations is not None:
            rotations = self.rotations.resume(batch_size=batch_size or DEFAULT_BATCH, progress=progress)
        at_risk = [] if self.reports is None else self.reports.at_risk(name)
        return at_risk, rotations

    def whoami(self) -> SessionInfo:
        me = self.keys.me()
        answer = self.https.whoami()
        if (answer.vault_id, answer.engineer_id, answer.key_generation) != (
            me.vault_id, me.engineer_id, me.key_generation,
        ):  # fmt: skip
            raise UntrustedRecord("the server answered for another engineer or key than this session's")
        return SessionInfo(me.name, answer.role, me.expires_at, me.vault_id.hex())


class RemoteCheckouts(_Noun):
    """``checkouts.*`` through the server, by the in-process API's keyholders."""

    def __init__(self, keys: RemoteKeys, https: HttpsTransport, clock: Callable[[], dt.datetime]) -> None:
        transport = HttpsCheckoutTransport(https)
        self.lookup = lookup = RemoteLookup(keys, HttpsGrantListTransport(https))
        self.keys = keys
        self.keyholder = CheckoutKeyholder(transport, keys, lookup, keys.client_keys, clock, transport)
        lookup.keyholder = self.keyholder
        self.checkins = CheckinKeyholder(self.keyholder, transport)

    def __repr__(self) -> str:
        return "RemoteCheckouts()"

    def context(self, slug: str) -> ClientContext:
        """The verified key context of the client ``slug`` names (learned once per session); a slug
        that is no client's is refused first, as in-process (its tag is never computed)."""
        validation.client_slug(slug)
        return self.keyholder.context(self.keys.me(), slug, fresh=False)

    def reveal(
        self, ref: str, field: str = "password", *, version: int | None = None, reason: str | None = None
    ) -> str:
        return self.checkout(ref, field=field, version=version, reason=reason, hold=False).value

    def checkout(
        self,
        ref: str,
        *,
        reason: str | None = None,
        field: str = "password",
        version: int | None = None,
        hold: bool = True,
        hold_for: dt.timedelta | None = None,
    ) -> Revealed:
        reason = checked_reason(field, version, reason)
        checks.secret_ref(ref)
        self.keys.me()
        return self.keyholder.checkout(ref, reason=reason, field=field, version=version, hold=hold, hold_for=hold_for)

    def checkin(
        self, ref: str, *, new_password: str | None = None, generate: bool = False, length: int | None = None
    ) -> Revealed | None:
        value = new_value(new_password, generate, length)
        self.keys.me()
        response = self.checkins.release(ref, CHECKIN, value)
        if response.must_change:
            return Revealed(ref, "password", response.version, "", None, True)
        return None

    def break_checkout(self, ref: str) -> str:
        self.keys.me()
        return ", ".join(self.checkins.release(ref, BREAK).holders)

    def list(self) -> builtins.list[CheckoutInfo]:
        self.keys.me()
        return self.checkins.list()


class RemoteVault:
    """An engineer's vault through a pinned team server (module docstring)."""

    def __init__(
        self,
        pin: ServerPin,
        *,
        engineer: str | None = None,
        sessions: SessionStore | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.keyholder = RemoteKeys(sessions or MemorySessionStore(), pin.vault_id, engineer, clock)
        # every answer signed by the pinned server key, for its own request (docs/server.md §3); a
        # newer version only with its certificate under the pinned organisation key, then re-pinned
        self.renewal = ServerKeyRenewal(pin, transport)
        self.https = HttpsTransport(
            pin.url, self.keyholder, ca_file=pin.ca_file, transport=transport, server_key=pin.server_key,
            clock=lambda: clock().timestamp(),
            renew=self.renewal,
        )  # fmt: skip
        self.engineers = RemoteEngineers(pin, self.keyholder, self.https, clock)
        self.checkouts = RemoteCheckouts(self.keyholder, self.https, clock)
        contexts, keys = self.checkouts.context, self.keyholder
        self.grants = RemoteGrants(keys, self.https, contexts, clock, fresh_contexts(self.checkouts.keyholder))
        keys.recovery_source = root_seal(self.https, keys)  # an admin's root bundle, when their work needs it
        self.secrets = RemoteSecrets(keys, self.https, contexts, clock, self.checkouts.lookup.is_admin)
        self.clients = RemoteClients(keys, self.https, contexts, clock)
        learned = fresh_contexts(self.checkouts.keyholder)
        writes = RemotePolicyWrites(keys, self.https, clock, learned, ClientSlugs(self.checkouts.keyholder))
        self.policies = RemotePolicies(keys, self.https, contexts, clock, writes)
        self.audit = RemoteAudit(keys, self.https, contexts, self._live_slugs, clock, self._by_id, self._receipts)
        self.grants.history.audit = self.audit  # an admin's grant list: confirmed against the chain verified here
        self.reports = RemoteReports(keys, self.https, self.clients.keyholder, self.audit, clock)
        self.purge = RemotePurge(keys, self.https, clock, learned)
        self.subjects = RemoteSubjects(keys, self.https, clock, self.purge)
        self.backups = RemoteBackups(keys, self.https, clock)  # an admin's backup, streamed (restore: the host's)
        settings = RemoteSettings(keys, self.https, clock)
        chain = SessionChain(self.audit)  # verified whole once a session, for a removal's or a rotation's roster
        self.keys = RemoteKeyRotation(keys, self.https, clock, learned, self.clients.list, settings, chain)
        self.engineers.rotations = self.keys  # a removal's rotations re-wrapped through the server
        self.keys.secrets = self.secrets  # a secret's rotation: an update with a new password
        self.engineers.reports = self.reports  # and its at-risk list
        self.engineers.history = self.grants.history  # a re-invite's confirmation: the plan against the chain
        self.engineers.audit, self.engineers.chain = self.audit, chain  # a removal: the chain verified here first

    @property
    def last_root_rotation(self) -> Any:
        """The root rotation of the last admin's removal (``remote_admin_removal.py``), as in-process."""
        return self.engineers.root

    @property
    def adoption_skipped(self) -> tuple[str, ...]:
        """What the last admin's removal did not adopt (set aside), as in-process."""
        return self.engineers.skipped

    def __repr__(self) -> str:
        return f"RemoteVault(server={self.pin.url!r}, engineer={self.keyholder.name!r})"

    def within(self, seconds: float) -> contextlib.AbstractContextManager[None]:
        """Every call made inside gives the server ``seconds`` in all (``HttpsTransport.within``)."""
        return self.https.within(seconds)

    @property
    def pin(self) -> ServerPin:
        """This machine's pin of the server (its server key re-pinned after a rotation)."""
        return self.renewal.pin

    @property
    def engineer_name(self) -> str | None:
        return self.keyholder.name

    def vault_id(self) -> bytes:
        return self.pin.vault_id

    def _by_id(self) -> ContextLearner | None:
        """The checkout keyholder's context learner: an admin's client contexts by id (their audit log)."""
        return self.checkouts.keyholder.learner

    def _receipts(self) -> builtins.list[ReceiptInfo]:
        """The purge receipts (an admin's), naming the purged clients of their audit log."""
        return self.purge.receipts()

    def _live_slugs(self) -> builtins.list[str]:
        """The slugs of the clients of the session's engineer's live grants (verified by the grants' keyholder)."""
        me = self.keyholder.me()
        return sorted({g.client for g in self.grants.list() if g.state == "active" and g.engineer == me.name})

    def close(self) -> None:
        self.https.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise not_served(name)
