"""Moved to ``vault/records.py`` (issue 13: the keyholder and the authority use it from below
vault/service). Re-exported here, unchanged, so that the nouns and their callers keep working."""

from vault.records import *  # noqa: F403
