"""The catalog check: objects in the database that credvault's migrations did not create.

A trigger, rule, view, row-level security policy, table, function or schema of someone
else's, an event trigger or a publication could rewrite, hide or copy what credvault
writes (delete reveal events at commit, archive the key copies a purge deletes). A
guarded ``Store`` (engine.py) reads the catalog with ``foreign_objects`` before its first
unit of work and refuses such a database (``TamperedSchema``); the reports name them.
"""

from __future__ import annotations

import functools

from sqlalchemy.engine import Connection

ALEMBIC_TABLE = "alembic_version"
SHOWN_OBJECTS = 6


def listed(found: list[str]) -> str:
    shown = ", ".join(found[:SHOWN_OBJECTS])
    more = len(found) - SHOWN_OBJECTS
    return shown + (f" and {more} more" if more > 0 else "")


@functools.cache
def _our_tables() -> frozenset[str]:
    from vault.storage import models

    return frozenset(models.Base.metadata.tables) | {ALEMBIC_TABLE}


def _shown(name: object) -> str:
    text = str(name)
    cleaned = "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text[:64])
    return repr(cleaned + ("…" if len(text) > 64 else ""))


def foreign_objects(conn: Connection) -> list[str]:
    """The catalog's objects that credvault's migrations did not create, in one query."""
    if conn.engine.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(SQLITE_CATALOG).all()
    else:
        rows = conn.exec_driver_sql(POSTGRES_CATALOG).all()
    ours = _our_tables()
    found = []
    for kind, name, table in rows:
        if (kind == "table" and name in ours) or (kind == "shadowed table" and name not in ours):
            continue  # our own tables; in another schema, only a table of one of our names matters
        if kind == "shadowed table":
            where = f" in schema {_shown(table)} (credvault works in another schema of the same database)"
        else:
            where = f" on {_shown(table) if table not in ours else table}" if table else ""
        found.append(f"{kind} {_shown(name)}{where}")
    return sorted(found)


# Triggers and views of any kind, and tables of names the models do not have.
SQLITE_CATALOG = (
    "SELECT type, name, CASE WHEN type = 'trigger' THEN tbl_name END FROM sqlite_master "
    "WHERE type IN ('trigger', 'view') OR (type = 'table' AND substr(name, 1, 7) <> 'sqlite_')"
)

# In the schema credvault works in (current_schema()): triggers (but the internal ones of
# foreign keys), rules (but views' own), relations other than our tables, row-level
# security and policies, functions (but an extension's), calls from a default or a
# constraint to a function outside pg_catalog, columns of a type outside pg_catalog
# (a domain's CHECK can call anything); in the database: event triggers, publications,
# schemas other than ours, public and the system's, and a relation of one of our names in
# any other schema (a schema named after the user, first on the search path, shadows ours).
POSTGRES_CATALOG = """
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = current_schema()),
rels AS (
  SELECT c.oid, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity
  FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM ns)
)
SELECT 'trigger', t.tgname::text, r.relname::text FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid
  WHERE NOT t.tgisinternal
UNION ALL
SELECT 'rule', w.rulename::text, r.relname::text FROM pg_rewrite w JOIN rels r ON r.oid = w.ev_class
  WHERE w.rulename <> '_RETURN'
UNION ALL
SELECT CASE r.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table'
  ELSE 'table' END, r.relname::text, NULL FROM rels r WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'row-level security', r.relname::text, NULL FROM rels r WHERE r.relrowsecurity OR r.relforcerowsecurity
UNION ALL
SELECT 'policy', p.polname::text, r.relname::text FROM pg_policy p JOIN rels r ON r.oid = p.polrelid
UNION ALL
SELECT 'function', p.proname::text, NULL FROM pg_proc p WHERE p.pronamespace = (SELECT oid FROM ns)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e')
UNION ALL
SELECT 'call of function', pr.proname::text, r.relname::text
  FROM pg_depend d JOIN pg_proc pr ON d.refclassid = 'pg_proc'::regclass AND pr.oid = d.refobjid
  LEFT JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
  LEFT JOIN pg_constraint co ON d.classid = 'pg_constraint'::regclass AND co.oid = d.objid
  JOIN rels r ON r.oid = coalesce(ad.adrelid, co.conrelid)
  WHERE pr.pronamespace <> 'pg_catalog'::regnamespace
UNION ALL
SELECT 'column type', a.attname::text || ' ' || format_type(a.atttypid, a.atttypmod), r.relname::text
  FROM pg_attribute a JOIN rels r ON r.oid = a.attrelid JOIN pg_type ty ON ty.oid = a.atttypid
  WHERE r.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
    AND ty.typnamespace <> 'pg_catalog'::regnamespace
UNION ALL
SELECT 'event trigger', e.evtname::text, NULL FROM pg_event_trigger e
UNION ALL
SELECT 'publication', pub.pubname::text, NULL FROM pg_publication pub
UNION ALL
SELECT 'shadowed table', c.relname::text, n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.oid <> (SELECT oid FROM ns)
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND left(n.nspname, 3) <> 'pg_'
UNION ALL
SELECT 'schema', n.nspname::text, NULL FROM pg_namespace n
  WHERE n.oid <> (SELECT oid FROM ns) AND n.nspname NOT IN ('public', 'pg_catalog', 'information_schema')
    AND left(n.nspname, 3) <> 'pg_'
"""
