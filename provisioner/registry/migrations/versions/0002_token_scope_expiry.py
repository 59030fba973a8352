"""Token scope (station | agent) and optional expiry.

Every token made before this migration keeps full rights: its scope becomes `station` and
it has no expiry.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from provisioner.registry.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite cannot add a CHECK constraint to a table in place; Alembic copies it.
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("scope", sa.String(16), nullable=False,
                                   server_default="station"))
        batch.add_column(sa.Column("expires_at", UTCDateTime()))
        batch.create_check_constraint("ck_tokens_scope", "scope IN ('station', 'agent')")


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_constraint("ck_tokens_scope", type_="check")
        batch.drop_column("expires_at")
        batch.drop_column("scope")
