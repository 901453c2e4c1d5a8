"""The checkout keyholder against an authority that returns tampered data.

Each case runs a real checkout of an engineer (or an admin) whose transport hands the
authority's answer through a function that changes it: the draft the keyholder is shown
before the event is written, and the answer after it. Every change must be refused with
its error, nothing revealed (the value is not in the error), and, since the keyholder
refuses the draft, nothing written. A last case is an authority that does not show the
draft at all: its answer is verified after the commit, in full, and refused the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from vault.authority.requests import CheckoutRequest, CheckoutResponse
from vault.errors import DecryptionFailed, Locked, LookupMismatch, UntrustedRecord, VaultError
from vault.service import rows
from vault.storage import models as m

PW, OTHER_PW, BETA_PW, REASON = "fw01-Pw-keyholder", "sw01-Pw-keyholder", "beta-Pw-keyholder", "T-5 keyholder"
Tamper = Callable[[CheckoutResponse], CheckoutResponse]


class TamperingTransport:
    """Forwards to the real transport; what comes back (draft and answer) goes through ``tamper``."""

    def __init__(self, real: Any, tamper: Tamper, *, show_draft: bool = True, drop_key: Any = None) -> None:
        self.real, self.tamper, self.show_draft, self.drop_key = real, tamper, show_draft, drop_key
        self.refused: list[str] = []  # the reasons the keyholder gave for answers it refused

    def answer_refused(self, request: CheckoutRequest, response: CheckoutResponse, reason: str) -> None:
        self.refused.append(reason)
        self.real.answer_refused(request, response, reason)

    def call(self, request: CheckoutRequest, seal: Any) -> CheckoutResponse:
        if self.drop_key is not None:  # make the keyholder open the sealed client key returned
            cache, slot = self.drop_key
            cache.pop(slot, None)
            request = dataclasses.replace(request, known_key_versions=())
        tamper, show = self.tamper, self.show_draft

        class Seal:
            def admit(self, draft: CheckoutResponse) -> None:
                if show:
                    seal.admit(tamper(draft))

            def details(self, *args: Any) -> Any:
                return seal.details(*args)

            def sign(self, *args: Any) -> Any:
                return seal.sign(*args)

            def hold_claim(self, *args: Any) -> Any:
                return seal.hold_claim(*args)

        return tamper(self.real.call(request, Seal()))


def _rows(team: Any, row: Any, table: Any, *where: Any) -> list[Any]:
    with team.admin.store.transaction() as s:
        return [row._make(r) for r in s.execute(select(*[table.c[f] for f in row._fields]).where(*where)).all()]


@dataclasses.dataclass
class Scene:
    team: Any
    alice: Any
    acme: int
    beta: int
    fw: int
    sw: int


def _build(team: Any) -> tuple[int, ...]:
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta Ltd")
    admin.secrets.add("acme/fw01", password=PW, username="fw-admin")
    admin.secrets.add("acme/sw01", password=OTHER_PW, username="sw-admin")
    admin.secrets.add("beta/fw01", password=BETA_PW)
    team.engineer("alice")
    team.engineer("bob")
    admin.grants.grant("alice", "acme")
    admin.grants.grant("alice", "beta")
    admin.grants.grant("bob", "acme")
    with admin.store.transaction() as s:
        ids = {slug: cid for cid, slug in ((c.id, admin.clients.slug(s, c)) for c in s.scalars(select(m.Client)))}
        secrets = {(sid, cid): None for sid, cid in s.execute(select(m.Secret.id, m.Secret.client_id)).all()}
    acme_secrets = sorted(sid for sid, cid in secrets if cid == ids["acme"])
    return (ids["acme"], ids["beta"], acme_secrets[0], acme_secrets[1])


@pytest.fixture(scope="module")
def built(build_team: Any) -> Any:
    """The team, clients, secrets and grants, made once per module and engine."""
    return build_team(_build)


@pytest.fixture
def scene(built: Any, tmp_path: Any, pg_databases: Any) -> Iterator[Scene]:
    """A fresh copy of the built database; the admin and alice unlocked in fresh Vault objects,
    and alice's own first operations (her keys, grants and contexts learned) run here."""
    with built.restore(tmp_path, pg_databases) as team:
        team.admin.engineers.unlock(team.admin.engineer_name, team.passphrases[team.admin.engineer_name])
        alice = team.unlocked("alice")
        assert alice.checkouts.reveal("beta/fw01", reason=REASON) == BETA_PW
        assert alice.checkouts.reveal("acme/sw01", reason=REASON) == OTHER_PW
        yield Scene(team, alice, *built.facts)


