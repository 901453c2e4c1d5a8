"""the server's request nonces and failed-authentication counters (issue 14)

Every request to the team server is signed with a timestamp and a nonce (docs/server.md
§3). The nonces a request used are kept in the database, shared by every server process,
so that a request captured on its way to one process cannot be replayed on another; a row
older than twice the window is deleted (any request carrying it is refused as stale
first). Failed authentication is counted per engineer in fixed windows, shared by every
process, so that the limit holds behind a proxy without sticky sessions. Neither table
holds a secret: a key id (engineer id and key generation), a random nonce, times, counts.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 15:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_nonces",
        sa.Column("keyid", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("keyid", "nonce", name=op.f("pk_request_nonces")),
    )
    with op.batch_alter_table("request_nonces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_request_nonces_created_at"), ["created_at"], unique=False)
    op.create_table(
        "auth_failures",
        sa.Column("engineer_id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("engineer_id", "window_start", name=op.f("pk_auth_failures")),
    )


def downgrade() -> None:
    op.drop_table("auth_failures")
    with op.batch_alter_table("request_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_nonces_created_at"))
    op.drop_table("request_nonces")
