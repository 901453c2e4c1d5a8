"""The engineers' keyholder against an authority that lies.

The insider here is a compromised authority (or a DBA editing rows between the read and
the keyholder's check): it shows the keyholder drafts and answers it changed. The real
authority runs underneath (a ``TamperingTransport`` wraps the in-process one), so a
refusal must leave the database as it was: no invitation, enrolment or certificate
written, no event appended, and nothing signed or unsealed that the tampered value asked
for. One vault per module and engine (each test acts on engineers of its own names).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from vault import Vault
from vault.authority.engineer_requests import EngineerAnswer, EngineerKeyRow, Identity
from vault.crypto import sealing, signing
from vault.crypto.keyrecord import FLOOR
from vault.crypto.labels import LABEL_INVITE, LABEL_SIG_ENGINEER, LABEL_SIG_INVITE
from vault.errors import DecryptionFailed, IntegrityError, Locked, UntrustedRecord, WrongPassphrase
from vault.records import PendingConfirmation
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "keyholder test admin passphrase"
_names = (f"kh{n}" for n in itertools.count())
Tamper = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


class TamperingSeal:
    """Hands the keyholder's seal a changed draft (what a lying authority shows it)."""

    def __init__(self, real: Any, tamper: Tamper) -> None:
        self.real, self.tamper = real, tamper

    @property
    def engineer_id(self) -> Any:
        return self.real.engineer_id

    def event_seed(self) -> bytes:
        return bytes(self.real.event_seed())

    def sign_invitation(self, draft: Any) -> Any:
        return self.real.sign_invitation(self.tamper(draft))

    def enrol(self, draft: Any) -> Any:
        return self.real.enrol(self.tamper(draft))

    def certify(self, draft: Any) -> Any:
        return self.real.certify(self.tamper(draft))

    def relock(self, draft: Any) -> Any:
        return self.real.relock(self.tamper(draft))

    def rekey(self, draft: Any) -> Any:
        return self.real.rekey(self.tamper(draft))

    def remove(self, draft: Any) -> Any:
        return self.real.remove(self.tamper(draft))


class TamperingTransport:
    """The real in-process transport, with the drafts and the answers changed on the way."""

    def __init__(self, real: Any, draft: Tamper = _same, answer: Tamper = _same) -> None:
        self.real, self.draft, self.answer = real, draft, answer

    def _seal(self, seal: Any) -> Any:
        return None if seal is None else TamperingSeal(seal, self.draft)

    def invite(self, request: Any, seal: Any) -> EngineerAnswer:
        return self.answer(self.real.invite(request, self._seal(seal)))

    def enroll(self, request: Any, seal: Any) -> EngineerAnswer:
        return self.answer(self.real.enroll(request, self._seal(seal)))

    def confirm(self, request: Any, seal: Any) -> EngineerAnswer:
        return self.answer(self.real.confirm(request, self._seal(seal)))

    def list(self, request: Any) -> EngineerAnswer:
        return self.answer(self.real.list(request))

    def change_passphrase(self, request: Any, seal: Any) -> EngineerAnswer:
        return self.answer(self.real.change_passphrase(request, self._seal(seal)))

    def key_record(self, request: Any) -> Any:
        return self.answer(self.real.key_record(request))

    def unlock_failed(self, request: Any) -> int:
        return int(self.real.unlock_failed(request))

    def unlock(self, request: Any) -> EngineerAnswer:
        return self.answer(self.real.unlock(request))

    def rotate(self, request: Any, seal: Any) -> EngineerAnswer:
        return self.answer(self.real.rotate(request, self._seal(seal)))

    def remove(self, request: Any, seal: Any) -> Any:
        return self.answer(self.real.remove(request, self._seal(seal)))


