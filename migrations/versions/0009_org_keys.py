"""organisation-key chain and the signed recovery-share policy (issue 12, items 8 and 9)

``org_keys`` holds every organisation signing key, each later one signed by the one
before it, with the k-of-n of the recovery shares of its root bundle signed by itself;
an existing vault gets its one key as version 1, with no share policy (unknown: `credvault
rotate root --shares K-of-N` sets it). No existing table changes, so a vault not yet
upgraded keeps working with this code until `credvault db upgrade`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 01:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vault.storage.models import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    org_keys = op.create_table(
        "org_keys",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("public", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signed_at", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("share_threshold", sa.Integer(), nullable=True),
        sa.Column("share_count", sa.Integer(), nullable=True),
        sa.Column("share_signature", sa.LargeBinary(length=64), nullable=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_org_keys")),
    )
    vault_info = sa.table(
        "vault_info",
        sa.column("id", sa.Integer()),
        sa.column("org_signing_public", sa.LargeBinary()),
        sa.column("created_at", UTCDateTime()),
    )
    info = op.get_bind().execute(sa.select(vault_info.c.org_signing_public, vault_info.c.created_at)).first()
    if info is not None:  # the vault's first (and so far only) organisation key
        public, created = info
        op.bulk_insert(
            org_keys,
            [
                {
                    "version": 1,
                    "public": public,
                    "signed_at": int(created.timestamp()),
                    "signature": None,
                    "created_at": created,
                }
            ],
        )


def downgrade() -> None:
    op.drop_table("org_keys")
