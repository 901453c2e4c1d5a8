"""Issue 12, items 8 and 9 through the CLI: `init` without shares warns; `rotate root`
prints new shares once (the old ones open nothing current) and the admins the new key is
sealed to; `engineer remove` of an admin does the same. Stored state is then checked
through the library. Embedded and, since session 18, through a team server (the admin on
their own machine: the shares are made there).
"""

from __future__ import annotations

from cli_workspace import ADMIN, CODE, FINGERPRINT, Workspace, ok
from sqlalchemy import select

from vault.crypto import shamir
from vault.keyholder.keys import RootBundle
from vault.storage import models as m


def _shares(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("  ") and len(line.strip()) > 40]


def _bundle(ws: Workspace, shares: list[str]) -> RootBundle:
    vault = ws.library()
    decoded = [shamir.decode_share(vault.vault_id(), text) for text in shares]
    raw = shamir.combine([(x, y) for _, x, y in decoded], decoded[0][0])
    vault.close()
    return RootBundle(raw, 0)


def _current(ws: Workspace) -> tuple[bytes, bytes]:
    vault = ws.library()
    with vault.store.transaction() as s:
        info = s.get(m.VaultInfo, 1)
        root = s.scalars(select(m.RootKey).where(m.RootKey.state == "active")).one()
        assert info is not None
        out = (root.recovery_public, info.org_signing_public)
    vault.close()
    return out


def test_init_without_shares_warns_and_rotate_root_can_start_them(short_workspace: Workspace) -> None:
    workspace = short_workspace
    made = workspace.init()
    assert "no recovery shares" in made.stderr and "rotate root --shares" in made.stderr
    plain = ok(workspace.admin("rotate", "root"))
    assert "no recovery shares" in plain.stderr and _shares(plain.stdout) == []
    rotated = ok(workspace.admin("rotate", "root", "--shares", "2-of-3"))
    shares = _shares(rotated.stdout)
    assert len(shares) == 3 and "any 2 of these 3" in rotated.stdout
    assert f"sealed to: '{ADMIN}'" in rotated.stdout
    bundle = _bundle(workspace, shares[1:])
    assert (bundle.recovery.public, bundle.org.public) == _current(workspace)

    again = ok(workspace.admin("rotate", "root"))  # keeps 2-of-3; the printed set is new
    fresh = _shares(again.stdout)
    assert len(fresh) == 3 and not set(fresh) & set(shares)
    old = _bundle(workspace, shares[:2])
    recovery, org = _current(workspace)
    assert old.recovery.public != recovery and old.org.public != org
    assert _bundle(workspace, fresh[:2]).recovery.public == recovery


def test_removing_an_admin_prints_new_shares(short_workspace: Workspace) -> None:
    workspace = short_workspace
    workspace.init()
    first = _shares(ok(workspace.admin("rotate", "root", "--shares", "2-of-3")).stdout)
    assert len(first) == 3
    ok(workspace.admin("client", "add", "acme", "--name", "Acme"))
    code = CODE.search(ok(workspace.admin("engineer", "invite", "bob", "--admin")).stdout)
    assert code is not None
    enrolled = ok(
        workspace.as_engineer(
            "bob",
            *workspace.reach("bob"),
            "engineer",
            "enroll",
            "bob",
            "--passphrase-file",
            workspace.passfile("bob", "bob pass"),
            input=code.group(0) + "\n",  # typed at the prompt: never in argv
        )
    )
    fingerprint = FINGERPRINT.search(enrolled.stdout)
    assert fingerprint is not None
    ok(workspace.admin("engineer", "confirm", "bob", "--fingerprint", fingerprint.group(0)))

    removed = ok(workspace.admin("engineer", "remove", "bob", "--yes"))

    assert "bob was an admin" in removed.stdout and f"sealed to: '{ADMIN}'." in removed.stdout
    shares = _shares(removed.stdout)
    assert len(shares) == 3
    recovery, org = _current(workspace)
    assert _bundle(workspace, [shares[0], shares[2]]).recovery.public == recovery
    old = _bundle(workspace, first[:2])
    assert old.recovery.public != recovery and old.org.public != org
