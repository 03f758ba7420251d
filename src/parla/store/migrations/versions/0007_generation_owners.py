"""generations.voice_id (which library voice spoke) and jobs.source (which API queued the job), so
that each API lists, keeps and deletes what it made and nothing else

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("voice_id", sa.String(36), nullable=True))
        batch.create_index("ix_generations_voice_id", ["voice_id"])
        batch.create_index("ix_generations_source", ["source"])
    # Rows recorded before this knew only the voice's name: the library voice of that name spoke.
    op.execute(
        "UPDATE generations SET voice_id = "
        "(SELECT voices.id FROM voices WHERE lower(voices.name) = lower(generations.voice))"
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("source", sa.String(32), nullable=False, server_default="job"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("generations") as batch:
        batch.drop_index("ix_generations_source")
        batch.drop_index("ix_generations_voice_id")
        batch.drop_column("voice_id")
