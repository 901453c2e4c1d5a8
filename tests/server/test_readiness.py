"""``/readyz`` and the server's keys (``vault/server/readiness.py``): a key file that disagrees
with the database is named before a proxy sends engineers there. Both engines."""

from __future__ import annotations

from server_harness import asgi_call


def test_readyz_names_a_server_key_no_admin_certified(keyed) -> None:  # type: ignore[no-untyped-def]
    from vault.crypto.serverkey import ServerSigningKey
    from vault.server.app import build_app
    from vault.wire.nonces import DbNonceStore

    app = build_app(
        keyed.store, public_url="https://127.0.0.1:8443", nonce_store=DbNonceStore(keyed.store),
        server_key=ServerSigningKey.generate(1),
    )  # fmt: skip
    response = asgi_call(app, "GET", "/readyz")
    assert response.status_code == 503 and "server-key-not-certified" in response.text
    certified = build_app(
        keyed.store, public_url="https://127.0.0.1:8443", nonce_store=DbNonceStore(keyed.store), server_key=keyed.key
    )
    assert asgi_call(certified, "GET", "/readyz").status_code == 200


def test_readyz_names_a_master_key_that_opens_no_stored_client_key(keyed) -> None:  # type: ignore[no-untyped-def]
    import os

    from vault.server.app import build_app
    from vault.server.layer import MasterKey, ServerLayer
    from vault.wire.nonces import DbNonceStore

    right = ServerLayer(MasterKey(1, os.urandom(32)))
    right.layer_on(keyed.store)
    wrong = ServerLayer(MasterKey(1, os.urandom(32)))
    for layer, status in ((wrong, 503), (right, 200)):
        app = build_app(
            keyed.store, public_url="https://127.0.0.1:8443", nonce_store=DbNonceStore(keyed.store),
            server_key=keyed.key, layer=layer,
        )  # fmt: skip
        response = asgi_call(app, "GET", "/readyz")
        assert response.status_code == status, response.text
        assert ("master-key-mismatch" in response.text) == (status == 503)
