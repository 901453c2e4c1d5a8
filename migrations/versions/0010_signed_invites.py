"""signed invitations: the inviting admin's signature over name, role, expiry and root version

Before this revision an invitation was a row anyone who can write the database could
make or edit (its role in particular). Invitations made before it have no signature:
enrolment and confirmation refuse them with a hint to invite the engineer again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("engineers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invite_signature", sa.LargeBinary(length=64), nullable=True))
        batch_op.add_column(sa.Column("invite_signed_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("invite_prev_generation", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Not in batch mode: on SQLite that re-creates ``engineers``, and dropping the old table
    # under PRAGMA foreign_keys fails (or cascades) on the rows that refer to engineers.
    # Both engines drop a plain column in place (SQLite since 3.35).
    for column in ("invite_prev_generation", "invite_signed_by", "invite_signature"):
        op.drop_column("engineers", column)
