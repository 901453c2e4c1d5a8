"""The short way a keyholder learns a client's key context, against an insider.

Before the first checkout in a client, the keyholder asks the authority for the client's
rows (``ContextRequest``, one read) and verifies the answer itself (``ContextLearner``). Each
case plays a person with database access or a compromised authority: an answer rewritten
in transit (a grant, a client row, a client-key record), or a row rewritten in the database
(a lookup-key blob moved from another client, two slug tags swapped, the blob under a
context the keyholder already opened). Every case must be refused with its error, nothing
revealed and nothing written; a stale slug hint is the one case that goes the long way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from vault.authority.checkout_context import ContextRequest, ContextResponse
from vault.errors import DecryptionFailed, LookupMismatch, NotFound, UntrustedRecord, VaultError
from vault.service import rows
from vault.storage import models as m

PW, BETA_PW, REASON = "fw01-Pw-context", "beta-Pw-context", "T-7 context"
Tamper = Callable[[ContextResponse], ContextResponse]


class CountingContexts:
    """Forwards context requests to the real transport, through ``tamper``, and counts them."""

    def __init__(self, real: Any, tamper: Tamper) -> None:
        self.real, self.tamper, self.asked = real, tamper, 0

    def context(self, request: ContextRequest) -> ContextResponse:
        self.asked += 1
        return self.tamper(self.real.context(request))


class CountingLookup:
    """The long way, counted (it must not run where the short way applies)."""

    def __init__(self, real: Any) -> None:
        self.real, self.asked = real, 0

    def context(self, slug: str) -> Any:
        self.asked += 1
        return self.real.context(slug)

    def known(self, slug: str) -> int | None:
        return self.real.known(slug)  # type: ignore[no-any-return]


@dataclasses.dataclass
class Scene:
    team: Any
    alice: Any
    acme: int
    beta: int


def _build(team: Any) -> tuple[int, ...]:
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta Ltd")
    admin.secrets.add("acme/fw01", password=PW)
    admin.secrets.add("beta/fw01", password=BETA_PW)
    team.engineer("alice")
    team.engineer("bob")
    admin.grants.grant("alice", "acme")
    admin.grants.grant("alice", "beta")
    admin.grants.grant("bob", "acme")
    with admin.store.transaction() as s:
        ids = {admin.clients.slug(s, c): c.id for c in s.scalars(select(m.Client))}
    return (ids["acme"], ids["beta"])


@pytest.fixture(scope="module")
def built(build_team: Any) -> Any:
    return build_team(_build)


@pytest.fixture
def scene(built: Any, tmp_path: Any, pg_databases: Any) -> Iterator[Scene]:
    """alice unlocked in a fresh Vault object; her first checkout (beta) learned her slug hints."""
    with built.restore(tmp_path, pg_databases) as team:
        team.admin.engineers.unlock(team.admin.engineer_name, team.passphrases[team.admin.engineer_name])
        alice = team.unlocked("alice")
        assert alice.checkouts.reveal("beta/fw01", reason=REASON) == BETA_PW
        yield Scene(team, alice, *built.facts)


def _short_way(vault: Any, tamper: Tamper = lambda r: r, *, drop: int | None = None) -> tuple[Any, Any]:
    """``vault``'s keyholder with no context kept (``drop``: nor that client's keys), its
    short way through ``tamper`` and its long way counted."""
    keyholder = vault.checkouts._checkout_keyholder()
    keyholder._contexts.clear()
    keyholder.cache.tags.clear()
    if drop is not None:
        for slot in [slot for slot in keyholder.cache if slot[0] == drop]:
            del keyholder.cache[slot]
    assert keyholder.learner is not None
    real = keyholder.learner.transport
    while isinstance(real, CountingContexts):
        real = real.real
    contexts = keyholder.learner.transport = CountingContexts(real, tamper)
    lookup = keyholder.lookup = CountingLookup(getattr(keyholder.lookup, "real", keyholder.lookup))
    return contexts, lookup


def _head(scene: Scene) -> Any:
    return scene.team.admin.audit.head()


def _refused(scene: Scene, error: type[VaultError], vault: Any = None, ref: str = "acme/fw01") -> None:
    before = _head(scene)
    with pytest.raises(error) as caught:
        (vault or scene.alice).checkouts.checkout(ref, reason=REASON)
    for value in (PW, BETA_PW):
        assert value not in str(caught.value) and value not in repr(caught.value)
    assert _head(scene) == before, "the refused checkout was recorded"


def _client(scene: Scene, client_id: int) -> rows.ClientRow:
    with scene.team.admin.store.transaction() as s:
        (row,) = s.execute(
            select(*[rows.CLIENTS.c[f] for f in rows.ClientRow._fields]).where(rows.CLIENTS.c.id == client_id)
        )
        return rows.ClientRow._make(row)


def test_a_new_client_s_context_is_learned_the_short_way(scene: Scene) -> None:
    contexts, lookup = _short_way(scene.alice, drop=scene.acme)
    assert scene.alice.checkouts.checkout("acme/fw01", reason=REASON).value == PW
    assert (contexts.asked, lookup.asked) == (1, 0)


def test_an_admin_learns_a_new_client_s_context_the_short_way(scene: Scene) -> None:
    admin = scene.team.admin
    assert admin.checkouts.reveal("beta/fw01", reason=REASON) == BETA_PW  # opens the recovery bundle
    contexts, lookup = _short_way(admin, drop=scene.acme)
    assert admin.checkouts.checkout("acme/fw01", reason=REASON).value == PW
    assert (contexts.asked, lookup.asked) == (1, 0)


def test_a_lookup_key_moved_from_another_client_is_refused(scene: Scene) -> None:
    """A DBA copies beta's lookup-key blob into acme's row, after alice opened acme's: the
    field is remembered by its exact blob, so the new blob is opened, and fails to."""
    _short_way(scene.alice)
    assert scene.alice.checkouts.checkout("acme/fw01", reason=REASON).value == PW
    beta = _client(scene, scene.beta)
    with scene.team.admin.store.transaction() as s:
        s.execute(update(m.Client).where(m.Client.id == scene.acme).values(lookup_key_blob=beta.lookup_key_blob))
    _short_way(scene.alice)
    _refused(scene, DecryptionFailed)


def test_an_audit_ring_moved_from_another_client_is_refused(scene: Scene) -> None:
    beta = _client(scene, scene.beta)
    _short_way(
        scene.alice, lambda r: dataclasses.replace(r, client=r.client._replace(audit_keys_blob=beta.audit_keys_blob))
    )
    _refused(scene, DecryptionFailed)


def test_swapped_slug_tags_are_refused_for_an_admin(scene: Scene) -> None:
    """A DBA swaps the slug tags of acme and beta: the admin asking for acme by its tag is
    given beta's row, whose slug opens to 'beta'."""
    admin = scene.team.admin
    assert admin.checkouts.reveal("beta/fw01", reason=REASON) == BETA_PW
    with admin.store.transaction() as s:
        tags = dict(s.execute(select(m.Client.id, m.Client.slug_tag)).all())
        s.execute(update(m.Client).where(m.Client.id == scene.acme).values(slug_tag=b"\0" * len(tags[scene.acme])))
        s.execute(update(m.Client).where(m.Client.id == scene.beta).values(slug_tag=tags[scene.acme]))
        s.execute(update(m.Client).where(m.Client.id == scene.acme).values(slug_tag=tags[scene.beta]))
    contexts, _ = _short_way(admin)
    _refused(scene, LookupMismatch, admin)
    assert contexts.asked == 1


