"""Pydantic models at the HTTP boundary (and for queued offline records, which share them)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from provisioner.registry.lifecycle import EventType

# PostgreSQL text cannot hold NUL characters: refuse them here (422), not in the database (500).
NO_NUL = r"^[^\x00]*$"
Short = Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL)]
Code = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{2,8}$")]
Mac = Annotated[str, StringConstraints(max_length=32, pattern=NO_NUL)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class Disk(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: Short | None = None
    serial: Short | None = None
    size_bytes: Annotated[int, Field(ge=0, le=2**62)] | None = None
    kind: Short | None = None  # hdd, ssd, nvme
    health: Short | None = None


class Battery(BaseModel):
    model_config = ConfigDict(extra="allow")
    health_percent: Annotated[float, Field(ge=0, le=200)] | None = None
    cycle_count: Annotated[int, Field(ge=0, le=10**6)] | None = None


class DeviceIn(BaseModel):
    """What the agent sends after inventory; identity fields may hold placeholders."""

    model_config = ConfigDict(extra="forbid")
    serial: Short | None = None
    baseboard_serial: Short | None = None
    uuid: Short | None = None
    macs: Annotated[list[Mac], Field(max_length=32)] = []
    maker: Short | None = None
    model: Short | None = None
    cpu: Annotated[str, StringConstraints(max_length=255, pattern=NO_NUL)] | None = None
    ram_bytes: Annotated[int, Field(ge=0, le=2**50)] | None = None
    disks: Annotated[list[Disk], Field(max_length=16)] = []
    battery: Battery | None = None
    grade: Annotated[str, StringConstraints(pattern=r"^[A-Z][+-]?$")] | None = None
    point: Code | None = None


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: EventType
    # Makes retries and queue replays idempotent: an event with a known uid is not stored twice.
    uid: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{8,64}$")] | None = None
    at: dt.datetime | None = None
    technician: Name | None = None
    build_id: Short | None = None
    details: Annotated[dict[str, Any], Field(max_length=64)] = {}
    # The status the caller saw: when it changed meanwhile (another volunteer acted first),
    # the event is refused (409) and nothing changes.
    if_status: EventType | None = None


class EventOut(BaseModel):
    uid: str
    type: str
    at: dt.datetime
    recorded_at: dt.datetime
    station: str
    technician: str | None
    build_id: str | None
    details: dict[str, Any]


class DeviceOut(BaseModel):
    asset_tag: str
    identity_source: str
    point: str
    status: str
    needs_wipe: bool
    serial: str | None
    serial_placeholder: bool
    baseboard_serial: str | None
    uuid: str | None
    macs: list[str]
    maker: str | None
    model: str | None
    cpu: str | None
    ram_bytes: int | None
    disks: list[dict[str, Any]]
    battery: dict[str, Any] | None
    grade: str | None
    batch_date: dt.date
    created_at: dt.datetime
    updated_at: dt.datetime
    last_event: EventOut | None = None


class RegisterOut(DeviceOut):
    created: bool


class DeviceWithEvents(DeviceOut):
    events: list[EventOut]


class BuildOut(BaseModel):
    build_id: str
    profile: str
    profile_digest: str
    manifest_sha256: str
    created: str
    artifacts: list[dict[str, Any]]
    recorded_at: dt.datetime


class QueuedRecord(DeviceIn):
    """One JSON file of the offline queue: the POST /devices body plus the events to replay."""

    events: Annotated[list[EventIn], Field(max_length=256)] = []
