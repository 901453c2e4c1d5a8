"""The in-process collaborators of the engineers' two halves.

Adapters over the Vault object's trust, journal and invitations, handed to the engineers'
authority (``vault/authority/engineers.py``) and joined to the keyholder
(``vault/keyholder/engineers.py``) by the in-process transport
(``vault/transport/engineers.py``): ``engineer_keyholder(engineers)`` builds the three.

``_Carry`` is the part of a confirmation not split yet: the grants a confirmation carries
over are chosen by the grant ledger and re-signed and re-sealed by ``Invitations`` inside
the authority's unit of work (it opens client keys: the team-server issue moves it to the
keyholder, with the grant rows as values).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from vault.authority.checkout_reads import ENGINEER_WIDTH, SEALED_KEY
from vault.authority.engineer_removal import EngineerRemovalAuthority
from vault.authority.engineer_requests import CarriedRow, CarryPlan, DroppedRow
from vault.authority.engineer_rotation import EngineerRotationAuthority
from vault.authority.engineers import EngineerAuthority
from vault.authority.requests import ClientKeyRow, SealedClientKey
from vault.crypto.blobs import blob_key_version
from vault.errors import UntrustedRecord
from vault.keyholder.engineers import EngineerKeyholder
from vault.service.rows import EngineerRecord
from vault.storage import models as m
from vault.storage import rows
from vault.storage.rows import EngineerRow
from vault.transport.engineers import InProcessEngineerTransport
from vault.transport.https_engineers import HttpsEngineerTransport

if TYPE_CHECKING:
    from vault.service.engineers import Engineers
    from vault.transport.https import HttpsTransport

_PLAN = "engineer-carry-plan"  # the plan made in this unit of work, kept for the carry (s.info)


class _Checks:
    """The authority's checks (signatures and public keys only), made by the Vault's trust."""

    def __init__(self, engineers: Engineers) -> None:
        self._trust = engineers.trust

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        self._trust.verify_certificate(s, row)


class _Recorder:
    """The Journal's append (its signature: the acting engineer's, or for an enrolment the
    enrolling keyholder's new key, lent in-process)."""

    def __init__(self, engineers: Engineers) -> None:
        self._journal = engineers.journal

    def append(
        self, s: Session, action: str, *, public: dict[str, Any], enrolment: Any = None, unsigned_by: int | None = None
    ) -> int:
        if unsigned_by is not None:
            actor = s.get(m.Engineer, unsigned_by)
            return self._journal.append(s, action, actor=actor, sign=False, public=public).seq
        if enrolment is None:
            return self._journal.append(s, action, public=public or None).seq
        actor = s.get(m.Engineer, enrolment.engineer_id)
        return self._journal.append(s, action, actor=actor, seed=enrolment.event_seed(), public=public).seq


