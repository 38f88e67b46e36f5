"""flags with a type, a default value and ordered rules; variants with the value their flag
serves; saved groups; client keys' payload encryption keys. Existing flags become boolean flags whose default is true (what the older
form meant); their never-applied ``rollout`` goes.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flags") as batch:
        batch.add_column(
            sa.Column("type", sa.String(length=16), nullable=False, server_default="boolean")
        )
        batch.add_column(sa.Column("default_value", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("rules", sa.JSON(), nullable=True))
        batch.drop_column("rollout")
    op.execute("UPDATE flags SET default_value = 'true', rules = '[]'")
    with op.batch_alter_table("flags") as batch:
        batch.alter_column("rules", existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table("variants") as batch:
        batch.add_column(sa.Column("value", sa.JSON(), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("payload_key", sa.String(length=32), nullable=True))
    op.create_table(
        "saved_groups",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("saved_groups")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("payload_key")
    with op.batch_alter_table("variants") as batch:
        batch.drop_column("value")
    with op.batch_alter_table("flags") as batch:
        batch.add_column(sa.Column("rollout", sa.Float(), nullable=False, server_default="1.0"))
        batch.drop_column("rules")
        batch.drop_column("default_value")
        batch.drop_column("type")
