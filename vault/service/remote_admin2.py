"""An admin's policy change and a client's purge through a team server, with no database on this machine.

``RemoteVault.policies.set`` (``RemotePolicyWrites``) runs the in-process ``PolicyKeyholder`` unchanged over
``HttpsPolicyWriteTransport`` (``transport/https_policy_writes.py``: a draft, then a signed
commit). What the keyholder needs off the database comes from the server and is verified here,
as for an admin's grant (``remote_admin.py``): the client by its slug's tag under the admin's
root bundle (``AdminLookup``: its context learned afresh, every row verified, the slug opened
and compared), whose audit-key ring the ``policy-set`` details are sealed under, bound to the
commit's request id (``_AdminClients.seal_details``). The server never sees a client key, an
audit key or the details in clear.

``RemoteVault.policies.unsigned`` (session 14) is the same keyholder's read over the server's
``policies.unsigned``: the slug of each client whose stored policy does not verify is opened here
(``ClientSlugs``: the client's context read by id, every row verified, its slug under the client key
opened from the root-sealed copy), as in-process: a client whose keys do not open is not shown.
``adopt`` (session 15) checks that the unsigned policies are still exactly those shown, then signs
each as stored with the keyholder's ``adopt_one``: per client a ``policies.set`` draft and commit as for
``set`` (the client's context learned by its slug, its ``policy-set`` details — ``adopted`` and the
values — sealed here under its audit key to the commit's request id). In-process every client is
adopted in one unit; here each client is its own: an error leaves the clients before it adopted.

``RemoteVault.purge.client`` runs the in-process ``PurgeKeyholder`` over ``HttpsPurgeTransport``
(a draft with the receipt's id reserved, the receipt signed over the commit's request id, a
commit); ``preview`` and ``receipts`` (an admin's) and ``verify_receipt`` (anyone's: ``purge
check``) are its reads. The client is found as for a policy; once purged, this session forgets
its keys and its slug. With ``--vacuum``, once the receipt is back (the purge committed) the server's
host vacuums its database (``purge.vacuum``, authority/purge_vacuum.py) and the receipt says what it ran.

``RemoteVault.purge.secret`` (session 14) runs the same keyholder's secret purge: the secret is
named to the server by its name tag (made here under the client's lookup key), the draft is on
record on the server before it answers the secret's wrapped data keys with the server's layer
removed, the current version's metadata is opened here under the client key and must hold the
name asked for (a moved name tag: ``LookupMismatch``, nothing signed), then the keyholder
fingerprints every data key, signs the receipt over the commit's request id, and commits. The
client keys are those this session opened with the client's context (its current version): a
version still under an older client key (a rotation not finished) is refused here.

``RemoteVault.keys.set_retention`` / ``set_cryptoperiod`` (``credvault settings``) run the in-process
``SettingsKeyholder`` over ``HttpsSettingsTransport``: the row as stored read and verified here,
the change signed here over it, the server's checks in ``authority/settings_drafts.py``.

``RemoteVault.engineers.invite`` runs the in-process ``EngineerKeyholder`` over
``HttpsInviteTransport``: the invite secret is made on this machine and the code shown only here;
the server is given the secret sealed to the recovery key and the public key it derives, with
which it can check an enrolment's proof but make none (docs/server.md, session 13).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from vault import validation as checks
from vault.authority.checkout_context import ContextRequest
from vault.authority.engineer_requests import ROLES
from vault.authority.policy_requests import CHANGED_SINCE_SHOWN
from vault.authority.purge_requests import NOTHING_MATCHES, PurgedVersion
from vault.authority.purge_secret_values import PurgeSecretDraft, PurgeSecretDraftRequest
from vault.authority.purge_vacuum import VacuumDone, VacuumRequest
from vault.authority.requests import Caller
from vault.authority.settings_requests import CRYPTOPERIOD, RETENTION
from vault.crypto import blobs, keyrecord, sealing, signing
from vault.crypto.labels import LABEL_TAG_SECRET_NAME
from vault.errors import IntegrityError, InvalidInput, NotFound, UntrustedRecord, VaultError
from vault.keyholder.checkouts import CheckoutKeyholder
from vault.keyholder.engineers import EngineerKeyholder
from vault.keyholder.policies import PolicyKeyholder, wanted_values
from vault.keyholder.purge import PurgeKeyholder
from vault.keyholder.settings import SettingsKeyholder
from vault.keyholder.versions import open_metadata
from vault.records import PolicyInfo, PurgePreview, ReceiptCheck, ReceiptInfo
from vault.service import validation
from vault.service.purge import _request as checked_request_ref
from vault.service.remote_admin import AdminLookup, LearnedContext
from vault.service.remote_nouns import _Noun, not_served
from vault.service.remotekeys import RemoteKeys
from vault.service.sessions import UnlockedSession
from vault.storage.rows import ROLE_ADMIN
from vault.transport.https import HttpsTransport
from vault.transport.https_calls import answer_of
from vault.transport.https_invite import HttpsInviteTransport
from vault.transport.https_policy_writes import HttpsPolicyWriteTransport
from vault.transport.https_purge import HttpsPurgeTransport
from vault.transport.https_settings import HttpsSettingsTransport

RING_KEY_BYTES = 32


class _AdminClients:
    """``ClientLookup`` of the policies and purge keyholders for an admin through the server: the client
    by its slug tag (``AdminLookup``), remembered with its slug tag and audit-key ring for the commit."""

    def __init__(self, admin: AdminLookup, by_id: Callable[[int, bytes], str | None] | None = None) -> None:
        self.admin, self.by_id = admin, by_id
        self._tags: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return "AdminClients()"

    def client(self, slug: str) -> tuple[int, bytes]:
        found = self.admin.context(slug)
        # learned by the id a slug hint names (a removal's rotations learn their clients so), the
        # context was verified to hold ``slug``: its tag is the one the admin's open bundle makes
        tag = found.slug_tag if found.slug_tag is not None else self.admin.slug_tag(slug)
        if tag is None:
            raise UntrustedRecord("the client's context has no slug tag")
        if len(self._tags) >= 1024:
            self._tags.clear()
        self._tags[found.client_id] = tag
        return found.client_id, found.slug_blob

    def slugs(self, clients: Sequence[tuple[int, bytes]]) -> dict[int, str]:
        if self.by_id is None:
            raise not_served("policies.unsigned")
        out = {}
        for client_id, slug_blob in clients:
            slug = self.by_id(client_id, slug_blob)
            if slug is not None:
                out[client_id] = slug
        return out

    def slug_tag(self, client_id: int) -> bytes:
        """The slug tag of a client this lookup found, else refused."""
        found = self._tags.get(client_id)
        if found is None:
            raise UntrustedRecord("the policy request names a client this lookup did not find")
        return found

    def seal_details(self, client_id: int, request_id: bytes, action: str, details_json: str) -> tuple[int, bytes]:
        """The event's details (as the in-process journal seals them: sorted JSON) under the client's
        current audit key, bound to ``request_id`` (docs/format.md §4.3a)."""
        ring = self.admin.ring(client_id)
        if not ring or len(ring) % RING_KEY_BYTES:
            raise UntrustedRecord("the client's audit keys are not open")
        version = len(ring) // RING_KEY_BYTES
        raw = json.dumps(json.loads(details_json), sort_keys=True).encode("utf-8")
        return version, blobs.encrypt_audit_detail_v3(
            ring[-RING_KEY_BYTES:], version, raw, client_id, request_id, action
        )


class RemotePolicyWrites(_Noun):
    """An admin's ``policies.set`` through the server: a draft and a signed commit (module docstring);
    ``RemoteVault.policies`` (``remote_policies.py``) hands its ``set`` here."""

    def __init__(
        self,
        keys: RemoteKeys,
        https: HttpsTransport,
        clock: Callable[[], dt.datetime],
        learned: Callable[[str], LearnedContext],
        slugs: Callable[[int, bytes], str | None] | None = None,
    ) -> None:
        self.keys = keys
        self.lookup = _AdminClients(AdminLookup(keys, learned), slugs)
        transport = HttpsPolicyWriteTransport(https, self.lookup.slug_tag, self.lookup.seal_details)
        self.writes = PolicyKeyholder(transport, keys, self.lookup, self.lookup, clock)

    def __repr__(self) -> str:
        return "RemotePolicyWrites()"

    def set(
        self,
        client: str,
        *,
        reason_required: bool | None = None,
        exclusive: bool | None = None,
        rotate_after_checkout: bool | None = None,
        checkout_for: dt.timedelta | None = None,
        stale_days: int | None = None,
    ) -> PolicyInfo:
        """As ``Vault.policies.set``, through the server (an admin's)."""
        validation.client_slug(client)
        self.keys.me()
        wanted = functools.partial(
            wanted_values, reason_required=reason_required, exclusive=exclusive,
            rotate_after_checkout=rotate_after_checkout, checkout_for=checkout_for, stale_days=stale_days,
        )  # fmt: skip
        return self.writes.set(client, wanted)

    def unsigned(self) -> list[PolicyInfo]:
        """As ``Vault.policies.unsigned``, through the server (an admin's)."""
        self.keys.me()
        self.keys.open_recovery()
        return self.writes.unsigned()

    def adopt(self, shown: Sequence[PolicyInfo]) -> list[PolicyInfo]:
        """As ``Vault.policies.adopt``, through the server (an admin's): nothing signed unless the
        unsigned policies are still exactly those ``shown``; then each client's a ``policies.set``
        draft and signed commit of its own (module docstring)."""
        if self.unsigned() != list(shown):
            raise IntegrityError(CHANGED_SINCE_SHOWN, hint="run `credvault policy adopt` again and check what it shows")
        return [self.writes.adopt_one(p.client, p) for p in shown]


class ClientSlugs:
    """An admin's slug of a client named by id (module docstring): the client's context read by id
    (``checkouts.context``, no event), checked by the checkout keyholder, the slug opened under the
    client key it opens from the root-sealed copy; None where it does not open (as in-process)."""

    def __init__(self, keyholder: CheckoutKeyholder) -> None:
        self.keyholder = keyholder

    def __repr__(self) -> str:
        return "ClientSlugs()"

    def __call__(self, client_id: int, slug_blob: bytes) -> str | None:
        kh = self.keyholder
        learner = kh.learner
        if learner is None:
            return None
        me = kh.keys.session()
        held = tuple(v for (c, v) in kh.cache if c == client_id)
        request = ContextRequest(
            Caller(me.engineer_id, me.key_generation), client_id, None, held, me.org_signing_public
        )
        try:
            r = learner.transport.context(request)
        except NotFound:
            return None
        checks, row = kh.me_checked(me, r)
        if r.client.id != client_id or r.client.slug_blob != slug_blob:
            raise UntrustedRecord("the server answered for another client than the one asked for")
        if row.role != ROLE_ADMIN or r.root_version is None or r.root_version != kh.keys.recovery_version():
            return None
        version = blobs.blob_key_version(slug_blob)
        sealed = {k.record.version: k for k in r.sealed_keys}.get(version)
        try:
            key = kh.client_key(me, row, checks, client_id, version, sealed)
            return blobs.decrypt_client_field(key, version, slug_blob, client_id, "slug").decode("utf-8")
        except (VaultError, UnicodeDecodeError):
            return None


class _PurgedKeys:
    """``DataKeys`` of the purge keyholder through the server: a client purge fingerprints key records
    only; a secret's purge opens its data keys under the client keys this session holds (learned with
    the client's context), as the server's draft answered them (its layer removed there, on record);
    a purged client's keys and slug are forgotten."""

    def __init__(self, keys: RemoteKeys) -> None:
        self.keys = keys

    def __repr__(self) -> str:
        return "PurgedKeys()"

    def client_key(self, client_id: int, version: int) -> bytes:
        key = self.keys.client_keys.get((client_id, version))
        if key is None:
            raise not_served("purge.secret of a version under an older client key (finish the client's key rotation)")
        return key

    def inner(self, client_id: int, v: PurgedVersion) -> bytes:
        return v.wrapped_dek

    def forget(self, client_id: int) -> None:
        for cached in [k for k in self.keys.client_keys if k[0] == client_id]:
            del self.keys.client_keys[cached]
        for slug in [slug for slug, known in self.keys.slugs.items() if known == client_id]:
            del self.keys.slugs[slug]


class RemotePurge(_Noun):
    """An admin's client purge through the server (a draft and a signed commit), its preview and the
    receipts; any engineer's check of a receipt (module docstring)."""

    def __init__(
        self,
        keys: RemoteKeys,
        https: HttpsTransport,
        clock: Callable[[], dt.datetime],
        learned: Callable[[str], LearnedContext],
    ) -> None:
        self.keys, self.https = keys, https
        self.lookup = _AdminClients(AdminLookup(keys, learned))
        self.transport = HttpsPurgeTransport(https, self.lookup.slug_tag)
        self.data_keys = _PurgedKeys(keys)
        self.keyholder = PurgeKeyholder(self.transport, keys, self.lookup, self.data_keys, clock)

    def __repr__(self) -> str:
        return "RemotePurge()"

    def preview(self, client: str) -> PurgePreview:
        validation.client_slug(client)
        self.keys.me()
        return self.keyholder.preview(client)

    def client(self, client: str, *, request: str, vacuum: bool = False) -> ReceiptInfo:
        """As ``Vault.purge.client``, through the server; freed pages are scrubbed on the host."""
        checked_request_ref(request)
        validation.client_slug(client)
        self.keys.me()
        receipt = self.keyholder.client(client, request)
        return self.vacuumed(receipt) if vacuum else receipt

    def vacuumed(self, receipt: ReceiptInfo) -> ReceiptInfo:
        """``receipt`` (its purge committed) once the server's host ran the vacuum (``purge.vacuum``),
        saying what it ran."""
        me = self.keys.me()
        asked = VacuumRequest(Caller(me.engineer_id, me.key_generation), receipt.id)
        done = answer_of(self.https, "purge.vacuum", asked, VacuumDone)
        if done.receipt_id != receipt.id:
            raise UntrustedRecord("the server answered the vacuum of another purge")
        return dataclasses.replace(receipt, scrubbed=f"on the server's host: {done.done}")

    def secret(self, ref: str, *, request: str, vacuum: bool = False) -> ReceiptInfo:
        """As ``Vault.purge.secret``, through the server (module docstring); freed pages are scrubbed on the host."""
        checked_request_ref(request)
        slug, name = checks.secret_ref(ref)
        me = self.keys.me()
        client_id, slug_blob = self.lookup.client(slug)
        name_tag = signing.lookup_tag(self.lookup.admin.lookup_key(client_id), LABEL_TAG_SECRET_NAME, name)
        asked = PurgeSecretDraftRequest(
            Caller(me.engineer_id, me.key_generation), self.lookup.slug_tag(client_id), client_id, name_tag,
            request, me.org_signing_public,
        )  # fmt: skip
        try:
            draft = self.transport.secret_draft(asked)
        except NotFound as error:
            if str(error) == NOTHING_MATCHES:
                raise NotFound(f"no secret {ref!r}", hint=f"`credvault secret list {slug}` shows its secrets") from None
            raise
        secret_id = self._named(draft, client_id, name)
        receipt = self.keyholder.secrets("secret", [(client_id, slug_blob, (secret_id,))], request)[0]
        return self.vacuumed(receipt) if vacuum else receipt

    def _named(self, draft: PurgeSecretDraft, client_id: int, name: str) -> int:
        """The drafted secret's id, once its current version, one of those drafted, holds ``name``."""
        parts = draft.rows.parts
        if len(parts) != 1 or parts[0].client_id != client_id or len(parts[0].secret_ids) != 1:
            raise UntrustedRecord("the server drafted the purge of another secret than the one asked for")
        secret_id, current = parts[0].secret_ids[0], draft.current
        drafted = {(v.version, v.key_version, v.wrapped_dek) for v in parts[0].versions}
        if (current.version, current.key_version, current.wrapped_dek) not in drafted:
            raise UntrustedRecord("the server's current version is not one of the versions it drafted")
        key = self.data_keys.client_key(client_id, current.key_version)
        open_metadata(key, client_id, secret_id, current, name)  # LookupMismatch: the name tag was moved
        return secret_id

    def receipts(self) -> list[ReceiptInfo]:
        self.keys.me()
        return self.keyholder.receipts()

    def verify_receipt(self, receipt_id: int) -> ReceiptCheck:
        self.keys.me()
        return self.keyholder.verify(receipt_id)


class _InviteKeys:
    """``Keys`` of the engineers keyholder for an invitation through the server: this session's keys
    and the root bundle the keyholder opens from its sealed copy (``RemoteKeys``)."""

    def __init__(self, keys: RemoteKeys) -> None:
        self.keys = keys
        self.root: object = None  # the root bundle the keyholder opened (``EngineerKeyholder.root_bundle``)

    def __repr__(self) -> str:
        return "InviteKeys()"

    def me(self) -> UnlockedSession:
        return self.keys.me()

    def session_sealing_public(self, me: UnlockedSession) -> bytes:
        return self.keys.sealing_public()

    def my_keypair(self) -> sealing.KeyPair:
        return self.keys.my_keypair()

    def my_signing_key(self) -> signing.SigningKey:
        return self.keys.my_signing_key()


class RemoteInvitations:
    """An admin's ``engineers.invite`` through the server: a draft and a signed commit (module docstring)."""

    def __init__(
        self,
        keys: RemoteKeys,
        https: HttpsTransport,
        clock: Callable[[], dt.datetime],
        live_grants: Callable[[str, int], dict[int, int | None]] | None = None,
    ) -> None:
        self.keys = keys
        params = keyrecord.DEFAULT_PARAMS
        self.keyholder = EngineerKeyholder(HttpsInviteTransport(https), _InviteKeys(keys), clock, lambda: params)  # type: ignore[arg-type]
        self.keyholder.live_grants = live_grants  # a confirmation's plan checked against the verified chain

    def __repr__(self) -> str:
        return "RemoteInvitations()"

    def invite(self, name: str, *, role: str, valid_for: dt.timedelta) -> str:
        """As ``Vault.engineers.invite``, through the server: the one-time enrolment code, made here."""
        validation.engineer_name(name)
        if role not in ROLES:
            raise InvalidInput(f"bad role {checks.shown(role)}", hint="use engineer, admin or service")
        self.keys.me()
        return self.keyholder.invite(name, role, valid_for)


class RemoteSettings(_Noun):
    """``RemoteVault.keys``: an admin's change of the vault settings through the server (module
    docstring); the other key operations are not served."""

    def __init__(self, keys: RemoteKeys, https: HttpsTransport, clock: Callable[[], dt.datetime]) -> None:
        self.keys = keys
        self.keyholder = SettingsKeyholder(HttpsSettingsTransport(https), keys, clock)

    def __repr__(self) -> str:
        return "RemoteSettings()"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise not_served(f"keys.{name}")

    def set_retention(self, versions: int) -> None:
        """As ``Vault.keys.set_retention``, through the server (an admin's)."""
        self.keys.me()
        self.keyholder.set(RETENTION, versions)

    def set_cryptoperiod(self, days: int) -> None:
        """As ``Vault.keys.set_cryptoperiod``, through the server (an admin's)."""
        self.keys.me()
        self.keyholder.set(CRYPTOPERIOD, days)
