"""pronunciations: the server's pronunciation dictionary, for every voice or for one

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pronunciations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("word", sa.String(100), nullable=False, index=True),
        sa.Column("respelling", sa.String(200), nullable=True),
        sa.Column("phonemes", sa.String(200), nullable=True),
        sa.Column("voice_id", sa.String(36), sa.ForeignKey("voices.id", ondelete="CASCADE"), nullable=True, index=True),
        sa.Column("owner_key_id", sa.String(36), nullable=True, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pronunciations")
