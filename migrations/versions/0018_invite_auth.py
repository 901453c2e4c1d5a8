"""enrolment over HTTPS: the public key an invitation's code derives (issue 14, docs/server.md §3)

The team server checks an enrolling person's code without holding its secret: the inviting
admin stores the public half of the Ed25519 key the code's secret derives
(``signing.invite_auth_key``), and the enrolment's requests are signed with that key (the
draft) or carry its signature over the keys enrolled (the commit). Invitations made before
this revision have none: they enrol in-process only (or the admin invites again).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("engineers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invite_auth_public", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    # Not in batch mode, as 0010: both engines drop a plain column in place.
    op.drop_column("engineers", "invite_auth_public")