@dataclasses.dataclass
class Scene:
    url: str
    admin: Vault
    clock: Callable[[], dt.datetime]

    def open(self, name: str) -> Vault:
        return Vault.open(self.url, engineer=name, clock=self.clock, kdf_params=FLOOR, sessions=MemorySessionStore())

    def tamper(self, vault: Vault, *, draft: Tamper = _same, answer: Tamper = _same) -> None:
        keyholder = vault.engineers._engineer_keyholder()
        real = keyholder.transport
        while isinstance(real, TamperingTransport):
            real = real.real
        keyholder.transport = TamperingTransport(real, draft, answer)

    def untamper(self, vault: Vault) -> None:
        keyholder = vault.engineers._engineer_keyholder()
        while isinstance(keyholder.transport, TamperingTransport):
            keyholder.transport = keyholder.transport.real

    def enrolled(self, role: str = "engineer") -> tuple[str, str]:
        """A new engineer invited and enrolled honestly: (name, the fingerprint they read out)."""
        name = next(_names)
        code = self.admin.engineers.invite(name, role=role)
        mine = self.open(name)
        fingerprint = mine.engineers.enroll(name, code, f"pass of {name}")
        mine.close()
        return name, fingerprint

    def row(self, name: str) -> tuple[Any, ...] | None:
        with self.admin.store.transaction() as s:
            found = s.execute(
                select(
                    m.Engineer.status,
                    m.Engineer.role,
                    m.Engineer.sealing_public,
                    m.Engineer.certificate,
                    m.Engineer.invite_signature,
                ).where(m.Engineer.name == name)
            ).first()
            return None if found is None else tuple(found)

    def head(self) -> int:
        with self.admin.store.transaction() as s:
            return int(s.scalar(select(m.AuditHead.seq)) or 0)


@pytest.fixture(scope="module")
def scene(module_db_url: str) -> Iterator[Scene]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def clock() -> dt.datetime:
        return now

    admin, _ = Vault.create(module_db_url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FLOOR)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    yield Scene(module_db_url, admin, clock)
    admin.close()


@pytest.fixture(autouse=True)
def honest_again(scene: Scene) -> Iterator[None]:
    yield
    scene.untamper(scene.admin)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """The certificates and invitations signed, and the invite secrets unsealed, while the test runs."""
    seen: dict[str, list[Any]] = {"certificates": [], "invitations": [], "invite secrets": []}
    real_sign, real_open = signing.SigningKey.sign, sealing.open_sealed

    def sign(self: Any, label: bytes, *fields: Any) -> bytes:
        if label == LABEL_SIG_ENGINEER:
            seen["certificates"].append(fields)
        elif label == LABEL_SIG_INVITE:
            seen["invitations"].append(fields)
        return real_sign(self, label, *fields)

    def open_sealed(key: Any, version: int, blob: bytes, context: Any) -> bytes:
        if context[0] == LABEL_INVITE:
            seen["invite secrets"].append(context)
        return real_open(key, version, blob, context)

    monkeypatch.setattr(signing.SigningKey, "sign", sign)
    monkeypatch.setattr(sealing, "open_sealed", open_sealed)
    return seen


def _attacker_keys() -> tuple[bytes, bytes]:
    return sealing.KeyPair.generate().public, signing.SigningKey.generate().public


def _flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


# -- the honest path through the tampering transport -------------------------------------------


def test_the_untampered_path_invites_enrols_and_confirms(scene: Scene, made: dict[str, list[Any]]) -> None:
    scene.tamper(scene.admin)
    name, fingerprint = scene.enrolled()
    info = scene.admin.engineers.confirm(name, fingerprint)
    assert (info.status, info.fingerprint) == ("active", fingerprint)
    assert len(made["certificates"]) == 1 and len(made["invite secrets"]) == 1


# -- confirm: only the keys whose fingerprint a person compared ------------------------------------


def test_a_pending_engineers_keys_swapped_in_the_draft_are_not_certified(
    scene: Scene, made: dict[str, list[Any]]
) -> None:
    """The authority shows the admin an attacker's keys in place of the enrolled ones: the
    admin compared the genuine fingerprint, so nothing is certified, unsealed or written."""
    name, fingerprint = scene.enrolled()
    before, head = scene.row(name), scene.head()
    sealing_public, signing_public = _attacker_keys()

    def swap(draft: Any) -> Any:
        row = draft.engineer._replace(sealing_public=sealing_public, signing_public=signing_public)
        return dataclasses.replace(draft, engineer=row)

    scene.tamper(scene.admin, draft=swap)
    with pytest.raises(UntrustedRecord, match="fingerprint does not match"):
        scene.admin.engineers.confirm(name, fingerprint)
    assert made["certificates"] == [] and made["invite secrets"] == []
    assert scene.row(name) == before and before is not None and before[0] == "enrolled"
    assert scene.head() == head


