"""owner_key_id on voices, generations, jobs and characters: the API key that made each, so that a
key sees and deletes its own (empty for what was made before keys: the admins')

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("voices", "generations", "jobs", "characters")


# Plain ALTER TABLE, not Alembic's batch mode: on SQLite that copies the table and drops the old
# one, and dropping ``voices`` would take every sample with it (ON DELETE CASCADE). SQLite adds
# and drops a plain nullable column in place.


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("owner_key_id", sa.String(36), nullable=True))
        op.create_index(f"ix_{table}_owner_key_id", table, ["owner_key_id"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_owner_key_id", table_name=table)
        op.drop_column(table, "owner_key_id")
