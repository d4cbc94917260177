"""instant recovery and boot verification

Revision ID: 0006b_boot_recovery
Revises: 0006_boot (depends on 0007_backups)
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import diskvault.db.base

revision: str = "0006b_boot_recovery"
down_revision: str | None = "0006_boot"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "0007_backups"


def upgrade() -> None:
    with op.batch_alter_table("backup_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("boot_status", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column(
                "boot_checked_at", diskvault.db.base.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(sa.Column("boot_detail", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("boot_method", sa.String(length=32), nullable=True))
    with op.batch_alter_table("backup_policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verify_boot_schedule", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("verify_boot", sa.String(length=16), nullable=False, server_default="latest")
        )
        batch_op.add_column(
            sa.Column(
                "last_verify_boot_at", diskvault.db.base.UTCDateTime(timezone=True), nullable=True
            )
        )
    op.create_table(
        "recoveries",
        sa.Column("backup_id", sa.String(length=32), nullable=False),
        sa.Column("machine_id", sa.String(length=32), nullable=True),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("initiator_iqn", sa.String(length=223), nullable=False),
        sa.Column(
            "mode",
            sa.Enum("discard", "keep", name="machinemode", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("target_id", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("created_at", diskvault.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_boot_at", diskvault.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recoveries")),
        sa.UniqueConstraint("mac", name=op.f("uq_recoveries_mac")),
    )
    with op.batch_alter_table("recoveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recoveries_backup_id"), ["backup_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_recoveries_node"), ["node"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("recoveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recoveries_node"))
        batch_op.drop_index(batch_op.f("ix_recoveries_backup_id"))
    op.drop_table("recoveries")
    with op.batch_alter_table("backup_policies", schema=None) as batch_op:
        batch_op.drop_column("last_verify_boot_at")
        batch_op.drop_column("verify_boot")
        batch_op.drop_column("verify_boot_schedule")
    with op.batch_alter_table("backup_jobs", schema=None) as batch_op:
        batch_op.drop_column("boot_method")
        batch_op.drop_column("boot_detail")
        batch_op.drop_column("boot_checked_at")
        batch_op.drop_column("boot_status")