def test_the_attackers_fingerprint_typed_by_the_admin_is_still_not_certified(
    scene: Scene, made: dict[str, list[Any]]
) -> None:
    """Even if the admin was talked into the attacker's fingerprint, keys not made with the
    one-time code (its MAC) are refused: nothing certified, nothing written."""
    name, _ = scene.enrolled()
    before = scene.row(name)
    sealing_public, signing_public = _attacker_keys()

    def swap(draft: Any) -> Any:
        row = draft.engineer._replace(sealing_public=sealing_public, signing_public=signing_public)
        return dataclasses.replace(draft, engineer=row)

    scene.tamper(scene.admin, draft=swap)
    with pytest.raises(UntrustedRecord, match="not made with their enrolment code"):
        scene.admin.engineers.confirm(name, signing.engineer_fingerprint(sealing_public, signing_public))
    assert made["certificates"] == [] and scene.row(name) == before


def test_a_confirmation_answered_with_other_keys_is_refused(scene: Scene) -> None:
    """The authority claims it certified keys other than the compared ones."""
    name, fingerprint = scene.enrolled()
    sealing_public, _ = _attacker_keys()

    def swap(answer: EngineerAnswer) -> EngineerAnswer:
        assert answer.engineer is not None
        return dataclasses.replace(answer, engineer=answer.engineer._replace(sealing_public=sealing_public))

    scene.tamper(scene.admin, answer=swap)
    with pytest.raises(UntrustedRecord, match="other keys"):
        scene.admin.engineers.confirm(name, fingerprint)


def test_a_confirmation_answered_with_a_forged_certificate_is_refused(scene: Scene) -> None:
    name, fingerprint = scene.enrolled()

    def forge(answer: EngineerAnswer) -> EngineerAnswer:
        assert answer.engineer is not None and answer.engineer.certificate is not None
        row = answer.engineer._replace(certificate=_flip(answer.engineer.certificate))
        return dataclasses.replace(answer, engineer=row)

    scene.tamper(scene.admin, answer=forge)
    with pytest.raises(UntrustedRecord):
        scene.admin.engineers.confirm(name, fingerprint)


CONFIRM_DRAFTS: dict[str, Tamper] = {
    "role raised to admin": lambda d: dataclasses.replace(d, engineer=d.engineer._replace(role="admin")),
    "invitation signed by a non-admin": lambda d: dataclasses.replace(
        d, invitation=dataclasses.replace(d.invitation, signer=d.invitation.signer._replace(role="engineer"))
    ),
    "invitation signature forged": lambda d: dataclasses.replace(
        d, invitation=dataclasses.replace(d.invitation, signature=_flip(d.invitation.signature))
    ),
    "another engineer's name": lambda d: dataclasses.replace(d, engineer=d.engineer._replace(name="mallory")),
}


@pytest.mark.parametrize("case", list(CONFIRM_DRAFTS))
def test_a_tampered_confirmation_draft_is_refused_and_writes_nothing(
    scene: Scene, made: dict[str, list[Any]], case: str
) -> None:
    name, fingerprint = scene.enrolled()
    before, head = scene.row(name), scene.head()
    scene.tamper(scene.admin, draft=CONFIRM_DRAFTS[case])
    with pytest.raises(UntrustedRecord):
        scene.admin.engineers.confirm(name, fingerprint)
    assert made["certificates"] == [] and made["invite secrets"] == []
    assert scene.row(name) == before and scene.head() == head


