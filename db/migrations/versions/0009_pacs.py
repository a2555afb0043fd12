"""PACS archives: where a study came from (with its SUV factor), and the export outbox.

Only new tables, so the revision does not depend on columns other revisions add.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "pacs_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("endpoint", sa.String(length=32), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uids", sa.JSON(), nullable=False),
        sa.Column("patient", sa.JSON(), nullable=False),
        sa.Column("units", sa.String(length=16), nullable=True),
        sa.Column("suv_factor", sa.Float(), nullable=True),
        sa.Column("suv_note", sa.Text(), nullable=False),
        sa.Column("quant_mip", sa.LargeBinary(), nullable=True),
        sa.Column("quant_mip_slope", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id"),
    )
    with op.batch_alter_table("pacs_studies", schema=None) as batch_op:
        batch_op.create_index("ix_pacs_studies_identity", ["identity"], unique=False)
    op.create_table(
        "pacs_exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("endpoint", sa.String(length=32), nullable=False),
        sa.Column(
            "state",
            sa.Enum("pending", "sent", name="pacs_export_state", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("objects", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id", "model_version", name="uq_pacs_exports_study_model"),
    )
    with op.batch_alter_table("pacs_exports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_pacs_exports_state_due", ["state", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("pacs_exports", schema=None) as batch_op:
        batch_op.drop_index("ix_pacs_exports_state_due")
    op.drop_table("pacs_exports")
    with op.batch_alter_table("pacs_studies", schema=None) as batch_op:
        batch_op.drop_index("ix_pacs_studies_identity")
    op.drop_table("pacs_studies")
