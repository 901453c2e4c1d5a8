"""The adoption of the records an engineer signed, in a re-key through the team server: draft and answer.

In-process, an engineer's re-key adopts inside the authority's unit (``Offboarding.adopt_signatures``,
service/offboarding.py; the policies and settings through ``DepartingPolicyAuthority``): the acting
admin re-signs each client-key version, grant, policy and settings record the engineer signed that
verifies, and sets aside the rest. Through the server the re-key's draft (``RekeyDraftRows.adoption``)
shows the admin's machine, as ids, public keys, signatures and ciphertext:

* ``client_keys``: each live client-key version whose record names the engineer as its signer, with
  the engineer's row as that signer and its copy sealed to the recovery key;
* ``grants``: each unrevoked grant the engineer signed, with its grantee's row;
* ``policies``: the ``DepartingDraft`` the in-process adoption is shown (policies and settings).

The admin's machine (``keyholder/adoption.py``) answers ``AdoptionMade`` in the commit
(``RekeyCommit.adopted``): a new signature for each record that verifies (a client key's only if its
recovery copy opens to its signed fingerprint), and the client keys and grants it sets aside. The
server checks that the two cover exactly what it drafted and each signature under the caller's
certified key before it writes (``authority/adoption_drafts.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.authority.policy_adoption import Adopted, DepartingDraft
from vault.authority.requests import SealedClientKey
from vault.storage.rows import EngineerRow, GrantRow

ADOPTION_REFUSED = "adoption-refused"  # the event naming the records set aside (as in-process)


@dataclass(frozen=True)
class AdoptedGrant:
    """A grant the engineer signed, and the row of its grantee (whose sealing key it covers)."""

    grant: GrantRow
    engineer: EngineerRow


@dataclass(frozen=True, repr=False)
class AdoptionDraft:
    """What the engineer signed (module docstring)."""

    client_keys: tuple[SealedClientKey, ...]
    grants: tuple[AdoptedGrant, ...]
    policies: DepartingDraft

    def __repr__(self) -> str:
        return f"AdoptionDraft(client_keys={len(self.client_keys)}, grants={len(self.grants)})"


@dataclass(frozen=True, repr=False)
class AdoptionMade:
    """The admin's answer: ``(client id, version, signature)`` per client-key version adopted, ``(grant
    id, signature)`` per grant adopted, the policies' and settings' ``Adopted``, and what is set aside."""

    client_keys: tuple[tuple[int, int, bytes], ...]
    grants: tuple[tuple[int, bytes], ...]
    policies: Adopted
    skipped_keys: tuple[tuple[int, int], ...]
    skipped_grants: tuple[int, ...]

    def __repr__(self) -> str:
        return f"AdoptionMade(client_keys={len(self.client_keys)}, grants={len(self.grants)})"
