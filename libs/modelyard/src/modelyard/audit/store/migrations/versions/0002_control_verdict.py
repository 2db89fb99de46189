"""Control changes say what routers did with each record: ``verdict`` replaces ``accepted``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

``accepted`` only said that a record decoded as a control record. ``verdict`` is the sink's
fold of the control topic with the keyring, as routers fold it: accepted, rejected, ignored
(lost a race) or unverified (no keyring). Rows stored before were never verified: a decoded one
becomes ``unverified``, one that did not decode ``rejected`` (its reason is kept).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_VERDICTS = "verdict IN ('accepted', 'rejected', 'ignored', 'unverified')"


def upgrade() -> None:
    with op.batch_alter_table("control_changes") as batch:
        batch.add_column(sa.Column("verdict", sa.Text, nullable=False, server_default="unverified"))
    op.execute("UPDATE control_changes SET verdict = 'rejected' WHERE NOT accepted")
    with op.batch_alter_table("control_changes") as batch:
        batch.alter_column("verdict", server_default=None)
        batch.drop_column("accepted")
        batch.create_check_constraint("control_changes_verdict", _VERDICTS)


def downgrade() -> None:
    with op.batch_alter_table("control_changes") as batch:
        batch.add_column(
            sa.Column("accepted", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE control_changes SET accepted = (verdict IN ('accepted', 'unverified'))")
    with op.batch_alter_table("control_changes") as batch:
        batch.alter_column("accepted", server_default=None)
        batch.drop_constraint("control_changes_verdict", type_="check")
        batch.drop_column("verdict")
