"""The engineer's reads whose answer is lost are sent again (``HttpsTransport``: ``READS_RETRIED``).

The ``keyed`` team; alice's ``RemoteVault`` over the lost-answer transport of
``test_client_retry.py`` (the server committed and answered; the answer never arrived). A read
that appends its event (``secrets.show``/``history``/``list_page``, ``clients.show``/``list``) is
sent again as a new request, under a new request id, signature and nonce: the engineer gets the
answer, and the log holds both reads (the first answer did leave the server). ``grants.list``,
which writes nothing, is sent again as it was. Each at most twice more; a read lost every time is
the unreachable server's error. Both engines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from server_harness import Keyed, events
from test_client_retry import LosingAnswers, request_ids

from vault.errors import StoreUnavailable
from vault.service.remote import RemoteVault

READS: dict[str, tuple[str, Callable[[RemoteVault], Any], str | None]] = {
    # path: (operation, the read, the event it appends)
    "/v1/secrets/show": ("secrets.show", lambda v: v.secrets.show("acme/fw01"), "secret-view"),
    "/v1/secrets/history": ("secrets.history", lambda v: v.secrets.history("acme/fw01"), "secret-history"),
    "/v1/secrets/list_page": ("secrets.list_page", lambda v: v.secrets.list("acme"), "secret-list"),
    "/v1/clients/show": ("clients.show", lambda v: v.clients.show("acme"), "client-view"),
    "/v1/clients/list": ("clients.list", lambda v: v.clients.list(), "client-list"),
    "/v1/grants/list": ("grants.list", lambda v: v.grants.list(), None),
}


def losing(remote_alice: Callable[..., RemoteVault], path: str) -> tuple[RemoteVault, LosingAnswers]:
    """alice's vault over a ``LosingAnswers`` of ``path`` that loses nothing yet (its ``lose`` set
    by the test), the client's context learned already (a read is then one request to ``path``)."""
    made: list[LosingAnswers] = []

    def wrap(inner: Any) -> LosingAnswers:
        made.append(LosingAnswers(inner, path, lose=0))
        return made[0]

    vault = remote_alice(wrap)
    vault.secrets.show("acme/fw01")
    return vault, made[0]


@pytest.mark.parametrize("path", list(READS))
def test_a_read_whose_answer_is_lost_is_sent_again_and_answered(
    keyed: Keyed, remote_alice: Callable[..., RemoteVault], path: str
) -> None:
    operation, read, action = READS[path]
    vault, wrapper = losing(remote_alice, path)
    expected = read(vault)  # answered at once: what the retried read must give
    wrapper.lose, wrapper.sent = 1, []
    before = len(events(keyed.served))
    assert read(vault) == expected
    sent = request_ids(wrapper, path, operation)
    assert len(sent) == 2
    signatures = {r.headers["signature"] for r in wrapper.sent if r.url.path == path}
    assert len(signatures) == 2  # a new signature (and nonce): not a replay
    new = [(e.action, e.request_id) for e in events(keyed.served)[before:]]
    if action is None:  # writes nothing: the same envelope again
        assert sent[0] == sent[1] and new == []
    else:  # a new read under a new request id, each on record
        assert sent[0] != sent[1] and new == [(action, sent[0]), (action, sent[1])]
    assert keyed.served.admin.audit.verify().ok


@pytest.mark.parametrize("path", ["/v1/secrets/show", "/v1/grants/list"])
def test_a_read_lost_every_time_is_the_servers_unreachable_error_after_two_retries(
    keyed: Keyed, remote_alice: Callable[..., RemoteVault], path: str
) -> None:
    operation, read, action = READS[path]
    vault, wrapper = losing(remote_alice, path)
    wrapper.lose, wrapper.sent = 99, []
    before = len(events(keyed.served))
    with pytest.raises(StoreUnavailable, match="could not be reached"):
        read(vault)
    assert len(request_ids(wrapper, path, operation)) == 3  # once and twice again
    assert len(events(keyed.served)) == before + (3 if action else 0)
