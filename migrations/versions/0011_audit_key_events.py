"""a partial index of the audit events that certify and retire engineer keys

Verification works out, in chain order, when each engineer key generation may sign
(issue 12, item 11; docs/format.md §8.1), from the few events that certify and retire
keys. Without an index, finding them reads the whole log, which an incremental
verification of a few new events should not; a partial index holds only them, so that
appending any other event costs nothing more.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

KEY_EVENTS = sa.text(
    "action IN ('vault-init', 'engineer-invite', 'enroll', 'engineer-confirm', 'engineer-key-rotate', 'engineer-remove')"
)


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audit_events_key", ["seq"], unique=False, sqlite_where=KEY_EVENTS, postgresql_where=KEY_EVENTS
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_key")
