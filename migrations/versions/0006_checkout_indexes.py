"""indexes for the checkout path: open checkouts of a secret, an engineer's grant for a client

Before this revision, finding the open checkouts of a secret read every checkout the
secret ever had (released or expired ones included), and an engineer's grant for a
client read all of that engineer's grants: a checkout grew slower with history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OPEN = sa.text("released_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_checkouts_open", ["secret_id", "expires_at"], unique=False, sqlite_where=OPEN, postgresql_where=OPEN
        )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index("ix_grants_engineer_client", ["engineer_id", "client_id"], unique=False)
        batch_op.drop_index("ix_grants_engineer_id")


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index("ix_grants_engineer_id", ["engineer_id"], unique=False)
        batch_op.drop_index("ix_grants_engineer_client")
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.drop_index("ix_checkouts_open")
