"""Issue 12, items 8 and 9 through the CLI: `init` without shares warns; `rotate root`
prints new shares once (the old ones open nothing current) and the admins the new key is
sealed to; `engineer remove` of an admin does the same. Stored state is then checked
through the library.
"""

from __future__ import annotations

from cli_workspace import ADMIN, ADMIN_PASS, CODE, FINGERPRINT, Workspace, ok, run
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


def test_init_without_shares_warns_and_rotate_root_can_start_them(workspace: Workspace) -> None:
    made = ok(
        run("--db", workspace.url, "init", "--admin", ADMIN, "--passphrase-file", workspace.passfile(ADMIN, ADMIN_PASS))
    )
    assert "no recovery shares" in made.stderr and "rotate root --shares" in made.stderr
    ok(workspace.admin("unlock", "--passphrase-file", workspace.passfiles[ADMIN]))
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


def test_removing_an_admin_prints_new_shares(workspace: Workspace) -> None:
    made = ok(
        run(
            "--db",
            workspace.url,
            "init",
            "--admin",
            ADMIN,
            "--shares",
            "2-of-3",
            "--passphrase-file",
            workspace.passfile(ADMIN, ADMIN_PASS),
        )
    )
    first = _shares(made.stdout)
    assert len(first) == 3 and "no recovery shares" not in made.stderr
    ok(workspace.admin("unlock", "--passphrase-file", workspace.passfiles[ADMIN]))
    ok(workspace.admin("client", "add", "acme", "--name", "Acme"))
    code = CODE.search(ok(workspace.admin("engineer", "invite", "bob", "--admin")).stdout)
    assert code is not None
    enrolled = ok(
        workspace.as_engineer(
            "bob",
            "--db",
            workspace.url,
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
