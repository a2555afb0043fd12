"""Running studies claimed before leases existed get a lease that has lapsed.

Such rows (running, no lease owner) were once taken back by a separate backstop after
``TUMORSEG_REAP_AFTER``. Their worker is long gone; with a lapsed lease the recovery
pass re-queues them like any other dead worker's study, and the backstop is gone.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The owner a pre-lease row's lapsed lease names.
PRE_LEASE_OWNER = "before-leases:0"


def upgrade() -> None:
    """Upgrade data: a lapsed lease on every running row without one."""
    studies = sa.table(
        "studies",
        sa.column("status", sa.String),
        sa.column("lease_owner", sa.String),
        sa.column("lease_expires_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        studies.update()
        .where(studies.c.status == "running", studies.c.lease_owner.is_(None))
        .values(lease_owner=PRE_LEASE_OWNER, lease_expires_at=datetime(1970, 1, 1, tzinfo=UTC))
    )


def downgrade() -> None:
    """Nothing to undo: the rows' workers are gone either way."""
