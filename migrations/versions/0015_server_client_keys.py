"""the server layer's client keys (issue 14 step 5: "no log, no key")

Each client has a server client key (32 bytes, versioned), stored only wrapped under the
server master key, which lives in the server key file and never in the database
(docs/format.md §4.8). Every wrapped data key of a server-keyed vault gets a second layer under
its client's server client key (§4.9, in ``secret_versions.wrapped_dek`` itself: type 0x09),
which the server removes only in an answer whose audit event has committed. A purge deletes
the client's rows here, which destroys its layer. Nothing here opens without the master key.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_client_keys",
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_server_client_keys_client_id_clients"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("client_id", "version", name=op.f("pk_server_client_keys")),
    )


def downgrade() -> None:
    # Without these rows every layered data key is lost for good: refuse while any is layered.
    layered = op.get_bind().execute(sa.text("SELECT count(*) FROM server_client_keys"))
    if layered.scalar():
        raise RuntimeError("data keys are under the server's layer: 0015 cannot be undone")
    op.drop_table("server_client_keys")