def _head(scene: Scene) -> Any:
    return scene.team.admin.audit.head()


def _with(scene: Scene, tamper: Tamper, who: Any = None, **options: Any) -> Any:
    vault = who or scene.alice
    keyholder = vault.checkouts._checkout_keyholder()
    real = keyholder.transport
    while isinstance(real, TamperingTransport):  # one tampering at a time
        real = real.real
    keyholder.transport = TamperingTransport(real, tamper, **options)
    return vault


def _refused(scene: Scene, tamper: Tamper, error: type[VaultError], *, who: Any = None, **options: Any) -> None:
    vault = _with(scene, tamper, who, **options)
    before = _head(scene)
    with pytest.raises(error) as caught:
        vault.checkouts.checkout("acme/fw01", reason=REASON)
    for value in (PW, OTHER_PW, BETA_PW):
        assert value not in str(caught.value) and value not in repr(caught.value)
    if options.get("show_draft", True):
        assert _head(scene) == before, "the refused answer was recorded as a checkout"


def _version(scene: Scene, secret_id: int) -> rows.VersionRow:
    (row,) = _rows(scene.team, rows.VersionRow, rows.VERSIONS, rows.VERSIONS.c.secret_id == secret_id)
    return row


def test_an_untampered_answer_is_revealed(scene: Scene) -> None:
    vault = _with(scene, lambda r: r)
    assert vault.checkouts.checkout("acme/fw01", reason=REASON).value == PW  # the harness itself changes nothing


def test_a_password_blob_of_another_secret_is_refused(scene: Scene) -> None:
    other = _version(scene, scene.sw)

    def tamper(r: CheckoutResponse) -> CheckoutResponse:
        return dataclasses.replace(r, version=r.version._replace(password_blob=other.password_blob))

    _refused(scene, tamper, DecryptionFailed)


def test_a_whole_version_of_another_secret_is_refused(scene: Scene) -> None:
    other = _version(scene, scene.sw)
    _refused(scene, lambda r: dataclasses.replace(r, version=other), DecryptionFailed)


def test_another_secret_under_the_name_tag_asked_for_is_refused(scene: Scene) -> None:
    (secret,) = _rows(scene.team, rows.SecretRow, rows.SECRETS, rows.SECRETS.c.id == scene.sw)
    other = _version(scene, scene.sw)

    def tamper(r: CheckoutResponse) -> CheckoutResponse:
        return dataclasses.replace(r, secret=secret._replace(name_tag=r.secret.name_tag), version=other)

    _refused(scene, tamper, LookupMismatch)


def test_a_forged_grant_signature_is_refused(scene: Scene) -> None:
    def tamper(r: CheckoutResponse) -> CheckoutResponse:
        assert r.grant is not None and r.grant.signature is not None
        forged = bytes([r.grant.signature[0] ^ 1]) + r.grant.signature[1:]
        return dataclasses.replace(r, grant=r.grant._replace(signature=forged))

    _refused(scene, tamper, UntrustedRecord)


def test_a_grant_of_another_engineer_is_refused(scene: Scene) -> None:
    (bob_id,) = [e.id for e in _rows(scene.team, rows.EngineerRow, rows.ENGINEERS, rows.ENGINEERS.c.name == "bob")]
    (grant,) = _rows(scene.team, rows.GrantRow, rows.GRANTS, rows.GRANTS.c.engineer_id == bob_id)
    _refused(scene, lambda r: dataclasses.replace(r, grant=grant), UntrustedRecord)


