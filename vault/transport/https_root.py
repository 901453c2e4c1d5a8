"""The root rotation over HTTPS: ``RootRotationKeyholder``'s transport on the team server.

``HttpsRootTransport`` has the method of ``InProcessRootTransport`` (``root_rotation.py``), so the
keyholder runs unchanged on it; the seal's hands are used outside the server's unit instead of inside
it (docs/server.md §4 rule 2, the values ``authority/root_draft_values.py``):

1. ``keys.root_draft`` answers the ``RootDraft`` the seal verifies and makes the new bundle for (a
   refusal sends nothing more);
2. ``keys.root_page`` answers the pages of clients in id order, each verified and re-sealed by the seal
   here; a page must start after the one before (a server that hands a client twice or walks back is
   refused: the walk ends);
3. ``keys.rotate_root`` commits the plan and every page's answer under their digests: the server stores
   them only if nothing changed since (409 otherwise: drafted again by the caller) and they pass its
   checks, in one unit with the ``root-key-rotate`` event.

A rotation inside another unit of work (an admin's removal in-process) is not served here.
"""

from __future__ import annotations

from typing import Any

from vault.authority.root_draft_values import RootCommit, RootDrafted, RootPageCommit, RootPageDrafted, RootPageRequest
from vault.authority.root_rotation_requests import RootRotated, RootRotateRequest
from vault.errors import UntrustedRecord
from vault.transport.https_calls import Calls, answer_of, not_served


class HttpsRootTransport:
    """The root rotation through a team server (module docstring)."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsRootTransport()"

    def rotate_root(self, request: RootRotateRequest, seal: Any, unit: Any = None) -> RootRotated:
        if unit is not None:
            raise not_served("a root rotation inside another change")
        drafted = answer_of(self.https, "keys.root_draft", request, RootDrafted)
        plan = seal.plan(drafted.draft)  # verified, then made on this machine; a refusal sends nothing
        pages: list[RootPageCommit] = []
        after = 0
        while True:
            asked = RootPageRequest(request.caller, request.org_pin, after)
            page = answer_of(self.https, "keys.root_page", asked, RootPageDrafted)
            if page.page is None:
                break
            ids = [client_id for client_id, _ in page.page.clients]
            if not ids or ids != sorted(set(ids)) or ids[0] <= after:
                raise UntrustedRecord("the server's page of clients is not the one after the page before")
            pages.append(RootPageCommit(page.digest, seal.reseal(page.page)))  # verified and re-sealed here
            after = ids[-1]
        return answer_of(self.https, "keys.rotate_root", RootCommit.of(request, drafted.digest, plan, tuple(pages)),
                         RootRotated)  # fmt: skip
