"""unbounded text for purge receipts and public event details

A purge receipt lists every secret id and data-key fingerprint it destroyed: as
VARCHAR(4000) / VARCHAR(20000) columns, PostgreSQL refused the receipt (and so the whole
purge) of a client with more than about 500 secrets. ``secret_ids``, ``counts`` and
``fingerprints`` of ``purge_receipts`` and ``details_json`` of ``audit_events`` become
TEXT. On PostgreSQL VARCHAR to TEXT rewrites nothing; on SQLite (which never enforced the
lengths) the two tables are copied once. Stored values, hashes and signatures are unchanged.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COLUMNS = {
    "purge_receipts": {"secret_ids": 4000, "counts": 2000, "fingerprints": 20000},
    "audit_events": {"details_json": 2000},
}


def upgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, length in columns.items():
                batch_op.alter_column(
                    column,
                    existing_type=sa.String(length),
                    type_=sa.Text(),
                    existing_nullable=column == "details_json",
                )


def downgrade() -> None:
    """Back to the bounded columns: fails (nothing changed) if a stored value is longer."""
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, length in columns.items():
                batch_op.alter_column(
                    column,
                    existing_type=sa.Text(),
                    type_=sa.String(length),
                    existing_nullable=column == "details_json",
                )
