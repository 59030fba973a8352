"""Initial schema: devices, events (append-only), builds, tokens, asset-tag counters.

Revision ID: 0001
Revises:
Create Date: 2026-05-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from provisioner.registry.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The event log and the devices are history: the database itself refuses to rewrite it, so
# no bug or hand-typed SQL session can lose a wipe record or free an asset tag for reuse.
_SQLITE_GUARDS = [
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
    """CREATE TRIGGER devices_no_delete BEFORE DELETE ON devices
       BEGIN SELECT RAISE(ABORT, 'devices are never deleted; retire them'); END""",
]
_PG_GUARDS = [
    """CREATE FUNCTION deelit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$""",
    """CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
       FOR EACH ROW EXECUTE FUNCTION deelit_refuse('events are append-only')""",
    """CREATE TRIGGER devices_no_delete BEFORE DELETE ON devices
       FOR EACH ROW EXECUTE FUNCTION deelit_refuse('devices are never deleted; retire them')""",
]


def upgrade() -> None:
    op.create_table(
        "asset_counters",
        sa.Column("point", sa.String(16), primary_key=True),
        sa.Column("last_number", sa.Integer(), nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("asset_tag", sa.String(64), nullable=False, unique=True),
        sa.Column("identity_key", sa.String(255), nullable=False, unique=True),
        sa.Column("identity_source", sa.String(16), nullable=False),
        sa.Column("point", sa.String(16), nullable=False),
        sa.Column("serial", sa.String(128)),
        sa.Column("serial_placeholder", sa.Boolean(), nullable=False),
        sa.Column("baseboard_serial", sa.String(128)),
        sa.Column("uuid", sa.String(64)),
        sa.Column("macs", sa.JSON(), nullable=False),
        sa.Column("maker", sa.String(128)),
        sa.Column("model", sa.String(128)),
        sa.Column("cpu", sa.String(255)),
        sa.Column("ram_bytes", sa.BigInteger()),
        sa.Column("disks", sa.JSON(), nullable=False),
        sa.Column("battery", sa.JSON()),
        sa.Column("grade", sa.String(8)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("needs_wipe", sa.Boolean(), nullable=False),
        sa.Column("batch_date", sa.Date(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_devices_point", "devices", ["point"])
    op.create_index("ix_devices_status", "devices", ["status"])
    op.create_index("ix_devices_batch_date", "devices", ["batch_date"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uid", sa.String(64), nullable=False, unique=True),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("station", sa.String(64), nullable=False),
        sa.Column("technician", sa.String(64)),
        sa.Column("build_id", sa.String(128)),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_index("ix_events_device_id_id", "events", ["device_id", "id"])
    op.create_table(
        "builds",
        sa.Column("build_id", sa.String(128), primary_key=True),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("profile_digest", sa.String(128), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("station", sa.String(64), nullable=False),
        sa.Column("point", sa.String(16)),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("note", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime()),
    )
    op.create_index("ix_tokens_station", "tokens", ["station"])
    guards = _PG_GUARDS if op.get_bind().dialect.name == "postgresql" else _SQLITE_GUARDS
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    for table in ("tokens", "builds", "events", "devices", "asset_counters"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS deelit_refuse()")
