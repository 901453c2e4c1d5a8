"""Check-in, break and the listing of checkouts, keyholder half, against a tampering authority.

Each case runs the real operation of an engineer (or the admin) whose transport hands what
the authority shows and returns through a function that changes it: the draft of the rows a
check-in or break acts on (verified before anything is written), the key a new version is
written under, the events the seal is asked to seal, and a listing. Every change must be
refused with its error, nothing revealed (no value in the error) and nothing written (the
audit head, the open holds and the versions as they were).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from vault.authority.requests import CHECKIN, SECRET_UPDATE, CheckoutResponse, ListResponse, ReleaseRequest, WriteKey
from vault.errors import DecryptionFailed, IntegrityError, Locked, LookupMismatch, UntrustedRecord, VaultError
from vault.service import rows
from vault.storage import models as m

PW, OTHER_PW, BETA_PW, NEW_PW, REASON = "fw01-Pw-ci", "sw01-Pw-ci", "beta-Pw-ci", "new-Pw-ci-2", "T-6 checkin"
Draft = Callable[[CheckoutResponse], CheckoutResponse]


def _same(value: Any) -> Any:
    return value


class TamperingTransport:
    """Forwards to the real transport; the draft, the write key, the sealed events and the
    listing go through the given functions."""

    def __init__(
        self,
        real: Any,
        *,
        draft: Draft = _same,
        write: Callable[[WriteKey], WriteKey] = _same,
        facts: Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]] = lambda a, f: (a, f),
        listing: Callable[[ListResponse], ListResponse] = _same,
        show_draft: bool = True,
        sign_twice: bool = False,
    ) -> None:
        self.real, self.draft, self.write, self.facts, self.listing = real, draft, write, facts, listing
        self.show_draft, self.sign_twice = show_draft, sign_twice

    def release(self, request: ReleaseRequest, seal: Any) -> Any:
        outer = self

        class Seal:
            def admit(self, draft: CheckoutResponse) -> None:
                if outer.show_draft:
                    seal.admit(outer.draft(draft))

            def new_version(self, write: WriteKey) -> Any:
                return seal.new_version(outer.write(write))

            def details(self, client_id: int, seq: int, action: str, facts: dict[str, Any]) -> Any:
                return seal.details(client_id, seq, *outer.facts(action, facts))

            def sign(self, *args: Any) -> Any:
                if outer.sign_twice:
                    seal.sign(*args)  # a second signature of the same event, kept by the authority
                return seal.sign(*args)

            def hold_claim(self, *args: Any) -> Any:
                return seal.hold_claim(*args)

        return self.real.release(request, Seal())

    def list_checkouts(self, request: Any) -> ListResponse:
        return self.listing(self.real.list_checkouts(request))


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
        secrets = sorted(sid for sid, cid in s.execute(select(m.Secret.id, m.Secret.client_id)) if cid == ids["acme"])
    return (ids["acme"], ids["beta"], secrets[0], secrets[1])


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
        assert alice.checkouts.checkout("acme/fw01", reason=REASON).value == PW  # the hold checked in below
        yield Scene(team, alice, *built.facts)


def _state(scene: Scene) -> tuple[Any, ...]:
    with scene.team.admin.store.transaction() as s:
        head = tuple(s.execute(select(m.AuditHead.seq, m.AuditHead.hash)).one())
        holds = s.scalars(select(m.Checkout.id).where(m.Checkout.released_at.is_(None))).all()
        versions = s.execute(select(m.SecretVersion.secret_id, m.SecretVersion.version)).all()
    return head, tuple(holds), tuple(map(tuple, versions))


def _with(vault: Any, **options: Any) -> Any:
    keyholder = vault.checkouts._checkin_keyholder()
    real = keyholder.transport
    while isinstance(real, TamperingTransport):  # one tampering at a time
        real = real.real
    keyholder.transport = TamperingTransport(real, **options)
    return vault


def _refused(scene: Scene, error: type[VaultError], run: Callable[[Any], Any], who: Any = None, **options: Any) -> None:
    vault = _with(who or scene.alice, **options)
    before = _state(scene)
    with pytest.raises(error) as caught:
        run(vault)
    for value in (PW, OTHER_PW, BETA_PW, NEW_PW):
        assert value not in str(caught.value) and value not in repr(caught.value)
    assert _state(scene) == before, "a refused answer changed the vault"


def _checkin(vault: Any) -> Any:
    return vault.checkouts.checkin("acme/fw01")


def _checkin_new(vault: Any) -> Any:
    return vault.checkouts.checkin("acme/fw01", new_password=NEW_PW)


def _version(scene: Scene, secret_id: int) -> rows.VersionRow:
    (row,) = _rows(scene.team, rows.VersionRow, rows.VERSIONS, rows.VERSIONS.c.secret_id == secret_id)
    return row


def _forged(signature: bytes | None) -> bytes:
    assert signature is not None
    return bytes([signature[0] ^ 1]) + signature[1:]


# -- the draft of a check-in or break ------------------------------------------------------------------------


def test_an_untampered_check_in_with_a_new_value_stores_it(scene: Scene) -> None:
    assert _with(scene.alice).checkouts.checkin("acme/fw01", new_password=NEW_PW) is None
    assert scene.team.admin.checkouts.reveal("acme/fw01", reason=REASON) == NEW_PW  # the harness changes nothing


@pytest.mark.parametrize("run", [_checkin, _checkin_new])
def test_a_version_of_another_secret_is_refused(scene: Scene, run: Callable[[Any], Any]) -> None:
    other = _version(scene, scene.sw)
    _refused(scene, DecryptionFailed, run, draft=lambda r: dataclasses.replace(r, version=other))


def test_another_secret_under_the_name_tag_asked_for_is_refused(scene: Scene) -> None:
    (secret,) = _rows(scene.team, rows.SecretRow, rows.SECRETS, rows.SECRETS.c.id == scene.sw)
    other = _version(scene, scene.sw)

    def tamper(r: CheckoutResponse) -> CheckoutResponse:
        return dataclasses.replace(r, secret=secret._replace(name_tag=r.secret.name_tag), version=other)

    _refused(scene, LookupMismatch, _checkin_new, draft=tamper)


def test_a_forged_grant_signature_is_refused(scene: Scene) -> None:
    def tamper(r: CheckoutResponse) -> CheckoutResponse:
        assert r.grant is not None
        return dataclasses.replace(r, grant=r.grant._replace(signature=_forged(r.grant.signature)))

    _refused(scene, UntrustedRecord, _checkin, draft=tamper)


def test_a_promotion_outside_the_certificate_is_refused(scene: Scene) -> None:
    _refused(scene, UntrustedRecord, _checkin, draft=lambda r: dataclasses.replace(r, me=r.me._replace(role="admin")))


def test_an_older_version_shown_as_the_current_one_is_refused(scene: Scene) -> None:
    def tamper(r: CheckoutResponse) -> CheckoutResponse:
        return dataclasses.replace(r, secret=r.secret._replace(current_version=r.secret.current_version + 1))

    _refused(scene, UntrustedRecord, _checkin_new, draft=tamper)


def test_an_authority_that_skips_the_draft_gets_no_signature(scene: Scene) -> None:
    _refused(scene, UntrustedRecord, _checkin, show_draft=False)
    _refused(scene, UntrustedRecord, _checkin_new, show_draft=False)
    admin = scene.team.admin
    _refused(scene, UntrustedRecord, lambda v: v.checkouts.break_checkout("acme/fw01"), who=admin, show_draft=False)


def test_a_break_whose_draft_is_another_client_s_is_refused(scene: Scene) -> None:
    (beta,) = _rows(scene.team, rows.ClientRow, rows.CLIENTS, rows.CLIENTS.c.id == scene.beta)
    admin = scene.team.admin
    run = lambda v: v.checkouts.break_checkout("acme/fw01")  # noqa: E731
    _refused(scene, VaultError, run, who=admin, draft=lambda r: dataclasses.replace(r, client=beta))


# -- the key a new version is written under ------------------------------------------------------------------


def test_a_write_key_record_with_a_forged_signature_is_refused(scene: Scene) -> None:
    def tamper(w: WriteKey) -> WriteKey:
        assert w.sealed is not None
        record = dataclasses.replace(w.sealed.record, signature=_forged(w.sealed.record.signature))
        return dataclasses.replace(w, sealed=dataclasses.replace(w.sealed, record=record))

    _refused(scene, UntrustedRecord, _checkin_new, write=tamper)


def test_another_client_s_write_key_is_refused(scene: Scene) -> None:
    def tamper(w: WriteKey) -> WriteKey:
        assert w.sealed is not None
        record = dataclasses.replace(w.sealed.record, client_id=scene.beta)
        return dataclasses.replace(w, sealed=dataclasses.replace(w.sealed, record=record))

    _refused(scene, DecryptionFailed, _checkin_new, write=tamper)


def test_a_destroyed_or_missing_write_key_is_refused(scene: Scene) -> None:
    def destroyed(w: WriteKey) -> WriteKey:
        assert w.sealed is not None
        record = dataclasses.replace(w.sealed.record, state="destroyed")
        return dataclasses.replace(w, sealed=dataclasses.replace(w.sealed, record=record))

    _refused(scene, DecryptionFailed, _checkin_new, write=destroyed)
    _refused(scene, DecryptionFailed, _checkin_new, write=lambda w: dataclasses.replace(w, sealed=None))


def test_a_version_number_other_than_the_next_is_refused(scene: Scene) -> None:
    for number in (1, 3):
        _refused(scene, UntrustedRecord, _checkin_new, write=lambda w, n=number: dataclasses.replace(w, next_version=n))


# -- the events the seal is asked to seal -------------------------------------------------------------------


def test_an_event_other_than_the_one_asked_for_is_not_sealed(scene: Scene) -> None:
    _refused(scene, UntrustedRecord, _checkin, facts=lambda a, f: ("checkout", f))
    _refused(scene, UntrustedRecord, _checkin, facts=lambda a, f: (a, {**f, "reason": "planted"}))
    _refused(
        scene, UntrustedRecord, _checkin, facts=lambda a, f: ("secret-update", {"version": 2, "password_changed": True})
    )


def test_a_secret_update_recording_another_version_is_not_sealed(scene: Scene) -> None:
    def tamper(a: str, f: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return (a, {**f, "version": f["version"] + 1}) if a == SECRET_UPDATE else (a, f)

    _refused(scene, UntrustedRecord, _checkin_new, facts=tamper)


def _released(n: int) -> Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]]:
    return lambda a, f: (a, {**f, "released": n}) if a == CHECKIN else (a, f)


def test_a_check_in_recording_other_releases_is_not_sealed(scene: Scene) -> None:
    _refused(scene, UntrustedRecord, _checkin, facts=_released(0))  # a check-in without a value releases one
    _refused(scene, UntrustedRecord, _checkin, facts=lambda a, f: (a, {**f, "new_version": True}))


def test_an_answer_other_than_the_events_sealed_is_refused(scene: Scene) -> None:
    # alice holds one checkout: the keyholder cannot know that before the write, but the
    # committed answer must be what it sealed (two released recorded, one reported)
    with pytest.raises(UntrustedRecord, match="sealed"):
        _with(scene.alice, facts=_released(2)).checkouts.checkin("acme/fw01")


def test_an_event_is_signed_once(scene: Scene) -> None:
    _refused(scene, UntrustedRecord, _checkin, sign_twice=True)
    _refused(scene, UntrustedRecord, _checkin_new, sign_twice=True)


# -- the insider's attack: the client's current key moved back in the database -------------------------------


def _key_moved_back(scene: Scene) -> None:
    """Client acme rotated (version 1 destroyed, 2 current; alice held 1 and holds 2), then a
    writer of the database makes version 1 current again and undoes its destruction."""
    scene.team.admin.keys.rotate_client("acme")
    assert scene.alice.checkouts.reveal("acme/sw01", reason=REASON) == OTHER_PW  # alice's context after it
    with scene.team.admin.store.transaction() as s:
        s.execute(update(m.Client).where(m.Client.id == scene.acme).values(current_key_version=1))
        s.execute(
            update(m.ClientKey)
            .where(m.ClientKey.client_id == scene.acme, m.ClientKey.version == 1)
            .values(state="retiring", destroyed_at=None)
        )


def test_a_check_in_under_a_client_key_moved_back_is_refused_by_the_authority(scene: Scene) -> None:
    _key_moved_back(scene)
    before = _state(scene)
    with pytest.raises(IntegrityError, match="not its newest admin-signed key version") as caught:
        _checkin_new(_with(scene.alice))
    assert type(caught.value) is IntegrityError  # the authority's refusal, not the keyholder's (a subclass)
    assert NEW_PW not in str(caught.value) and _state(scene) == before


def test_a_write_key_older_than_one_seen_is_refused_by_the_keyholder(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    _key_moved_back(scene)
    from vault.service import checkouts

    # an authority that trusts the column (as before the fix): the keyholder must refuse on its own
    monkeypatch.setattr(checkouts._PublicChecks, "current_key_version", lambda self, s, c: c.current_key_version)
    _refused(scene, UntrustedRecord, _checkin_new)


# -- the listing --------------------------------------------------------------------------------------------


def _listed(scene: Scene, vault: Any, tamper: Callable[[ListResponse], ListResponse], error: type[VaultError]) -> None:
    _refused(scene, error, lambda v: v.checkouts.list(), who=vault, listing=tamper)


def test_an_untampered_listing_is_opened(scene: Scene) -> None:
    assert [(c.client, c.secret, c.engineer) for c in _with(scene.alice).checkouts.list()] == [
        ("acme", "fw01", "alice")
    ]


def test_another_engineer_s_checkout_in_an_engineer_s_listing_is_refused(scene: Scene) -> None:
    def tamper(r: ListResponse) -> ListResponse:
        (c,) = r.checkouts
        return dataclasses.replace(r, checkouts=(dataclasses.replace(c, engineer_id=c.engineer_id + 1),))

    _listed(scene, scene.alice, tamper, UntrustedRecord)


def test_a_listed_version_of_another_secret_is_refused(scene: Scene) -> None:
    other = _version(scene, scene.sw)

    def tamper(r: ListResponse) -> ListResponse:
        return dataclasses.replace(r, checkouts=tuple(dataclasses.replace(c, version=other) for c in r.checkouts))

    _listed(scene, scene.alice, tamper, DecryptionFailed)


def test_a_listed_client_key_with_a_forged_signature_is_refused(scene: Scene) -> None:
    scene.alice.keyholder.client_keys.clear()  # the keys must come with the listing

    def tamper(r: ListResponse) -> ListResponse:
        assert r.sealed_keys, "the authority returned no sealed key"
        forged = [
            dataclasses.replace(k, record=dataclasses.replace(k.record, signature=_forged(k.record.signature)))
            for k in r.sealed_keys
        ]
        return dataclasses.replace(r, sealed_keys=tuple(forged))

    _listed(scene, scene.alice, tamper, UntrustedRecord)


def test_a_listing_with_a_forged_own_row_is_refused(scene: Scene) -> None:
    _listed(scene, scene.alice, lambda r: dataclasses.replace(r, me=r.me._replace(role="admin")), UntrustedRecord)
    (bob,) = _rows(scene.team, rows.EngineerRow, rows.ENGINEERS, rows.ENGINEERS.c.name == "bob")
    _listed(scene, scene.alice, lambda r: dataclasses.replace(r, me=bob), Locked)


def test_a_checkout_whose_version_row_was_deleted_is_reported(scene: Scene) -> None:
    with scene.team.admin.store.transaction() as s:
        s.execute(delete(m.SecretVersion).where(m.SecretVersion.secret_id == scene.fw))
    for vault in (scene.alice, scene.team.admin):
        with pytest.raises(IntegrityError, match="damaged"):
            _with(vault).checkouts.list()
