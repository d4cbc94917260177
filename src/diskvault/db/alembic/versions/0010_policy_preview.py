"""backup policies: adopt_existing and the preview history

Revision ID: 0010_policy_preview
Revises: 0009_backup_encryption
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_policy_preview"
down_revision: str | None = "0009_backup_encryption"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backup_policies") as batch:
        batch.add_column(
            sa.Column("adopt_existing", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("history", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("backup_policies") as batch:
        batch.drop_column("history")
        batch.drop_column("adopt_existing")
