"""The reports' keyholder (``status``, ``stale``) against an authority that returns tampered
rows, and against rows an insider rewrote in the database.

Each case runs a real ``reports.status()`` / ``reports.stale()`` of the admin whose
transport hands the authority's answer through a function that changes it (the keyholder's
key cache emptied first, so every client key must come with the answer and be verified).
Every change is refused (``UntrustedRecord`` and the like) or reported as a warning that
names the client by id; nothing that does not verify is shown as a slug or a name. The
first case, no change at all, is the control.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from vault.authority.report_requests import ClientState, Counts, ReportRows
from vault.errors import AccessDenied, Locked, UntrustedRecord
from vault.storage import models as m

Tamper = Callable[[ReportRows], ReportRows]


class TamperingTransport:
    """Forwards to the real transport; the answer goes through ``tamper``."""

    def __init__(self, real: Any, tamper: Tamper) -> None:
        self.real, self.tamper = real, tamper

    def status(self, request: Any) -> ReportRows:
        return self.tamper(self.real.status(request))

    def stale(self, request: Any) -> ReportRows:
        return self.tamper(self.real.stale(request))


@dataclasses.dataclass
class Scene:
    team: Any
    alice: Any
    ids: dict[str, int]  # client slug -> id
    fw01: int  # acme/fw01's secret id (flagged, unused for 100 days)


@pytest.fixture(scope="module")
def scene(module_team: Any) -> Scene:
    team = module_team
    admin = team.admin
    for slug, name in (("acme", "Acme Ltd"), ("globex", "Globex Corp"), ("initech", "Initech")):
        admin.clients.add(slug, name)
    admin.secrets.add("acme/fw01", password="pw-1")
    admin.secrets.add("globex/sw01", password="pw-2")
    admin.policies.set("acme", stale_days=30)
    alice = team.engineer("alice")
    with admin.store.transaction() as s:
        ids = {
            c: i for i, c in zip(s.scalars(select(m.Client.id).order_by(m.Client.id)), ("acme", "globex", "initech"))
        }
        fw01 = s.scalars(select(m.Secret.id).where(m.Secret.client_id == ids["acme"])).one()
        long_ago = team.clock() - dt.timedelta(days=100)
        s.execute(
            update(m.Secret).where(m.Secret.id == fw01).values(must_change=True, created_at=long_ago, last_used_at=None)
        )
    return Scene(team, alice, ids, fw01)


@contextlib.contextmanager
def _tamper_with(vault: Any, tamper: Tamper) -> Iterator[None]:
    keyholder = vault.reports._report_keyholder()
    real = keyholder.transport
    keyholder.transport = TamperingTransport(real, tamper)
    keyholder.cache.clear()  # nothing held: every key must come, verified, with the answer
    try:
        yield
    finally:
        keyholder.transport = real
        keyholder.cache.clear()


def _status(scene: Scene, tamper: Tamper) -> Any:
    with _tamper_with(scene.team.admin, tamper):
        return scene.team.admin.reports.status()


def _refused(scene: Scene, tamper: Tamper, error: Any = UntrustedRecord, *, stale: bool = False) -> None:
    with _tamper_with(scene.team.admin, tamper), pytest.raises(error):
        scene.team.admin.reports.stale() if stale else scene.team.admin.reports.status()


def _no_slug_shown(report: Any, client_id: int, slug: str) -> None:
    assert any(w.startswith(f"client #{client_id}: its slug does not open") for w in report.warnings), report
    assert not any(f"client {slug}:" in w for w in report.warnings)


def test_the_untampered_status_and_stale_are_the_control(scene: Scene) -> None:
    report = _status(scene, lambda r: r)
    assert (report.clients, report.secrets, report.must_change) == (3, 2, ["acme/fw01"])
    assert not any("does not open" in w or "does not verify" in w for w in report.warnings), report.warnings
    with _tamper_with(scene.team.admin, lambda r: r):
        stale = scene.team.admin.reports.stale()
    assert [(x.client, x.secret, x.stale_days) for x in stale] == [("acme", "fw01", 30)]


def test_an_engineer_is_refused_status_and_stale(scene: Scene) -> None:
    for report in (scene.alice.reports.status, scene.alice.reports.stale):
        with pytest.raises(AccessDenied):
            report()


# -- the answer's shape: a client left out, listed twice, counts swapped -------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: dataclasses.replace(r, counts=dataclasses.replace(r.counts, clients=r.counts.clients + 1)),
        lambda r: dataclasses.replace(r, counts=dataclasses.replace(r.counts, clients=r.counts.clients - 1)),
        lambda r: dataclasses.replace(r, counts=Counts(r.counts.clients, 0, r.counts.engineers)),
        lambda r: dataclasses.replace(r, clients=r.clients[1:]),  # a client left out, the count kept
        lambda r: dataclasses.replace(r, clients=r.clients[1:], counts=dataclasses.replace(r.counts, clients=2)),
        lambda r: dataclasses.replace(r, clients=(r.clients[0], *r.clients)),  # one twice
        lambda r: dataclasses.replace(r, clients=tuple(reversed(r.clients))),  # out of order
        lambda r: dataclasses.replace(r, secrets=r.secrets * 2),  # a flagged secret twice
        lambda r: dataclasses.replace(r, action="stale"),  # another report's answer
        lambda r: dataclasses.replace(r, vault_id=bytes(16)),  # another vault's
    ],
    ids=[
        "a-client-more-counted",
        "a-client-fewer-counted",
        "secrets-counted-below-those-listed",
        "a-client-dropped",
        "a-client-dropped-and-the-count-fixed",
        "a-client-twice",
        "out-of-order",
        "a-secret-twice",
        "another-action",
        "another-vault",
    ],
)
def test_a_status_answer_of_the_wrong_shape_is_refused(scene: Scene, tamper: Tamper) -> None:
    _refused(scene, tamper)


def test_a_caller_row_that_is_not_an_admin_is_refused(scene: Scene) -> None:
    def demoted(r: ReportRows) -> ReportRows:
        return dataclasses.replace(r, me=r.me._replace(role="engineer"))

    _refused(scene, demoted, (AccessDenied, UntrustedRecord))
    def older(r: ReportRows) -> ReportRows:
        return dataclasses.replace(r, me=r.me._replace(key_generation=r.me.key_generation + 1))

    _refused(scene, older, (Locked, UntrustedRecord))


# -- rows a DBA rewrote ------------------------------------------------------------------------------


def test_a_slug_rewritten_in_the_database_is_reported_never_shown(scene: Scene) -> None:
    """The DBA swaps the encrypted slugs of acme and globex: each is bound to its own row, so
    neither opens; status names both by id, and the flagged acme secret is not shown by name."""
    admin, ids = scene.team.admin, scene.ids
    with admin.store.transaction() as s:
        acme, globex = s.get(m.Client, ids["acme"]), s.get(m.Client, ids["globex"])
        assert acme is not None and globex is not None
        original = (acme.slug_blob, globex.slug_blob)
        acme.slug_blob, globex.slug_blob = original[1], original[0]
    try:
        report = _status(scene, lambda r: r)
        _no_slug_shown(report, ids["acme"], "acme")
        _no_slug_shown(report, ids["globex"], "globex")
        assert report.must_change == [] and any(f"secret #{scene.fw01}" in w for w in report.warnings)
    finally:
        with admin.store.transaction() as s:
            s.execute(update(m.Client).where(m.Client.id == ids["acme"]).values(slug_blob=original[0]))
            s.execute(update(m.Client).where(m.Client.id == ids["globex"]).values(slug_blob=original[1]))


def test_a_slug_blob_swapped_in_the_answer_is_reported_never_shown(scene: Scene) -> None:
    def swapped(r: ReportRows) -> ReportRows:
        a, b = r.clients[0], r.clients[1]
        moved = (dataclasses.replace(a, slug_blob=b.slug_blob), dataclasses.replace(b, slug_blob=a.slug_blob))
        return dataclasses.replace(r, clients=(*moved, *r.clients[2:]))

    report = _status(scene, swapped)
    _no_slug_shown(report, scene.ids["acme"], "acme")
    _no_slug_shown(report, scene.ids["globex"], "globex")


def test_a_client_key_record_swapped_in_the_answer_opens_nothing(scene: Scene) -> None:
    """The recovery copy of acme's key handed with globex's signed record (and the reverse):
    the record names another client, so no key is opened and neither slug is shown."""

    def swapped(r: ReportRows) -> ReportRows:
        keys = list(r.sealed_keys)
        first, second = keys[0], keys[1]
        keys[0], keys[1] = dataclasses.replace(first, blob=second.blob), dataclasses.replace(second, blob=first.blob)
        return dataclasses.replace(r, sealed_keys=tuple(keys))

    report = _status(scene, swapped)
    _no_slug_shown(report, scene.ids["acme"], "acme")


def test_a_policy_signed_by_a_non_admin_is_reported_as_not_verifying(scene: Scene) -> None:
    def forged(r: ReportRows) -> ReportRows:
        acme = r.clients[0]
        assert acme.policy is not None and acme.policy_signer is not None
        signer = acme.policy_signer._replace(role="engineer")  # the signer's row, demoted
        relaxed = acme.policy._replace(exclusive=False, reason_required=False)  # the row relaxed, signature kept
        clients: list[ClientState] = [
            dataclasses.replace(acme, policy_signer=signer),
            dataclasses.replace(r.clients[1], policy=relaxed, policy_signer=acme.policy_signer),
        ]
        return dataclasses.replace(r, clients=(*clients, *r.clients[2:]))

    report = _status(scene, forged)
    assert any(w.startswith("client acme: its policy does not verify") for w in report.warnings), report.warnings
    assert any(w.startswith("client globex: its policy does not verify") for w in report.warnings)


def test_settings_forged_in_the_answer_do_not_lengthen_the_cryptoperiod(scene: Scene) -> None:
    def forged(r: ReportRows) -> ReportRows:
        assert r.settings is not None
        return dataclasses.replace(r, settings=dataclasses.replace(r.settings, cryptoperiod=3650, retention=1))

    report = _status(scene, forged)
    assert any("the vault settings do not verify, so 10 versions are kept" in w for w in report.warnings)
    assert any("reported old after 365 days" in w for w in report.warnings)


# -- stale -------------------------------------------------------------------------------------------


def test_stale_refuses_a_fresh_secret_listed_as_stale(scene: Scene) -> None:
    """The authority lists acme's secret as stale, though it was used just now."""

    def added(r: ReportRows) -> ReportRows:
        acme = r.clients[0]
        secret = r.secrets[0]
        fresh = dataclasses.replace(secret, last_used=dt.datetime.now(dt.UTC))
        return dataclasses.replace(r, clients=(acme,), secrets=(fresh,))

    _refused(scene, added, stale=True)


def test_stale_refuses_a_secret_of_a_client_it_did_not_list(scene: Scene) -> None:
    _refused(scene, lambda r: dataclasses.replace(r, clients=()), stale=True)


def test_a_policy_relaxed_in_the_database_after_a_status_is_verified_again(scene: Scene) -> None:
    """The keyholder remembers a verified policy by its exact rows: the DBA relaxing acme's
    row after a first ``status`` (its signature kept) is not covered by that memory."""
    admin, acme = scene.team.admin, scene.ids["acme"]
    assert not any("client acme:" in w for w in admin.reports.status().warnings)  # verified and remembered
    with admin.store.transaction() as s:
        row = s.get(m.ClientPolicy, acme)
        assert row is not None
        original = bool(row.exclusive)
        row.exclusive = not original
    try:
        assert any(w.startswith("client acme: its policy does not verify") for w in admin.reports.status().warnings)
    finally:
        with admin.store.transaction() as s:
            s.execute(update(m.ClientPolicy).where(m.ClientPolicy.client_id == acme).values(exclusive=original))
    assert not any("client acme:" in w for w in admin.reports.status().warnings)
