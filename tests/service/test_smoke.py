def test_admin_adds_a_client_and_a_secret_an_engineer_reads_with_a_grant(team):
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add("acme/fw01-admin", password="pw-1", kind="equipment", host="10.0.0.1")
    alice = team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    assert alice.checkouts.reveal("acme/fw01-admin", reason="T-1") == "pw-1"
    assert [c.slug for c in alice.clients.list()] == ["acme"]