def test_an_answer_for_another_client_is_refused(scene: Scene) -> None:
    beta = _client(scene, scene.beta)
    _short_way(scene.alice, lambda r: dataclasses.replace(r, client=beta))
    _refused(scene, UntrustedRecord)


def test_a_forged_grant_signature_is_refused(scene: Scene) -> None:
    def tamper(r: ContextResponse) -> ContextResponse:
        assert r.grant is not None and r.grant.signature is not None
        forged = bytes([r.grant.signature[0] ^ 1]) + r.grant.signature[1:]
        return dataclasses.replace(r, grant=r.grant._replace(signature=forged))

    _short_way(scene.alice, tamper)
    _refused(scene, UntrustedRecord)


def test_a_grant_extended_by_a_dba_after_it_verified_is_refused(scene: Scene) -> None:
    """Signatures are remembered by the exact values verified: a grant row rewritten after a
    checkout verified it (a later end) is verified again, and fails."""
    _short_way(scene.alice)
    assert scene.alice.checkouts.checkout("acme/fw01", reason=REASON).value == PW
    with scene.team.admin.store.transaction() as s:
        s.execute(update(m.Grant).where(m.Grant.client_id == scene.acme).values(until=4_000_000_000))
    _short_way(scene.alice)
    _refused(scene, UntrustedRecord)


