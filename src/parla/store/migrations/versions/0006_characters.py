"""characters: the Titans character API's personas with a model, knowledge, style examples and a voice

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "characters",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("llm_model", sa.String(512), nullable=True),
        sa.Column("llm_config", sa.JSON(), nullable=False),
        sa.Column("voice_cloning_settings", sa.JSON(), nullable=False),
        sa.Column("stt_settings", sa.JSON(), nullable=False),
        sa.Column("voice_id", sa.String(36), sa.ForeignKey("voices.id", ondelete="SET NULL"), nullable=True),
        sa.Column("owns_voice", sa.Boolean(), nullable=False),
        sa.Column("image_file", sa.String(512), nullable=True),
        sa.Column("knowledge_files", sa.JSON(), nullable=False),
        sa.Column("style_examples", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("characters")