def test_a_pending_confirmation_showing_a_raised_role_is_refused(scene: Scene) -> None:
    name, _ = scene.enrolled()

    def raise_role(answer: EngineerAnswer) -> EngineerAnswer:
        assert answer.pending is not None
        pending = answer.pending
        raised = dataclasses.replace(pending, engineer=pending.engineer._replace(role="admin"))
        return dataclasses.replace(answer, pending=raised)

    scene.tamper(scene.admin, answer=raise_role)
    with pytest.raises(UntrustedRecord, match="invitation"):
        scene.admin.engineers.pending_confirmation(name)


def test_a_pending_confirmation_verifies_and_shows_the_signed_role(scene: Scene) -> None:
    name, fingerprint = scene.enrolled(role="admin")
    scene.tamper(scene.admin)
    shown = scene.admin.engineers.pending_confirmation(name)
    assert isinstance(shown, PendingConfirmation)
    assert (shown.name, shown.role, shown.fingerprint, shown.invited_by) == (name, "admin", fingerprint, ADMIN)


def test_a_swapped_root_copy_is_not_opened_and_nothing_is_written(scene: Scene) -> None:
    name, fingerprint = scene.enrolled()
    before = scene.row(name)
    scene.admin.keyholder.root = None  # not cached: the copy shown must open

    def swap(draft: Any) -> Any:
        return dataclasses.replace(draft, root=dataclasses.replace(draft.root, sealed=_flip(draft.root.sealed)))

    scene.tamper(scene.admin, draft=swap)
    with pytest.raises(DecryptionFailed):
        scene.admin.engineers.confirm(name, fingerprint)
    assert scene.row(name) == before


# -- invite ---------------------------------------------------------------------------------------

INVITE_DRAFTS: dict[str, Tamper] = {
    "the role raised": lambda d: dataclasses.replace(d, role="admin"),
    "another name": lambda d: dataclasses.replace(d, name="mallory"),
    "a later expiry": lambda d: dataclasses.replace(d, expires_at=d.expires_at + 86_400 * 365),
    "the recovery key swapped for the attacker's": lambda d: dataclasses.replace(
        d, root=dataclasses.replace(d.root, recovery_public=sealing.KeyPair.generate().public)
    ),
    "a previous key record not certified": lambda d: dataclasses.replace(
        d, previous_key=EngineerKeyRow(d.engineer_id, 3, b"\x01" * 32, b"\x02" * 32, 1_700_000_000, b"\x00" * 64)
    ),
    "a previous key record of another engineer": lambda d: dataclasses.replace(
        d, previous_key=EngineerKeyRow(d.engineer_id + 1, 1, b"\x01" * 32, b"\x02" * 32, 1_700_000_000, None)
    ),
}


@pytest.mark.parametrize("case", list(INVITE_DRAFTS))
def test_a_tampered_invitation_draft_is_not_signed_and_nothing_is_written(
    scene: Scene, made: dict[str, list[Any]], case: str
) -> None:
    """A DBA or compromised authority rewrites what the admin is about to sign: a raised
    role, a longer life, a recovery key the attacker holds (to open the invite secret)."""
    name, head = next(_names), scene.head()
    scene.tamper(scene.admin, draft=INVITE_DRAFTS[case])
    with pytest.raises(UntrustedRecord):
        scene.admin.engineers.invite(name)
    assert made["invitations"] == []
    assert scene.row(name) is None and scene.head() == head


def test_an_invitation_answered_for_another_engineer_gives_no_code(scene: Scene) -> None:
    name = next(_names)
    scene.tamper(scene.admin, answer=lambda a: dataclasses.replace(a, engineer=a.engineer._replace(name="mallory")))
    with pytest.raises(UntrustedRecord):
        scene.admin.engineers.invite(name)


# -- enrol ----------------------------------------------------------------------------------------