def test_a_missing_grant_is_refused(scene: Scene) -> None:
    _short_way(scene.alice, lambda r: dataclasses.replace(r, grant=None, grant_signer=None))
    _refused(scene, NotFound)


def test_a_revoked_grant_is_refused_the_short_way(scene: Scene) -> None:
    """The authority finds no grant for the hint and says so (``NotFound``); the keyholder
    cannot tell a revoked grant from a client purged and added again, so the lookup looks
    once more, with the grants, and refuses in its turn: nothing revealed, nothing written."""
    scene.team.admin.grants.revoke("alice", "acme")
    contexts, lookup = _short_way(scene.alice, drop=scene.acme)
    _refused(scene, NotFound)
    assert (contexts.asked, lookup.asked) == (1, 1)


def test_a_client_key_record_with_a_forged_signature_is_refused(scene: Scene) -> None:
    def tamper(r: ContextResponse) -> ContextResponse:
        (sealed,) = r.sealed_keys
        record = sealed.record
        assert record.signature is not None
        forged = dataclasses.replace(record, signature=bytes([record.signature[0] ^ 1]) + record.signature[1:])
        return dataclasses.replace(r, sealed_keys=(dataclasses.replace(sealed, record=forged),))

    _short_way(scene.alice, tamper, drop=scene.acme)
    _refused(scene, UntrustedRecord)


def test_another_client_s_sealed_key_is_refused(scene: Scene) -> None:
    with scene.team.admin.store.transaction() as s:
        theirs = s.scalars(
            select(m.ClientKeySeal.blob).where(
                m.ClientKeySeal.client_id == scene.beta, m.ClientKeySeal.recipient_kind == "engineer"
            )
        ).first()

    def tamper(r: ContextResponse) -> ContextResponse:
        (sealed,) = r.sealed_keys
        return dataclasses.replace(r, sealed_keys=(dataclasses.replace(sealed, blob=theirs),))

    _short_way(scene.alice, tamper, drop=scene.acme)
    _refused(scene, DecryptionFailed)


def test_a_stale_slug_hint_goes_the_long_way(scene: Scene) -> None:
    """A hint naming another client (its slug opens to 'beta') is not trusted: the lookup
    looks again, and the checkout reveals acme's value."""
    keyholder = scene.alice.checkouts._checkout_keyholder()
    contexts, lookup = _short_way(scene.alice)
    scene.alice.checkouts.keys.slugs["acme"] = scene.beta
    assert scene.alice.checkouts.checkout("acme/fw01", reason=REASON).value == PW
    assert (contexts.asked, lookup.asked) == (1, 1)
    assert keyholder.lookup.known("acme") == scene.acme


def test_a_slug_hint_naming_a_client_that_is_gone_goes_the_long_way(scene: Scene) -> None:
    """The hint names a client id with no row (the client was purged and added again under
    the same slug): the short way finds nothing for it, and the lookup looks again."""
    contexts, lookup = _short_way(scene.alice)
    scene.alice.checkouts.keys.slugs["acme"] = 10_000_000
    assert scene.alice.checkouts.checkout("acme/fw01", reason=REASON).value == PW
    assert (contexts.asked, lookup.asked) == (1, 1)


def test_an_admin_s_first_checkout_in_a_client_after_another_admin_rotated_the_root(scene: Scene) -> None:
    """admin2 holds the recovery bundle open from a first checkout; root-admin rotates the
    root, which re-tags every slug. admin2's tag under the old bundle finds no client: the
    checkout goes the long way (which opens the current bundle) instead of failing."""
    admin2 = scene.team.engineer("admin2", role="admin")
    assert admin2.checkouts.reveal("acme/fw01", reason=REASON) == PW  # opens bundle v1
    scene.team.admin.keys.rotate_root()
    contexts, lookup = _short_way(admin2)
    assert admin2.checkouts.reveal("beta/fw01", reason=REASON) == BETA_PW
    assert (contexts.asked, lookup.asked) == (1, 1)
