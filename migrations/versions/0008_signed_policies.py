"""signed client policies and vault settings

Client policies (reason required, exclusive, rotate after checkout, checkout length,
stale-after) and the vault settings (retention_versions, cryptoperiod_days) were plain
rows any database writer could change. Each now carries the id of the admin who signed
it, when, and an Ed25519 signature over its fields (docs/format.md). Rows written before
this revision have no signature: a client's policy then reads as the strict policy and
the settings as their bounded defaults, until an admin sets them again
(`credvault policy set CLIENT ...`, `credvault settings ...`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("client_policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signed_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("signed_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("signature", sa.LargeBinary(length=64), nullable=True))
    with op.batch_alter_table("vault_info", schema=None) as batch_op:
        batch_op.add_column(sa.Column("settings_signed_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("settings_signed_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("settings_signature", sa.LargeBinary(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vault_info", schema=None) as batch_op:
        batch_op.drop_column("settings_signature")
        batch_op.drop_column("settings_signed_at")
        batch_op.drop_column("settings_signed_by")
    with op.batch_alter_table("client_policies", schema=None) as batch_op:
        batch_op.drop_column("signature")
        batch_op.drop_column("signed_at")
        batch_op.drop_column("signed_by")
