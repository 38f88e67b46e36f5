"""cumulative totals per partition beside the window rows (filled from them here; the workers
keep them from now on), and analysis history thinned out as it ages (``kept``)

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

STATISTICS = (
    "n",
    "sum",
    "sum_sq",
    "x_sum",
    "x_sum_sq",
    "xy_sum",
    "den_sum",
    "den_sum_sq",
    "num_den_sum",
)


def upgrade() -> None:
    op.create_table(
        "cumulative_aggregates",
        sa.Column("experiment", sa.String(length=128), nullable=False),
        sa.Column("variant", sa.String(length=128), nullable=False),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in STATISTICS),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("experiment", "variant", "metric", "partition"),
    )
    sums = ", ".join(f"SUM({name})" for name in STATISTICS)
    op.execute(
        f"INSERT INTO cumulative_aggregates (experiment, variant, metric, partition, "
        f"{', '.join(STATISTICS)}, source_offset) "
        f"SELECT experiment, variant, metric, partition, {sums}, MAX(source_offset) "
        "FROM window_aggregates GROUP BY experiment, variant, metric, partition"
    )
    with op.batch_alter_table("analysis_results") as batch:
        batch.add_column(sa.Column("kept", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("analysis_results") as batch:
        batch.drop_column("kept")
    op.drop_table("cumulative_aggregates")