ENROL_DRAFTS: dict[str, Tamper] = {
    "the role raised": lambda d: dataclasses.replace(d, engineer=d.engineer._replace(role="admin")),
    "the expiry extended": lambda d: dataclasses.replace(
        d, invitation=dataclasses.replace(d.invitation, expires_at=d.invitation.expires_at + 86_400)
    ),
    "a signer who is not an admin": lambda d: dataclasses.replace(
        d, invitation=dataclasses.replace(d.invitation, signer=d.invitation.signer._replace(role="engineer"))
    ),
    "the signer's certificate forged": lambda d: dataclasses.replace(
        d,
        invitation=dataclasses.replace(
            d.invitation, signer=d.invitation.signer._replace(certificate=_flip(d.invitation.signer.certificate))
        ),
    ),
    "no signature": lambda d: dataclasses.replace(d, invitation=dataclasses.replace(d.invitation, signature=None)),
}


@pytest.mark.parametrize("case", list(ENROL_DRAFTS))
def test_an_enrolment_shown_a_rewritten_invitation_makes_no_keys(scene: Scene, case: str) -> None:
    name = next(_names)
    code = scene.admin.engineers.invite(name)
    before, head = scene.row(name), scene.head()
    mine = scene.open(name)
    scene.tamper(mine, draft=ENROL_DRAFTS[case])
    with pytest.raises(UntrustedRecord, match="not trusted"):
        mine.engineers.enroll(name, code, "pass")
    mine.close()
    assert scene.row(name) == before and before is not None and before[0] == "invited"
    assert scene.head() == head


def test_an_enrolment_answered_with_other_keys_gives_no_fingerprint(scene: Scene) -> None:
    name = next(_names)
    code = scene.admin.engineers.invite(name)
    mine = scene.open(name)
    sealing_public, _ = _attacker_keys()
    scene.tamper(
        mine, answer=lambda a: dataclasses.replace(a, engineer=a.engineer._replace(sealing_public=sealing_public))
    )
    with pytest.raises(UntrustedRecord, match="other keys"):
        mine.engineers.enroll(name, code, "pass")
    mine.close()


# -- list and whoami ------------------------------------------------------------------------------


def _identity(change: Callable[[Identity], Identity]) -> Tamper:
    return lambda answer: dataclasses.replace(answer, identity=change(answer.identity))


CALLER_FORGERIES: dict[str, tuple[Tamper, type[Exception]]] = {
    "the caller's certificate forged": (
        _identity(lambda i: dataclasses.replace(i, me=i.me._replace(certificate=_flip(i.me.certificate)))),
        UntrustedRecord,
    ),
    "another engineer's row": (_identity(lambda i: dataclasses.replace(i, me=i.me._replace(id=i.me.id + 1))), Locked),
    "another vault": (_identity(lambda i: dataclasses.replace(i, vault_id=b"\x00" * 16)), UntrustedRecord),
    "an organisation key off the pinned chain": (
        _identity(lambda i: dataclasses.replace(i, org_signing_public=b"\x07" * 32)),
        UntrustedRecord,
    ),
}


@pytest.mark.parametrize("operation", ["list", "whoami"])
@pytest.mark.parametrize("case", list(CALLER_FORGERIES))
def test_a_forged_caller_row_is_refused(scene: Scene, operation: str, case: str) -> None:
    tamper, error = CALLER_FORGERIES[case]
    scene.tamper(scene.admin, answer=tamper)
    with pytest.raises(error):
        getattr(scene.admin.engineers, operation)()


def test_the_list_and_whoami_through_the_keyholder(scene: Scene) -> None:
    scene.tamper(scene.admin)
    assert ADMIN in [info.name for info in scene.admin.engineers.list()]
    assert scene.admin.engineers.whoami().engineer == ADMIN


# -- passphrase change ------------------------------------------------------------------------------


def _record(scene: Scene, name: str) -> bytes | None:
    with scene.admin.store.transaction() as s:
        return s.scalar(select(m.Engineer.key_record).where(m.Engineer.name == name))


def test_a_key_record_swapped_for_another_engineers_is_not_relocked(scene: Scene) -> None:
    """The authority hands back another engineer's record, hoping it is re-locked under a
    passphrase the attacker chose: it is bound to that engineer's id, so it does not open."""
    other, _ = scene.enrolled()
    theirs, mine, head = _record(scene, other), _record(scene, ADMIN), scene.head()
    assert theirs is not None
    scene.tamper(scene.admin, draft=lambda d: dataclasses.replace(d, key_record=theirs))
    with pytest.raises((WrongPassphrase, DecryptionFailed)):
        scene.admin.engineers.change_passphrase(ADMIN_PASS, "the attacker's choice")
    assert _record(scene, ADMIN) == mine and _record(scene, other) == theirs and scene.head() == head


