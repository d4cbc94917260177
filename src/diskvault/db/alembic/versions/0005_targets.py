"""targets tables

Revision ID: 0005_targets
Revises: 0002_jobs
Create Date: 2026-11-21 05:03:02.090140
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import diskvault.db.base

revision: str = "0005_targets"
down_revision: str | None = "0002_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "targets",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("iqn", sa.String(length=223), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "PENDING",
                "ACTIVE",
                "INACTIVE",
                "ERROR",
                name="targetstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("image_id", sa.String(length=32), nullable=True),
        sa.Column("machine_id", sa.String(length=32), nullable=True),
        sa.Column("path", sa.String(length=4096), nullable=False),
        sa.Column("lun", sa.Integer(), nullable=False),
        sa.Column("portal", sa.String(length=64), nullable=False),
        sa.Column("initiators", sa.JSON(), nullable=False),
        sa.Column("chap_user", sa.String(length=255), nullable=True),
        sa.Column("chap_secret", sa.Text(), nullable=True),
        sa.Column("mutual_chap_user", sa.String(length=255), nullable=True),
        sa.Column("mutual_chap_secret", sa.Text(), nullable=True),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", diskvault.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", diskvault.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_targets")),
        sa.UniqueConstraint("iqn", name=op.f("uq_targets_iqn")),
    )
    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_targets_image_id"), ["image_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_targets_machine_id"), ["machine_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_targets_node"), ["node"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_targets_node"))
        batch_op.drop_index(batch_op.f("ix_targets_machine_id"))
        batch_op.drop_index(batch_op.f("ix_targets_image_id"))

    op.drop_table("targets")
