"""Token scopes `boot` (what a station's boot scripts carry: no registry rights) and `machine`
(one approved machine's own credential, bound to its serial or MAC in `machine`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCOPES = "scope IN ('station', 'agent', 'boot', 'machine')"


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("machine", sa.String(128)))
        batch.drop_constraint("ck_tokens_scope", type_="check")
        batch.create_check_constraint("ck_tokens_scope", SCOPES)


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_constraint("ck_tokens_scope", type_="check")
        batch.create_check_constraint("ck_tokens_scope", "scope IN ('station', 'agent')")
        batch.drop_column("machine")
