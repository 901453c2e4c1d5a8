"""The in-process transport of the subjects' requests (``inprocess.py`` is the checkout's).

``InProcessSubjectTransport(authority)`` hands a search request to the subjects'
authority and returns its answer: no copy, no serialisation. ``seal`` is the keyholder's
``SubjectSeal`` (vault/authority/subjects.py), the in-process seam: the search runs inside
the authority's unit of work, so that its event records what this search found. The
team-server issue replaces it with a signed request.
"""

from __future__ import annotations

from vault.authority.subjects import SubjectAuthority, SubjectRequest, SubjectRows, SubjectSeal


class InProcessSubjectTransport:
    """Calls the subjects' authority directly."""

    def __init__(self, authority: SubjectAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessSubjectTransport()"

    def search(self, request: SubjectRequest, seal: SubjectSeal) -> SubjectRows:
        return self.authority.search(request, seal)
