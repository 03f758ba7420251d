"""generations.words and generations.checks: word timestamps (captions) and what hearing the pieces found

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("words", sa.JSON(), nullable=True))
    op.add_column("generations", sa.Column("checks", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("generations", "checks")
    op.drop_column("generations", "words")
