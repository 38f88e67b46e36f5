"""catalog versions: a version per experiment and flag (optimistic concurrency), and one row
whose version every catalog change bumps first (serialises edits; SDK payloads follow it)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute(
        "INSERT INTO catalog_state (id, version, updated_at) VALUES (1, 1, CURRENT_TIMESTAMP)"
    )
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("flags") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("flags") as batch:
        batch.drop_column("version")
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("version")
    op.drop_table("catalog_state")