def test_a_passphrase_change_answered_for_another_caller_is_refused(scene: Scene) -> None:
    scene.tamper(scene.admin, answer=_identity(lambda i: dataclasses.replace(i, me=i.me._replace(id=i.me.id + 1))))
    with pytest.raises(UntrustedRecord):
        scene.admin.engineers.change_passphrase(ADMIN_PASS, ADMIN_PASS)


# -- unlock ---------------------------------------------------------------------------------------


def _confirmed(scene: Scene) -> tuple[str, Vault]:
    """A confirmed engineer, and a fresh (locked) Vault of theirs."""
    name, fingerprint = scene.enrolled()
    scene.admin.engineers.confirm(name, fingerprint)
    return name, scene.open(name)


def _key_records(change: Callable[[Any], Any]) -> Tamper:
    """Change only the key-record answers (the unlock's own answer passes)."""
    return lambda answer: change(answer) if hasattr(answer, "key_record") else answer


def _events(scene: Scene, action: str) -> int:
    with scene.admin.store.transaction() as s:
        return len(s.scalars(select(m.AuditEvent.seq).where(m.AuditEvent.action == action)).all())


def test_a_key_record_answered_for_another_engineer_opens_no_session(scene: Scene) -> None:
    name, mine = _confirmed(scene)
    scene.tamper(mine, answer=_key_records(lambda r: dataclasses.replace(r, engineer=r.engineer._replace(name=ADMIN))))
    with pytest.raises(UntrustedRecord):
        mine.engineers.unlock(name, f"pass of {name}")
    assert mine.keyholder.session is None
    mine.close()


def test_another_engineers_record_handed_over_does_not_open_and_the_failure_is_recorded(scene: Scene) -> None:
    """The authority swaps in another engineer's record (bound to their id): it does not open."""
    name, mine = _confirmed(scene)
    theirs = _record(scene, ADMIN)
    failed = _events(scene, "unlock-failed")
    scene.tamper(mine, answer=_key_records(lambda r: dataclasses.replace(r, key_record=theirs)))
    with pytest.raises(WrongPassphrase):
        mine.engineers.unlock(name, f"pass of {name}")
    assert mine.keyholder.session is None and _events(scene, "unlock-failed") == failed + 1
    mine.close()


def test_an_organisation_key_the_pinned_chain_does_not_reach_is_refused_before_the_unlock_event(
    scene: Scene,
) -> None:
    """A compromised authority names an organisation key of its own (to certify keys it made)."""
    name, mine = _confirmed(scene)
    forged = signing.SigningKey.generate()
    unlocks = _events(scene, "unlock")
    scene.tamper(mine, answer=_key_records(lambda r: dataclasses.replace(r, org_signing_public=forged.public)))
    with pytest.raises(UntrustedRecord, match="organisation key"):
        mine.engineers.unlock(name, f"pass of {name}")
    assert _events(scene, "unlock") == unlocks
    mine.close()


def test_a_forged_link_of_the_organisation_key_chain_is_refused(scene: Scene) -> None:
    name, mine = _confirmed(scene)
    forged = signing.SigningKey.generate()

    def extend(rows: Any) -> Any:
        head = rows.org_keys[-1]
        link = dataclasses.replace(head, version=head.version + 1, public=forged.public, signature=b"\x00" * 64)
        return dataclasses.replace(rows, org_signing_public=forged.public, org_keys=(*rows.org_keys, link))

    scene.tamper(mine, answer=_key_records(extend))
    with pytest.raises(UntrustedRecord):
        mine.engineers.unlock(name, f"pass of {name}")
    assert _record(scene, name) is not None
    mine.close()