def test_a_grant_signed_by_a_non_admin_is_refused(scene: Scene) -> None:
    (bob,) = _rows(scene.team, rows.EngineerRow, rows.ENGINEERS, rows.ENGINEERS.c.name == "bob")

    def tamper(r: CheckoutResponse) -> CheckoutResponse:
        assert r.grant is not None
        return dataclasses.replace(r, grant=r.grant._replace(granted_by=bob.id), grant_signer=bob)

    _refused(scene, tamper, UntrustedRecord)


def test_the_certificate_of_another_engineer_is_refused(scene: Scene) -> None:
    (bob,) = _rows(scene.team, rows.EngineerRow, rows.ENGINEERS, rows.ENGINEERS.c.name == "bob")
    _refused(scene, lambda r: dataclasses.replace(r, me=bob), Locked)


def test_a_forged_certificate_is_refused(scene: Scene) -> None:
    def tamper(r: CheckoutResponse) -> CheckoutResponse:
        return dataclasses.replace(r, me=r.me._replace(role="admin"))  # promoted, outside the certificate

    _refused(scene, tamper, UntrustedRecord)


def test_an_answer_for_another_client_is_refused(scene: Scene) -> None:
    (beta,) = _rows(scene.team, rows.ClientRow, rows.CLIENTS, rows.CLIENTS.c.id == scene.beta)
    _refused(scene, lambda r: dataclasses.replace(r, client=beta), UntrustedRecord)


def test_another_client_s_slug_in_the_client_asked_for_is_refused(scene: Scene) -> None:
    (beta,) = _rows(scene.team, rows.ClientRow, rows.CLIENTS, rows.CLIENTS.c.id == scene.beta)
    _refused(scene, lambda r: dataclasses.replace(r, client=r.client._replace(slug_blob=beta.slug_blob)), VaultError)


def _sealed_path(scene: Scene) -> dict[str, Any]:
    version = _version(scene, scene.fw)
    return {"drop_key": (scene.alice.keyholder.client_keys, (scene.acme, version.key_version))}


def test_a_sealed_client_key_opens_when_it_is_genuine(scene: Scene) -> None:
    vault = _with(scene, lambda r: r, **_sealed_path(scene))
    assert vault.checkouts.checkout("acme/fw01", reason=REASON).value == PW  # the sealed path itself works


def test_another_client_s_sealed_key_is_refused(scene: Scene) -> None:
    with scene.team.admin.store.transaction() as s:
        theirs = s.scalars(
            select(m.ClientKeySeal.blob).where(
                m.ClientKeySeal.client_id == scene.beta, m.ClientKeySeal.recipient_kind == "engineer"
            )
        ).first()
    assert theirs is not None

    def tamper(r: CheckoutResponse) -> CheckoutResponse:
        assert r.sealed_key is not None, "the authority did not return the sealed key"
        return dataclasses.replace(r, sealed_key=dataclasses.replace(r.sealed_key, blob=theirs))

    _refused(scene, tamper, DecryptionFailed, **_sealed_path(scene))


def test_a_client_key_record_with_a_forged_signature_is_refused(scene: Scene) -> None:
    def tamper(r: CheckoutResponse) -> CheckoutResponse:
        assert r.sealed_key is not None and r.sealed_key.record.signature is not None
        record = r.sealed_key.record
        forged = dataclasses.replace(record, signature=bytes([record.signature[0] ^ 1]) + record.signature[1:])
        return dataclasses.replace(r, sealed_key=dataclasses.replace(r.sealed_key, record=forged))

    _refused(scene, tamper, UntrustedRecord, **_sealed_path(scene))


def test_an_authority_that_skips_the_draft_is_verified_after_the_commit(scene: Scene) -> None:
    def tamper(r: CheckoutResponse) -> CheckoutResponse:
        assert r.grant is not None and r.grant.signature is not None
        forged = bytes([r.grant.signature[0] ^ 1]) + r.grant.signature[1:]
        return dataclasses.replace(r, grant=r.grant._replace(signature=forged))

    _refused(scene, tamper, UntrustedRecord, show_draft=False)
    other = _version(scene, scene.sw)
    _refused(scene, lambda r: dataclasses.replace(r, version=other), DecryptionFailed, show_draft=False)
