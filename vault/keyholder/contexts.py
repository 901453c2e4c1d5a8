"""Learning a client's key context the short way: one read of the authority, verified here.

A checkout request is built on the client's key context (``ClientContext``: its id or slug
tag, slug, lookup key and audit-key ring). ``ContextLearner.learn`` asks for the client's
rows with a ``ContextRequest`` (by the id an engineer's slug hint names, or by the slug tag
under an admin's open recovery bundle) and verifies the answer as a checkout's answer is
verified, with the same checks (``CheckoutKeyholder.me_checked`` and ``client_key``): its
own row certified, active and with this session's keys; an engineer's grant head signed by
an active admin, unrevoked, unexpired; the client asked for; each client-key version not
held yet by its admin-signed record, the sealed copy opened and matching the signed
fingerprint. Only then are the slug (which must be the slug asked for), the lookup key and
the ring opened, each bound by its associated data to the client's id and its purpose.

It answers None where the short way does not apply, and the keyholder then asks the
``ClientLookup`` (the long way, through the service's checked client lookup): no slug
hint and no open recovery bundle, a recovery key rotated since the bundle was opened, a
client without an audit-key ring yet (it is made on first use, in a write), or an
engineer's slug hint that now names a client holding another slug (the lookup forgets it
and looks again). A refusal is raised, never passed to the long way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from vault.authority.checkout_context import ContextRequest, ContextResponse
from vault.authority.requests import Caller
from vault.crypto import blobs
from vault.errors import DecryptionFailed, LookupMismatch, NotFound, UntrustedRecord
from vault.storage.rows import ROLE_ADMIN

if TYPE_CHECKING:
    from vault.keyholder.checkouts import CheckoutKeyholder, ClientContext

FIELDS_PER_KEY = 16  # a few purposes per client key: a bound against churn (as Keys.client_field)


class ContextTransport(Protocol):
    def context(self, request: ContextRequest) -> ContextResponse: ...


class ContextLearner:
    """A client's key context from one verified ``ContextResponse`` (see the module docstring)."""

    def __init__(self, transport: ContextTransport, keyholder: CheckoutKeyholder) -> None:
        self.transport, self.keyholder = transport, keyholder

    def __repr__(self) -> str:
        return "ContextLearner()"

    def learn(self, slug: str) -> ClientContext | None:
        """The verified context of ``slug`` for the session's engineer, or None where the short
        way does not apply."""
        return self._learn(slug, None)

    def learn_id(self, client_id: int) -> ClientContext | None:
        """An admin's verified context of the client ``client_id`` whatever its slug (the audit log of
        a machine with no database): its slug opened, not compared, bound to the client's id and
        purpose by its associated data as every field; None where the short way does not apply.
        NotFound: no client of that id (purged)."""
        return self._learn(None, client_id)

    def _learn(self, asked: str | None, by_id: int | None) -> ClientContext | None:
        from vault.keyholder.checkouts import ClientContext

        kh = self.keyholder
        me = kh.keys.session()
        slug = asked or ""
        client_id = by_id if asked is None else kh.lookup.known(slug)
        slug_tag = None if client_id is not None else kh.keys.slug_tag(slug)
        if client_id is None and slug_tag is None:
            return None
        held = tuple(v for (c, v) in kh.cache if c == client_id) if client_id is not None else ()
        request = ContextRequest(
            Caller(me.engineer_id, me.key_generation), client_id, slug_tag, held, me.org_signing_public
        )
        try:
            r = self.transport.context(request)
        except NotFound:
            if asked is None:
                raise  # no client of that id: the caller names it so
            # The authority finds no client for the hint or the tag: the client was purged and
            # added again under the same slug, or a root rotation re-tagged every slug since
            # this admin's bundle was opened (or the grant ended). The lookup looks again, with
            # the grants and the current bundle, and refuses in its turn if nothing is there.
            return None
        checks, row = kh.me_checked(me, r)
        client = r.client
        if client_id is not None and client.id != client_id:
            raise UntrustedRecord("the authority answered for another client than the one asked for")
        if row.role != ROLE_ADMIN:
            if asked is None:
                raise UntrustedRecord("a client's context by its id alone is an admin's")
            checks.grant(r.grant, r.grant_signer, row, client.id)
        elif r.root_version is None or r.root_version != kh.keys.recovery_version():
            return None  # the recovery key was rotated: the lookup opens the current one
        if client.audit_keys_blob is None:
            return None  # no ring yet: the lookup makes it, in a write
        sealed = {k.record.version: k for k in r.sealed_keys}

        def opened(blob: bytes, purpose: str) -> bytes:
            version = blobs.blob_key_version(blob)
            key = kh.client_key(me, row, checks, client.id, version, sealed.get(version))
            return self._field(client.id, version, key, blob, purpose)

        opened_slug = opened(client.slug_blob, "slug")
        if asked is None:
            slug = opened_slug.decode("utf-8")
        elif opened_slug != slug.encode("utf-8"):
            if slug_tag is None:
                return None  # a stale slug hint: the lookup forgets it and looks again
            raise LookupMismatch(f"the client found for {slug!r} holds another slug: its lookup tag was moved")
        lookup_key = opened(client.lookup_key_blob, "lookup-key")
        ring = opened(client.audit_keys_blob, "audit-keys")
        if not ring or len(ring) % 32:
            raise DecryptionFailed()
        ring_key = kh.cache[(client.id, blobs.blob_key_version(client.audit_keys_blob))]
        return ClientContext(
            client.id, slug, slug_tag, client.slug_blob, lookup_key, client.audit_keys_blob, ring, ring_key
        )

    def _field(self, client_id: int, version: int, key: bytes, blob: bytes, purpose: str) -> bytes:
        """A client field, decrypted once per exact (key, blob) (the cache ``Keys.client_field``
        shares): the result is a pure function of both, so a rewritten blob is opened again."""
        cache = self.keyholder.cache
        slot = (client_id, version)
        if cache.get(slot) is not key:
            return blobs.decrypt_client_field(key, version, blob, client_id, purpose)
        fields = cache.fields.setdefault(slot, {})
        value = fields.get((blob, purpose))
        if value is None:
            value = blobs.decrypt_client_field(key, version, blob, client_id, purpose)
            if len(fields) >= FIELDS_PER_KEY:
                fields.clear()
            fields[(blob, purpose)] = value
        return value
