"""An admin's sweep of expired grants over HTTPS: ``GrantSweepKeyholder``'s transport on the team server.

``HttpsSweepTransport.sweep`` has the signature of the in-process transport's (``grants.py``) and
uses the seal's hands outside the server's unit (docs/server.md §4 rule 2;
``authority/grant_sweep_drafts.py``): ``grants.sweep_draft`` answers the draft (with no ledger when
nothing is past its end: answered as it is, nothing signed); the seal verifies it and signs the
revocations; ``grants.sweep`` commits them, dated at the draft's time, under its digest (409 if the
grants or copies changed since). The answer is checked by the keyholder as in-process.
"""

from __future__ import annotations

from typing import Any

from vault.authority.grant_requests import SweepRequest, SweepRows
from vault.authority.grant_sweep_values import SweepCommit, SweepDrafted
from vault.transport.https_calls import Calls, answer_of


class HttpsSweepTransport:
    """``grants.maintain`` through a team server (module docstring)."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsSweepTransport()"

    def sweep(self, request: SweepRequest, seal: Any) -> SweepRows:
        drafted = answer_of(self.https, "grants.sweep_draft", request, SweepDrafted)
        draft = drafted.draft
        if not draft.ledgers:
            return draft  # nothing past its end: nothing to sign, nothing written
        signed = seal.sign(draft)  # verified, then signed on this machine; a refusal sends nothing
        commit = SweepCommit(request.caller, request.org_pin, request.action, draft.revoked_at, drafted.digest, signed)
        return answer_of(self.https, "grants.sweep", commit, SweepRows)
