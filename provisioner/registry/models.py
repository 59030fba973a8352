"""SQLAlchemy 2 tables of the registry. Device data only: no field for a family or a person.

The schema itself is created by the Alembic migrations in `migrations/`; these classes must
match them (a unit test compares the two).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on every backend (SQLite itself would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the registry; use UTC")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect
                             ) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    pass


class Counter(Base):
    """Last asset-tag number issued per point; only ever incremented, so tags are never reused."""

    __tablename__ = "asset_counters"
    point: Mapped[str] = mapped_column(String(16), primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, nullable=False)


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    asset_tag: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    identity_key: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    identity_source: Mapped[str] = mapped_column(String(16), nullable=False)
    point: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    serial: Mapped[str | None] = mapped_column(String(128))
    serial_placeholder: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    baseboard_serial: Mapped[str | None] = mapped_column(String(128))
    uuid: Mapped[str | None] = mapped_column(String(64))
    macs: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    maker: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128))
    cpu: Mapped[str | None] = mapped_column(String(255))
    ram_bytes: Mapped[int | None] = mapped_column(BigInteger)
    disks: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    battery: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    grade: Mapped[str | None] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    needs_wipe: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    batch_date: Mapped[dt.date] = mapped_column(Date, nullable=False, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    events: Mapped[list[Event]] = relationship(
        back_populates="device", order_by="Event.id", lazy="raise"
    )


class Event(Base):
    """Append-only: database triggers refuse UPDATE and DELETE (see the first migration)."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Set by clients that retry or replay (offline queue): the same uid is stored once.
    uid: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), nullable=False)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    station: Mapped[str] = mapped_column(String(64), nullable=False)
    technician: Mapped[str | None] = mapped_column(String(64))
    build_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)

    device: Mapped[Device] = relationship(back_populates="events", lazy="raise")

    __table_args__ = (Index("ix_events_device_id_id", "device_id", "id"),)


class Build(Base):
    __tablename__ = "builds"
    build_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    profile: Mapped[str] = mapped_column(String(64), nullable=False)
    profile_digest: Mapped[str] = mapped_column(String(128), nullable=False)
    manifest_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created: Mapped[str] = mapped_column(String(40), nullable=False)
    artifacts: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class Token(Base):
    """A bearer token; only its SHA-256 is stored. `scope` says what it may do
    (provisioner/registry/access.py); `expires_at`, when set, ends it without a revocation."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    point: Mapped[str | None] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    scope: Mapped[str] = mapped_column(String(16), nullable=False, default="station",
                                       server_default="station")
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    machine: Mapped[str | None] = mapped_column(String(128))  # a `machine` token's serial or MAC

    __table_args__ = (CheckConstraint("scope IN ('station', 'agent', 'boot', 'machine')",
                                      name="ck_tokens_scope"),)
