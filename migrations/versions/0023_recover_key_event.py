"""the partial index of key events also holds ``server-key-recover``

An admin's certification of a new server key after every copy of the server key file was lost
is appended in format 2 (no server key is left to sign it; docs/format.md §8.2). Verification
must know its signer was an admin the chain made one, live at that event, as for the other
events that change who may sign; it reads those from this index (revision 0011), which now
holds the new action too. Recreating a partial index rewrites no row.

Revision ID: 0023
Revises: 0021
Create Date: 2026-12-06 02:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0021"
branch_labels = None
depends_on = None

BEFORE = sa.text(
    "action IN ('vault-init', 'engineer-invite', 'enroll', 'engineer-confirm', 'engineer-key-rotate', 'engineer-remove')"
)
AFTER = sa.text(
    "action IN ('vault-init', 'engineer-invite', 'enroll', 'engineer-confirm', 'engineer-key-rotate', "
    "'engineer-remove', 'server-key-recover')"
)


def _index(where: sa.TextClause) -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_key")
        batch_op.create_index("ix_audit_events_key", ["seq"], unique=False, sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    _index(AFTER)


def downgrade() -> None:
    _index(BEFORE)
