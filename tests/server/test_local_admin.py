"""An admin's work on the team server's host, recorded in format 3 (``authority/local_events.py``).

Once a server key is certified, an in-process append would be a format-2 event after format-3
ones (a downgrade ``audit verify`` refuses), so it is refused; an admin holding the server key
file records their work in format 3 instead: their own signed request (operation
``local.record``) kept in the event, the server key's signature over it. Both engines.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_harness import Keyed, events

from vault.authority import local_events, serverjournal
from vault.errors import ConfigurationError
from vault.wire import eventrequest


@pytest.fixture
def admin_on_the_host(keyed: Keyed) -> Iterator[Keyed]:
    keyed.served.admin.core.server_key = keyed.key
    yield keyed
    keyed.served.admin.core.server_key = None


def test_without_the_server_key_an_admin_change_is_refused_and_says_where_to_work(keyed: Keyed) -> None:
    before = len(events(keyed.served))
    with pytest.raises(ConfigurationError, match="team server") as raised:
        keyed.served.admin.clients.add("nokey", "No Key Ltd")
    assert "--server-key" in (raised.value.hint or "")
    assert len(events(keyed.served)) == before


def test_an_admin_on_the_host_records_changes_in_format_3(admin_on_the_host: Keyed) -> None:
    keyed = admin_on_the_host
    admin = keyed.served.admin
    before = len(events(keyed.served))
    admin.clients.add("hosted", "Hosted Ltd")
    admin.grants.grant("bob", "hosted", reason="T-5 onboarding")
    admin.policies.set("hosted", exclusive=True)
    admin.engineers.invite("dora")
    added = events(keyed.served)[before:]
    assert added and all(e.server_key_version == keyed.key.version for e in added)
    assert all(eventrequest.parse_sig(e.request_sig).path == "/v1/local/record" for e in added)  # type: ignore[union-attr]
    me = admin.keyholder.me().engineer_id
    assert {e.engineer_id for e in added} == {me}
    assert "client-add" in [e.action for e in added] or "client-create" in [e.action for e in added]
    result = admin.audit.verify()
    assert result.ok, result
    assert [g.client for g in admin.grants.list(engineer="bob") if g.state == "active"].count("hosted") == 1


def test_a_reveal_is_never_recorded_on_the_host(admin_on_the_host: Keyed) -> None:
    admin = admin_on_the_host.served.admin
    before = len(events(admin_on_the_host.served))
    with pytest.raises(ConfigurationError):
        admin.checkouts.checkout("acme/fw01", reason="T-6 host")
    assert len(events(admin_on_the_host.served)) == before


def test_a_reveal_forged_as_a_local_record_is_named_by_verify(
    admin_on_the_host: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compromised host that holds an admin's key and the server key writes a reveal as local work:
    the verifier refuses a local request for an action only the server's routes append."""
    keyed = admin_on_the_host
    admin = keyed.served.admin
    monkeypatch.setattr(local_events, "SERVED_ONLY", frozenset())
    monkeypatch.setattr(serverjournal, "allows", lambda operation, action: True)
    store = keyed.store
    with store.transaction() as s:
        me = admin.trust.my_row(s)
        event = local_events.append_local(
            local_events.local_journal(admin.core, keyed.key), s, "reveal", actor=me,
            seed=admin.keyholder.me().signing_seed, request_id=bytes(range(16)), sealed=None, client_id=None,
            secret_id=None, public={"version": 1},
        )  # fmt: skip
        seq = event.seq
    result = admin.audit.verify()
    assert (result.ok, result.first_bad_seq) == (False, seq)
    assert "another operation" in (result.problem or ""), result