def test_a_sealing_key_swapped_in_the_callers_row_is_refused_before_the_unlock_event(scene: Scene) -> None:
    name, mine = _confirmed(scene)
    unlocks = _events(scene, "unlock")
    attacker, _ = _attacker_keys()
    scene.tamper(
        mine,
        answer=_key_records(lambda r: dataclasses.replace(r, engineer=r.engineer._replace(sealing_public=attacker))),
    )
    with pytest.raises(UntrustedRecord):  # the certificate covers the sealing key
        mine.engineers.unlock(name, f"pass of {name}")
    assert _events(scene, "unlock") == unlocks
    mine.close()


def test_the_untampered_unlock_through_the_keyholder(scene: Scene) -> None:
    name, mine = _confirmed(scene)
    scene.tamper(mine)
    assert mine.engineers.unlock(name, f"pass of {name}").engineer == name
    mine.close()


# -- rotate (re-key) ------------------------------------------------------------------------------


def _rekey_only(change: Callable[[Any], Any]) -> Tamper:
    """Change only the re-key draft (the invitation drafted after it passes)."""
    return lambda draft: change(draft) if hasattr(draft, "key_recorded") else draft


REKEY_DRAFTS: dict[str, Tamper] = {
    "the role raised (a DBA making an engineer an admin before the re-invitation)": _rekey_only(
        lambda d: dataclasses.replace(d, engineer=d.engineer._replace(role="admin"))
    ),
    "another engineer's row": _rekey_only(lambda d: dataclasses.replace(d, engineer=d.engineer._replace(name=ADMIN))),
    "the key record said to be missing (to have another certified)": _rekey_only(
        lambda d: dataclasses.replace(d, engineer=d.engineer._replace(signing_public=b"\x09" * 32), key_recorded=False)
    ),
}


@pytest.mark.parametrize("case", list(REKEY_DRAFTS))
def test_a_tampered_rekey_draft_destroys_nothing_and_signs_nothing(
    scene: Scene, made: dict[str, list[Any]], case: str
) -> None:
    name, mine = _confirmed(scene)
    mine.close()
    before, head = scene.row(name), scene.head()
    made["invitations"].clear()  # the one signed to set the scene
    scene.tamper(scene.admin, draft=REKEY_DRAFTS[case])
    with pytest.raises(UntrustedRecord):
        scene.admin.engineers.rotate(name)
    assert made["invitations"] == [] and scene.row(name) == before and scene.head() == head
    assert _record(scene, name) is not None


def test_a_rotation_answered_for_another_engineer_gives_no_code(scene: Scene) -> None:
    name, mine = _confirmed(scene)
    mine.close()
    scene.tamper(scene.admin, answer=lambda a: dataclasses.replace(a, engineer=a.engineer._replace(name="mallory")))
    with pytest.raises(UntrustedRecord):
        scene.admin.engineers.rotate(name)


def test_the_untampered_rotation_re_invites_with_the_certified_role(scene: Scene) -> None:
    name, mine = _confirmed(scene)
    mine.close()
    scene.tamper(scene.admin)
    code = scene.admin.engineers.rotate(name)
    again = scene.open(name)
    fingerprint = again.engineers.enroll(name, code, "new pass")
    again.close()
    assert scene.admin.engineers.confirm(name, fingerprint).role == "engineer"


# -- remove ---------------------------------------------------------------------------------------


def _granted_engineer(scene: Scene) -> str:
    """A confirmed engineer holding a grant for the module's client."""
    name, mine = _confirmed(scene)
    mine.close()
    if "acme" not in [info.slug for info in scene.admin.clients.list()]:
        scene.admin.clients.add("acme", "Acme Ltd")
    scene.admin.grants.grant(name, "acme")
    return name


def _live_grants(scene: Scene, name: str) -> int:
    with scene.admin.store.transaction() as s:
        engineer_id = s.scalar(select(m.Engineer.id).where(m.Engineer.name == name))
        return len(
            s.scalars(select(m.Grant.id).where(m.Grant.engineer_id == engineer_id, m.Grant.revoked_at.is_(None))).all()
        )


