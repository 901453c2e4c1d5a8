"""the team server's signing keys and audit event format 3 (issue 14 step 3)

The server signs the events it appends with a key of its own, certified by the organisation
key (``server_keys``; docs/format.md §5). Each such event (format 3, docs/format.md §8.2)
keeps the engineer's signed request: its id, the digest of its body, the signature with its
parameters and route, the body itself (NULL on bulk routes), and the version of the server key
that signed the event. The new columns are nullable: format-1 and format-2 rows keep what they
have, and their hashes are unchanged. Nothing here is secret: public keys, signatures, ids,
digests, and a request body that holds only what the engineer sent (ciphertext, ids).
The downgrade refuses while any event of format 3 exists (it would destroy what verifies it).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_EVENT_COLUMNS = (
    ("request_id", sa.LargeBinary(length=16)),
    ("request_digest", sa.LargeBinary(length=32)),
    ("request_sig", sa.Text()),
    ("request_body", sa.LargeBinary()),
    ("server_key_version", sa.Integer()),
)


def upgrade() -> None:
    op.create_table(
        "server_keys",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("signing_public", sa.LargeBinary(length=32), nullable=False),
        sa.Column("certified_at", sa.BigInteger(), nullable=False),
        sa.Column("certificate", sa.LargeBinary(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_server_keys")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        for name, kind in _EVENT_COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    # Dropping the request and server-key columns would leave every format-3 event unverifiable.
    kept = op.get_bind().execute(sa.text("SELECT count(*) FROM audit_events WHERE server_key_version IS NOT NULL"))
    if kept.scalar():
        raise RuntimeError("the audit log holds events of format 3 (signed by the server): 0014 cannot be undone")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        for name, _ in reversed(_EVENT_COLUMNS):
            batch_op.drop_column(name)
    op.drop_table("server_keys")
