"""``secret search``: find a secret by its name or non-sensitive metadata, without its client.

The labels and metadata are encrypted, so the search runs where the keys are: over the very
pages ``secret list`` reads (``SecretListKeyholder.listed``: an engineer's live grants, an
admin's every client, or the one client named), each secret verified and opened by the
listing's keyholder and handed here as it is opened. ``Matcher`` keeps a ``SearchMatch`` for
a secret whose name, username, host, URL, note or public custom field holds the query
(case-insensitively: both sides NFC-normalised and casefolded, a substring), and nothing of
the others; the password is never opened (it is another blob), and a sensitive field's value
is never compared (``hidden``: the secrets' own classification, passed in).

The query never leaves the caller's process: the authority (in-process, or the team server
answering ``secrets.list_page``) is asked for the listing and nothing else, so neither the
server nor the audit log can hold it. What goes on record is the listing the search read
(``secret-list``, as ``secret list`` appends it: the client named, or how many clients), since
a search shows its caller no more than that listing opens (docs/threat-model.md C109).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from vault.errors import InvalidInput
from vault.records import SearchMatch

MAX_QUERY = 200  # characters: a name, a host or an address is far shorter
HINT = "search for part of a name, a host, a URL or a username, e.g. `credvault secret search 10.0.0.1`"
PLAIN_FIELDS = ("name", "username", "host", "url", "note")


class ListedRow(Protocol):
    """What the search reads of a listed secret's row (``ListedSecretRow``)."""

    @property
    def kind(self) -> str: ...
    @property
    def current_version(self) -> int: ...


def fold(text: str) -> str:
    """``text`` as it is compared: NFC-normalised and casefolded."""
    return unicodedata.normalize("NFC", text).casefold()


def needle(query: object) -> str:
    """The query folded, or ``InvalidInput`` (not text, empty, longer than ``MAX_QUERY``
    characters, or holding a control character). The message never repeats the query."""
    if not isinstance(query, str):
        raise InvalidInput("the search is not text", hint=HINT)
    if len(query) > MAX_QUERY:
        raise InvalidInput(f"the search is longer than {MAX_QUERY} characters", hint=HINT)
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("the search is not valid text", hint=HINT) from None
    if not query.isprintable():
        raise InvalidInput("the search contains control characters", hint=HINT)
    folded = fold(query.strip())
    if not folded:
        raise InvalidInput("the search is empty", hint=HINT)
    return folded


class Matcher:
    """Which non-sensitive fields of an opened secret hold the needle (the listing's ``into``)."""

    def __init__(self, folded: str, hidden: Callable[[Mapping[str, Any]], Iterable[str]]) -> None:
        self.needle, self.hidden = folded, hidden
        self.searched = 0

    def __repr__(self) -> str:
        return "Matcher(<query>)"  # the query is not shown

    def __call__(self, slug: str, row: ListedRow, metadata: Mapping[str, Any]) -> SearchMatch | None:
        self.searched += 1
        matched = [f for f in PLAIN_FIELDS if self._holds(metadata.get(f))]
        custom = metadata.get("fields") or {}
        if custom:
            sensitive = set(self.hidden(metadata))
            matched += [f"field {k}" for k, v in sorted(custom.items()) if k not in sensitive and self._holds(v)]
        if not matched:
            return None
        return SearchMatch(slug, str(metadata["name"]), row.kind, row.current_version, tuple(matched))

    def _holds(self, value: object) -> bool:
        return isinstance(value, str) and self.needle in fold(value)


def found(listed: Iterable[SearchMatch]) -> list[SearchMatch]:
    """The matches of a listing searched, by client and name."""
    return sorted(listed, key=lambda m: (m.client, m.name))