def _grant_changed(change: Callable[[Any], Any]) -> Tamper:
    """Change the removed engineer's grant rows in the removal's answer."""
    return lambda a: dataclasses.replace(a, grants=tuple(change(g) for g in a.grants)) if hasattr(a, "grants") else a


REMOVAL_ANSWERS: dict[str, Tamper] = {
    "a grant said live": _grant_changed(lambda g: g._replace(revoked_at=None, revocation=None)),
    "a revocation not the one signed": _grant_changed(lambda g: g._replace(revocation=_flip(g.revocation))),
    "a grant left out": lambda a: dataclasses.replace(a, grants=()),
    "the engineer still active": lambda a: dataclasses.replace(a, engineer=a.engineer._replace(status="active")),
}


@pytest.mark.parametrize("case", list(REMOVAL_ANSWERS))
def test_an_authority_claiming_a_removal_done_while_a_grant_remains_is_refused(scene: Scene, case: str) -> None:
    """A compromised authority answers "removed" but its rows say otherwise: the admin is told."""
    name = _granted_engineer(scene)
    scene.tamper(scene.admin, answer=REMOVAL_ANSWERS[case])
    with pytest.raises(IntegrityError):
        scene.admin.engineers.remove(name)


REMOVAL_DRAFTS: dict[str, Tamper] = {
    "another engineer's grant shown for revocation": lambda d: dataclasses.replace(
        d, grants=tuple(g._replace(engineer_id=g.engineer_id + 1) for g in d.grants)
    ),
    "another engineer to remove": lambda d: dataclasses.replace(d, engineer=d.engineer._replace(name=ADMIN)),
    "a revocation time of last year": lambda d: dataclasses.replace(d, revoked_at=d.revoked_at - 86_400 * 365),
}


@pytest.mark.parametrize("case", list(REMOVAL_DRAFTS))
def test_a_tampered_removal_draft_revokes_nothing_and_writes_nothing(scene: Scene, case: str) -> None:
    name = _granted_engineer(scene)
    before, head = scene.row(name), scene.head()
    scene.tamper(scene.admin, draft=REMOVAL_DRAFTS[case])
    with pytest.raises(UntrustedRecord):
        scene.admin.engineers.remove(name)
    assert scene.row(name) == before and scene.head() == head and _live_grants(scene, name) == 1


def test_the_untampered_removal_revokes_every_grant(scene: Scene) -> None:
    name = _granted_engineer(scene)
    scene.tamper(scene.admin)
    scene.admin.engineers.remove(name)
    row = scene.row(name)
    assert row is not None and row[0] == "disabled" and _live_grants(scene, name) == 0


def test_a_leaving_engineers_signing_key_swapped_by_a_dba_is_not_certified(
    scene: Scene, made: dict[str, list[Any]]
) -> None:
    """A DBA writes their own signing key into the leaving engineer's row just before the
    removal: re-issuing that row's certificate as disabled would certify the DBA's key (events
    they forge then verify as the removed engineer's). The row's current certificate does not
    verify: refused, nothing certified, nothing revoked, no event."""
    name = _granted_engineer(scene)
    _, attacker = _attacker_keys()
    with scene.admin.store.transaction() as s:
        s.execute(update(m.Engineer).where(m.Engineer.name == name).values(signing_public=attacker))
    before, head = scene.row(name), scene.head()
    with pytest.raises(UntrustedRecord):
        scene.admin.engineers.remove(name)
    assert not [fields for fields in made["certificates"] if attacker in fields]
    assert scene.row(name) == before and scene.head() == head and _live_grants(scene, name) == 1


def test_a_draft_saying_not_to_recertify_an_active_engineer_still_re_issues_the_certificate(
    scene: Scene, made: dict[str, list[Any]]
) -> None:
    """Whether the certificate is re-issued is read from the row the keyholder verified, not
    from the draft's flag: an active engineer's row is re-certified as disabled."""
    name = _granted_engineer(scene)
    scene.tamper(scene.admin, draft=lambda d: dataclasses.replace(d, recertify=False) if hasattr(d, "recertify") else d)
    scene.admin.engineers.remove(name)
    assert [fields for fields in made["certificates"] if name in fields and "disabled" in fields]

