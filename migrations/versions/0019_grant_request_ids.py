"""grants through the team server: a grant's signature binds its request id (issue 14)

An admin's grant through the server is signed before its audit event exists, so its
signature (format 3 of the grant, ``LABEL_SIG_GRANT_V3``, docs/format.md §5) covers the
request id of the signed request that commits it instead of the event's number. The row
keeps that id; ``event_seq`` is still set (unsigned) to the event the server appended.
Grants made before this revision, or in-process, have none and verify as before.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.LargeBinary(length=16), nullable=True))


def downgrade() -> None:
    # Not in batch mode, as 0010: both engines drop a plain column in place.
    op.drop_column("grants", "request_id")
