"""Freed data removed from disk after a purge (``purge scrub``; ``--vacuum`` on a purge), where the database is.

SQLite: ``secure_delete`` already zeroed freed pages; ``wal_checkpoint(TRUNCATE)`` moves them into
the database file and empties the WAL; ``vacuum`` rebuilds the file. PostgreSQL: deleted rows stay
in their pages until ``VACUUM`` marks them reusable, and a whole-file rewrite needs ``VACUUM FULL``
(run when ``vacuum``) on the tables a purge deletes from; WAL segments and replicas keep old row
images until they are recycled. The in-process ``Vault.purge.scrub`` and the team server's
``purge.vacuum`` route (run on its host after the purge committed) both call ``scrub``.
"""

from __future__ import annotations

from sqlalchemy import text

from vault.storage.engine import Store, is_sqlite

# The tables a purge deletes rows from (constants: never from a request).
PURGED_TABLES = (
    "secret_versions",
    "secrets",
    "client_key_seals",
    "client_keys",
    "server_client_keys",
    "clients",
    "grants",
    "checkouts",
)


def scrub(store: Store, *, vacuum: bool) -> str:
    """Run the scrub on ``store``'s database, outside any transaction; what was done (module docstring).
    A failure is the driver's exception: the caller says the purge is committed all the same."""
    if is_sqlite(store.engine):
        raw = store.engine.raw_connection()  # outside any transaction, as these need
        try:
            cursor = raw.cursor()
            if vacuum:
                cursor.execute("VACUUM")
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.close()
        finally:
            raw.close()
        return "sqlite: freed pages zeroed (secure_delete), WAL checkpointed and truncated" + (
            ", file vacuumed" if vacuum else ""
        )
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in PURGED_TABLES:
            conn.execute(text(f"VACUUM {'FULL ' if vacuum else ''}{table}"))
    return "postgresql: VACUUM" + (" FULL" if vacuum else "") + " run on the purged tables"
