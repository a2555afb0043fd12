"""Lesion rows, MIP biomarkers on results, and the studies' pixel spacing.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIOMARKERS = (
    ("tumor_area_cm2", sa.Float()),
    ("sdmax_px", sa.Float()),
    ("sdmax_cm", sa.Float()),
    ("sdmax_per_height", sa.Float()),
    ("body_height_px", sa.Integer()),
    ("body_width_px", sa.Integer()),
    ("body_height_cm", sa.Float()),
    ("body_width_cm", sa.Float()),
)


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spacing_row_mm", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("spacing_col_mm", sa.Float(), nullable=True))
    with op.batch_alter_table("results", schema=None) as batch_op:
        for name, type_ in BIOMARKERS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    op.create_table(
        "lesions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("area_px", sa.Integer(), nullable=False),
        sa.Column("area_mm2", sa.Float(), nullable=True),
        sa.Column("centroid_row", sa.Float(), nullable=False),
        sa.Column("centroid_col", sa.Float(), nullable=False),
        sa.Column("bbox_row0", sa.Integer(), nullable=False),
        sa.Column("bbox_col0", sa.Integer(), nullable=False),
        sa.Column("bbox_row1", sa.Integer(), nullable=False),
        sa.Column("bbox_col1", sa.Integer(), nullable=False),
        sa.Column("relative_height", sa.Float(), nullable=True),
        sa.Column("peak_uptake", sa.Float(), nullable=False),
        sa.Column("mean_uptake", sa.Float(), nullable=False),
        sa.Column("peak_probability", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "study_id", "model_version", "number", name="uq_lesions_study_model_number"
        ),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("lesions")
    with op.batch_alter_table("results", schema=None) as batch_op:
        for name, _ in reversed(BIOMARKERS):
            batch_op.drop_column(name)
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_column("spacing_col_mm")
        batch_op.drop_column("spacing_row_mm")
