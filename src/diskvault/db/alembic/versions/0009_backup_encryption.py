"""backup encryption at rest and compression

Revision ID: 0009_backup_encryption
Revises: 0007_backups
Create Date: 2026-12-03 08:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_backup_encryption"
down_revision: str | None = "0007_backups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backup_repositories") as batch:
        batch.add_column(
            sa.Column("encryption", sa.String(length=16), nullable=False, server_default="none")
        )
        batch.add_column(
            sa.Column("compression", sa.String(length=16), nullable=False, server_default="none")
        )
        batch.add_column(sa.Column("key_file", sa.String(length=1024), nullable=True))
        batch.add_column(sa.Column("key_fingerprint", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("keys", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("backup_jobs") as batch:
        batch.add_column(sa.Column("key_fingerprint", sa.String(length=64), nullable=True))
    with op.batch_alter_table("backup_policies") as batch:
        batch.add_column(sa.Column("compression", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backup_policies") as batch:
        batch.drop_column("compression")
    with op.batch_alter_table("backup_jobs") as batch:
        batch.drop_column("key_fingerprint")
    with op.batch_alter_table("backup_repositories") as batch:
        for column in ("keys", "key_fingerprint", "key_file", "compression", "encryption"):
            batch.drop_column(column)
