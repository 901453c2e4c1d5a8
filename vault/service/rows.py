"""Moved to ``vault/storage/rows.py`` (issue 13: the authority and the keyholder import the
plain row types and prepared statements from below them). Re-exported here, unchanged, so
that the nouns of ``vault/service`` and their callers keep working."""

from vault.storage.rows import *  # noqa: F403
