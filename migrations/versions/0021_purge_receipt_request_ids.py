"""a client purge through the team server: a receipt's signature binds its request id (issue 14)

An admin's client purge through the server is signed before its audit event exists, so its
receipt's signature (``LABEL_SIG_RECEIPT_V3``, docs/format.md §10) covers the request id of the
signed request that commits it instead of the event's number. The row keeps that id;
``event_seq`` is still set (unsigned) to the event the server appended. Receipts made before this
revision, or in-process, have none and verify as before.

Revision ID: 0021
Revises: 0019
Create Date: 2026-12-06 02:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("purge_receipts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.LargeBinary(length=16), nullable=True))


def downgrade() -> None:
    # Not in batch mode, as 0019: both engines drop a plain column in place.
    op.drop_column("purge_receipts", "request_id")
