"""voices.blend: a library voice that is a blend of others (alloy(2)+Ada(1)) instead of samples

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place (see 0010): a batch copy of voices would cascade its samples away on SQLite.
    op.add_column("voices", sa.Column("blend", sa.String(1000), nullable=True))


def downgrade() -> None:
    op.drop_column("voices", "blend")
