"""grant ledger: a signed sequence number per (engineer, client), the audit event of each
grant, and signed revocations

Rows written before this revision keep working: their signatures cover the fields they
had (``seq`` stays NULL, which marks the older signature layout). A row revoked before
this revision has ``revoked_at`` and no revocation signature: it stays revoked (a
revocation is never undone, signed or not).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 01:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("event_seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("revoked_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("revocation", sa.LargeBinary(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_column("revocation")
        batch_op.drop_column("revoked_by")
        batch_op.drop_column("event_seq")
        batch_op.drop_column("seq")
