"""images tables

Revision ID: 0003_images
Revises: 0002_jobs
Create Date: 2026-11-21 05:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import diskvault.db.base

revision: str = "0003_images"
down_revision: str | None = "0002_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "image_type",
            sa.Enum("system", "game", "data", name="imagetype", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "UPLOADING",
                "PROCESSING",
                "CONVERTING",
                "READY",
                "ERROR",
                name="imagestatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("format", sa.String(length=16), nullable=True),
        sa.Column("target_format", sa.String(length=16), nullable=True),
        sa.Column("virtual_size", sa.BigInteger(), nullable=True),
        sa.Column("actual_size", sa.BigInteger(), nullable=True),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=1000), nullable=True),
        sa.Column("storage_key", sa.String(length=500), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", diskvault.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", diskvault.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
    )
    op.create_index("ix_images_status_format", "images", ["status", "format"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_images_status_format", table_name="images")
    op.drop_table("images")
