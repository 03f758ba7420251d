"""voice_mappings: the Dia server API's voice ids bound to audio prompts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voice_mappings",
        sa.Column("voice_id", sa.String(100), primary_key=True),
        sa.Column("style", sa.String(64), nullable=False),
        sa.Column("primary_speaker", sa.String(8), nullable=False),
        sa.Column("audio_prompt", sa.String(100), nullable=True),
        sa.Column("audio_prompt_transcript", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("voice_mappings")
