"""An admin's policy change over HTTPS: ``PolicyKeyholder``'s transport on the team server.

``HttpsPolicyWriteTransport.write(request, seal)`` is what ``PolicyKeyholder.set`` calls
in-process on ``InProcessPolicyTransport``; the seal's hands are used outside the server's unit
instead of inside it (docs/server.md §4 rule 2, the values ``authority/policy_draft_values.py``):

1. ``policies.set_draft``: the client named by the id the keyholder verified and by its slug tag;
   the server answers the ``PolicyRows`` the in-process seal is shown, and its digest;
2. the seal verifies that draft (the caller's own row, the client asked for, the policy that
   applies now) and signs the new policy over it (a refusal sends nothing more);
3. the event's details (what changed) are sealed here to a fresh request id under the client's
   current audit key (``DetailSealer``: the keyholder's, from the client's verified context);
4. ``policies.set``: the commit under that request id; the server checks the signature under the
   admin's certified key, stores and appends the format-3 ``policy-set`` event in one unit, and
   answers the stored policy, which the keyholder checks as it checks the in-process answer.

A stale draft (409 ``stale-draft``: the stored policy changed in between) writes nothing; the
seal signs once per request, so the caller runs ``policy set`` again. Reads are
``HttpsPolicyTransport``'s; ``adopt`` is not served (``not_served``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Protocol

from vault.authority.policy_draft_values import PolicyCommit, PolicyDraft, PolicySetDraftRequest
from vault.authority.policy_requests import POLICY_SET, SET, PolicyRequest, PolicyRows, SignedPolicy
from vault.errors import UntrustedRecord
from vault.transport.https_calls import Calls, answer_of, not_served
from vault.transport.https_policies import HttpsPolicyTransport
from vault.wire import codec

# (client id, request id, action, details JSON) -> (audit-key generation, sealed details)
DetailSealer = Callable[[int, bytes, str, str], tuple[int, bytes]]


class PolicyWriteSeal(Protocol):
    """The policies keyholder's seal, as this transport uses it (``keyholder/policies.py``)."""

    def sign(self, draft: PolicyRows) -> list[SignedPolicy]: ...


class HttpsPolicyWriteTransport(HttpsPolicyTransport):
    """``policies.get``/``unsigned`` and an admin's ``policies.set`` through a team server."""

    def __init__(self, https: Calls, slug_tags: Callable[[int], bytes], seal_details: DetailSealer) -> None:
        super().__init__(https)
        self.slug_tags, self.seal_details = slug_tags, seal_details

    def __repr__(self) -> str:
        return "HttpsPolicyWriteTransport()"

    def write(self, request: PolicyRequest, seal: PolicyWriteSeal) -> PolicyRows:
        if request.action != SET or request.client_id is None:
            raise not_served(f"a policy change of action {request.action!r}")
        client_id = request.client_id
        slug_tag = self.slug_tags(client_id)
        asked = PolicySetDraftRequest(request.caller, slug_tag, client_id, request.org_pin)
        draft = answer_of(self.https, "policies.set_draft", asked, PolicyDraft)
        signed = seal.sign(draft.rows)  # the draft verified first: a refusal sends nothing more
        if len(signed) != 1 or signed[0].client_id != client_id:
            raise UntrustedRecord("the keyholder signed another policy than the one asked for")
        request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        version, blob = self.seal_details(client_id, request_id, POLICY_SET, signed[0].details_json)
        commit = PolicyCommit(request.caller, slug_tag, client_id, request.org_pin, signed[0].row, version, blob,
                              draft.digest)  # fmt: skip
        answer = self.https.call("policies.set", commit, request_id)
        if not isinstance(answer, PolicyRows):
            raise UntrustedRecord("the server's answer is not a policies.set answer")
        return answer