class _Carry:
    """What a confirmation carries over, made by ``Invitations`` in the authority's unit of work."""

    def __init__(self, engineers: Engineers) -> None:
        self._invitations = engineers.invitations

    def plan(self, s: Session, engineer_id: int, root_version: int) -> CarryPlan:
        """The plan kept for the carry; answered as ids and ciphertext only (no slug opened here
        crosses), with each slug's client-key version sealed to the recovery key ``root_version``."""
        row = s.get(m.Engineer, engineer_id)
        assert row is not None
        plan = self._invitations.confirmation_plan(s, row)
        s.info[_PLAN] = (engineer_id, plan)
        blobs_of: dict[int, bytes | None] = {}

        def slug_blob(client_id: int) -> bytes | None:
            if client_id not in blobs_of:
                client = s.get(m.Client, client_id)
                blobs_of[client_id] = None if client is None else client.slug_blob
            return blobs_of[client_id]

        carried = []
        for grant, _ in plan.carried:
            blob = slug_blob(grant.client_id)
            assert blob is not None  # the plan carries only a grant whose slug opened
            carried.append(CarriedRow(grant.id, grant.client_id, blob, grant.until))
        dropped = []
        for info in plan.dropped:
            found = s.get(m.Grant, info.grant_id)
            assert found is not None
            dropped.append(DroppedRow(found.id, found.client_id, slug_blob(found.client_id), info.reason))
        keys = []
        conn = rows.connection(s)
        for client_id, blob in sorted(blobs_of.items()):
            if blob is None:
                continue
            params = {"client": client_id, "version": blob_key_version(blob), "kind": "recovery"}
            for r in SEALED_KEY.all(conn, {**params, "recipient": root_version})[:1]:
                signer = None if r[8] is None else EngineerRow._make(r[8 : 8 + ENGINEER_WIDTH])
                keys.append(SealedClientKey(ClientKeyRow(*r[:7]), signer, "recovery", root_version, r[7]))
        return CarryPlan(plan.signer.name, tuple(carried), tuple(dropped), tuple(keys))

    def carry(self, s: Session, engineer_id: int) -> None:
        kept = s.info.pop(_PLAN, None)
        row = s.get(m.Engineer, engineer_id)
        if kept is None or kept[0] != engineer_id or row is None:
            raise UntrustedRecord("no confirmation plan was made for this engineer in this unit of work")
        self._invitations.carry_grants(s, row, kept[1])


class _Adoption:
    """The records an engineer signed, re-signed by the acting admin (``Offboarding``), in the
    authority's unit of work (it opens client keys: in-process only)."""

    def __init__(self, engineers: Engineers) -> None:
        self._engineers = engineers

    def adopt(self, s: Session, engineer_id: int) -> None:
        row = s.get(m.Engineer, engineer_id)
        assert row is not None
        self._engineers.adopt_signatures(s, row)


class _RemovalSeams:
    """What a removal runs in its unit of work: the clients exposed (grant ledger, verified log)
    and the adoption (in-process; the policies and settings through their own request, in
    policyadmin.py), and the rotations: requests to the root rotation's and the client-key
    rotation's authorities through their keyholders (rootrotation.py, rotation.py), in this unit."""

    def __init__(self, engineers: Engineers) -> None:
        self._engineers = engineers

    def exposed(self, s: Session, engineer_id: int, log_verified: bool) -> set[int]:
        row = s.get(m.Engineer, engineer_id)
        assert row is not None
        return self._engineers.clients_exposed_to(s, row, log_verified=log_verified)

    def adopt(self, s: Session, engineer_id: int) -> None:
        _Adoption(self._engineers).adopt(s, engineer_id)

    def rotate_root(self, s: Session) -> None:
        self._engineers.root_rotator.rotate_root(s)

    def start_rotation(self, s: Session, client_id: int) -> int:
        client = s.get(m.Client, client_id)
        assert client is not None
        return self._engineers.rotation.start_client_rotation(s, client)


def engineer_keyholder(engineers: Engineers) -> EngineerKeyholder:
    """The engineers' keyholder of this Vault object, over an in-process transport to its authority."""
    core = engineers.core
    authority = EngineerAuthority(
        core.store, _Checks(engineers), _Recorder(engineers), _Carry(engineers), lambda: core.clock()
    )
    rotation = EngineerRotationAuthority(authority, _Adoption(engineers))
    removal = EngineerRemovalAuthority(authority, _RemovalSeams(engineers))
    return EngineerKeyholder(
        InProcessEngineerTransport(authority, rotation, removal),
        engineers.keys,
        lambda: core.clock(),
        lambda: core.kdf_params,
    )


def https_engineer_keyholder(engineers: Engineers, https: HttpsTransport) -> EngineerKeyholder:
    """The engineers' keyholder of this Vault object over a team server (``https``): ``list``
    through the server (its event appended there, in format 3); nothing else is served yet."""
    core = engineers.core
    return EngineerKeyholder(
        HttpsEngineerTransport(https), engineers.keys, lambda: core.clock(), lambda: core.kdf_params
    )
