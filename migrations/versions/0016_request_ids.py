"""one event per action of an engineer's request: a retry is answered, not appended again

docs/server.md §3 "Retries are not replays": a client with no answer re-sends the same
envelope (the same ``request_id``) under a new signature and nonce; the server answers again
from the event it committed for that request and appends none. This unique partial index
over format-3 events, ``(engineer_id, request_id, action)`` where ``request_id`` is set, is
both the look-up of that event and the guarantee: a second copy in flight that reached the
append anyway fails on it (a concurrent change, nothing written; its own retry then finds the
event). Events of formats 1 and 2 have no request id and are not in the index.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 17:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

WITH_REQUEST = sa.text("request_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            "ux_audit_events_request",
            ["engineer_id", "request_id", "action"],
            unique=True,
            sqlite_where=WITH_REQUEST,
            postgresql_where=WITH_REQUEST,
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ux_audit_events_request")
