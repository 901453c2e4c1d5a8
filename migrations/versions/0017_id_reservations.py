"""ids reserved by a draft for the row its commit inserts (issue 14, docs/server.md §4 rule 2)

Over HTTPS the keyholder encrypts a new secret's first version for the secret's id (its
associated data binds it) before the row exists: the draft reserves the id from the
table's sequence and keeps it here, for the engineer who asked, for five minutes; the
commit inserts the row under it and deletes the reservation. No secret is held: a table
name, an id, an engineer id and times.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vault.storage.models import UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "id_reservations",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("engineer_id", sa.Integer(), nullable=False),
        sa.Column("reserved_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["engineer_id"],
            ["engineers.id"],
            name=op.f("fk_id_reservations_engineer_id_engineers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("kind", "id", name=op.f("pk_id_reservations")),
    )
    with op.batch_alter_table("id_reservations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_id_reservations_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("id_reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_id_reservations_expires_at"))
    op.drop_table("id_reservations")
