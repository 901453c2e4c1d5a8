"""Every request and response body of a workflow through the team server, scanned (issue 14).

The ``keyed`` team (conftest.py; two secrets carry a username, URL, host and note:
``KEYED_METADATA``). Through HTTPS: whoami, checkouts (their client contexts first),
reveals, a check-in, an admin's break, each body kept by httpx event hooks. None holds a
password, secret name, client slug or name, username, host, URL, note or reason, nor a
client key, data key, audit ring or an engineer's private key, raw or as hex or base64.
So far the served routes only (docs/server.md §8): the write routes of the other nouns join
the scan as they are served.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
from server_harness import KEYED_METADATA, Keyed
from sqlalchemy import select

from vault.authority.requests import BREAK, CHECKIN
from vault.crypto import blobs
from vault.service.checkouts import https_checkin_keyholder, https_checkout_keyholder
from vault.storage import models as m
from vault.transport.https import HttpsTransport

REASON = "T-4242 firmware upgrade window"
REFS = ("acme/fw01", "acme/fw02", "excl/sw01", "excl/sw02")


class Bodies:
    """Every request and response body an ``HttpsTransport`` sent and received."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def request(self, request: httpx.Request) -> None:
        self.seen.append(request.content)

    def response(self, response: httpx.Response) -> None:
        response.read()
        self.seen.append(response.content)


def transport(keyed: Keyed, vault: Any, bodies: Bodies) -> HttpsTransport:
    https = HttpsTransport(keyed.served.url, vault.keyholder, ca_file=str(keyed.served.ca.ca_file))
    https.client.event_hooks["request"].append(bodies.request)
    https.client.event_hooks["response"].append(bodies.response)
    vault.keyholder.me()
    return https


def forms(secret: bytes) -> list[bytes]:
    """``secret`` as it could appear in a JSON body: raw, hex, base64 and base64url."""
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def word(text: str) -> re.Pattern[bytes]:
    """``text`` not inside a longer base64url or hex run (a short name could occur in random base64)."""
    return re.compile(rb"(?<![A-Za-z0-9_\-])" + re.escape(text.encode()) + rb"(?![A-Za-z0-9_\-])")


def test_no_body_of_a_checkout_workflow_holds_a_plaintext_or_a_key(keyed: Keyed) -> None:
    served, bodies = keyed.served, Bodies()
    vaults = (served.alice, served.bob, served.admin)
    alice_https, bob_https, admin_https = (transport(keyed, v, bodies) for v in vaults)
    alice = https_checkout_keyholder(served.alice.checkouts, alice_https)
    bob = https_checkout_keyholder(served.bob.checkouts, bob_https)
    admin = https_checkout_keyholder(served.admin.checkouts, admin_https)
    for https in (alice_https, bob_https, admin_https):
        https.whoami()
    values = {}
    for ref in REFS[:3]:
        hold = ref != "acme/fw02"
        values[ref] = alice.checkout(ref, reason=REASON, field="password", version=None, hold=hold, hold_for=None).value
    values["excl/sw01:username"] = alice.checkout(
        "excl/sw01", reason=REASON, field="username", version=None, hold=False, hold_for=None
    ).value
    https_checkin_keyholder(alice).release("acme/fw01", CHECKIN)
    bob.checkout("excl/sw02", reason=REASON, field="password", version=None, hold=True, hold_for=None)
    https_checkin_keyholder(admin).release("excl/sw02", BREAK)
    assert values["acme/fw01"] == "pw of acme/fw01" and values["excl/sw01:username"] == "netops-4410"
    assert len(bodies.seen) >= 2 * 12  # every request and its answer were seen

    words = ["acme", "excl", "Acme Ltd", "Exclusive Ltd", REASON, *REFS, *(r.split("/")[1] for r in REFS)]
    words += [f"pw of {r}" for r in REFS] + [v for meta in KEYED_METADATA.values() for v in meta.values()]
    keys: list[bytes] = []
    for vault in (served.alice, served.bob, served.admin):
        session = vault.keyholder.me()
        keys += [session.signing_seed, session.sealing_private]
        keys += [key for key in vault.checkouts.keys.client_keys.values() if isinstance(key, bytes)]
    keys += data_keys(keyed, served.alice)
    assert len(keys) >= 6 + 2 + len(REFS) - 1  # private keys, both clients' keys, the data keys opened
    control = b'{"slug":"acme","key":"' + forms(keys[-1])[3] + b'"}'  # the scan finds what it looks for
    assert word("acme").search(control) and any(form in control for form in forms(keys[-1]))
    found = []
    for body in bodies.seen:
        found += [w for w in words if word(w).search(body)]
        found += [key[:4].hex() for key in keys for form in forms(key) if form in body]
    assert found == []


def data_keys(keyed: Keyed, vault: Any) -> list[bytes]:
    """The data keys of the secrets checked out, opened here with the client keys ``vault`` holds."""
    cache = vault.checkouts.keys.client_keys
    out = []
    v = m.SecretVersion
    with keyed.store.read() as s:
        rows = s.execute(select(m.Secret.client_id, v.secret_id, v.version, v.key_version, v.wrapped_dek).join(
            m.Secret, m.Secret.id == v.secret_id)).all()  # fmt: skip
    for client_id, secret_id, version, key_version, wrapped in rows:
        key = cache.get((client_id, key_version))
        if key is not None:
            out.append(blobs.unwrap_data_key(key, key_version, bytes(wrapped), client_id, secret_id, version))
    return out
