"""A moved lookup tag met at the command line (issue 12, item 5): an admin's `grant` for
one client, with the clients' slug tags swapped in the database by someone who is not an
admin, is refused with a clear error, and the engineer holds no grant afterwards."""

from __future__ import annotations

from cli_workspace import ENGINEER, Workspace, assert_clean_error, ok
from sqlalchemy import create_engine, text


def _swap_slug_tags(url: str) -> None:
    """Swap the slug tags of the vault's two clients."""
    engine = create_engine(url)
    with engine.begin() as conn:
        (first, tag_a), (second, tag_b) = conn.execute(text("SELECT id, slug_tag FROM clients ORDER BY id")).all()
        conn.execute(text("UPDATE clients SET slug_tag = :t WHERE id = :i"), {"t": b"\0" * 32, "i": first})
        conn.execute(text("UPDATE clients SET slug_tag = :t WHERE id = :i"), {"t": tag_a, "i": second})
        conn.execute(text("UPDATE clients SET slug_tag = :t WHERE id = :i"), {"t": tag_b, "i": first})
    engine.dispose()


def test_grant_with_swapped_slug_tags_is_refused(ready_any_engine: Workspace) -> None:
    ready = ready_any_engine
    ok(ready.admin("client", "add", "harmless", "--name", "Harmless Ltd"))
    _swap_slug_tags(ready.url)  # "harmless" now finds acme's row
    result = ready.admin("grant", ENGINEER, "harmless")
    assert_clean_error(result)
    assert "lookup tag was moved" in result.stderr
    vault = ready.library()
    try:
        assert vault.grants.list(engineer=ENGINEER) == []
    finally:
        vault.close()
