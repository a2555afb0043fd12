"""Overlays are drawn by the API on request: drop the stored copies.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_column("overlay_png")


def downgrade() -> None:
    """Downgrade schema (overlays of older results are not restored)."""
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("overlay_png", sa.LargeBinary(), nullable=True))
