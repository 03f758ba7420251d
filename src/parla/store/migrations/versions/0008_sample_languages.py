"""voice_samples.language: the language each sample is spoken in (what Whisper heard or was told,
else the voice's), so that cloning engines read its transcript in that language

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, and left empty for the samples already stored: their language is not known, and a
    # sample without one is read in its voice's language, which is what happened before.
    with op.batch_alter_table("voice_samples") as batch:
        batch.add_column(sa.Column("language", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("voice_samples") as batch:
        batch.drop_column("language")
