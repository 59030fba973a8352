"""Alembic environment: always run from `provisioner.registry.db.upgrade` with a connection."""

from __future__ import annotations

from alembic import context

from provisioner.registry.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `deelit registry` (provisioner.registry.db.upgrade)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
