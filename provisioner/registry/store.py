"""The registry's operations over the database; the API, the CLI and the station call these.

Every write is one short transaction. Concurrent registrations of one machine race on the
unique identity key: the loser's transaction rolls back (with the asset-tag number it drew)
and is retried, finding the winner's row; so a tag is issued only with a committed device.
"""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import ColumnElement, String, cast, func, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from provisioner.formats import signed_certificate
from provisioner.registry import access, evidence, identity, lifecycle
from provisioner.registry.db import Database
from provisioner.registry.errors import Conflict, Invalid, NotFound
from provisioner.registry.lifecycle import EventType
from provisioner.registry.models import Build, Counter, Device, Event
from provisioner.registry.schemas import (
    BuildOut,
    DeviceIn,
    DeviceOut,
    DeviceWithEvents,
    EventIn,
    EventOut,
    RegisterOut,
)
from provisioner.registry.settings import Settings
from provisioner.registry.tokens import Caller, TokenStore, utcnow

_RETRIES = 8
_INVENTORY_FIELDS = ("serial", "baseboard_serial", "uuid", "macs", "maker", "model", "cpu",
                     "ram_bytes", "disks", "battery")


def _event_out(ev: Event) -> EventOut:
    return EventOut(uid=ev.uid, type=ev.type, at=ev.at, recorded_at=ev.recorded_at,
                    station=ev.station, technician=ev.technician, build_id=ev.build_id,
                    details=ev.details)


def _device_fields(dev: Device) -> dict[str, Any]:
    return {
        "asset_tag": dev.asset_tag, "identity_source": dev.identity_source, "point": dev.point,
        "status": dev.status, "needs_wipe": dev.needs_wipe, "serial": dev.serial,
        "serial_placeholder": dev.serial_placeholder, "baseboard_serial": dev.baseboard_serial,
        "uuid": dev.uuid, "macs": dev.macs, "maker": dev.maker, "model": dev.model,
        "cpu": dev.cpu, "ram_bytes": dev.ram_bytes, "disks": dev.disks, "battery": dev.battery,
        "grade": dev.grade, "batch_date": dev.batch_date, "created_at": dev.created_at,
        "updated_at": dev.updated_at,
    }


class Store(TokenStore):
    """Devices, their events and builds; tokens come from TokenStore."""

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        self.db = Database(settings)
        self._key: Ed25519PrivateKey | None = None
        if migrate:
            self.db.upgrade()

    def close(self) -> None:
        self.db.dispose()

    # -- devices -------------------------------------------------------------------------

    def register(self, body: DeviceIn, caller: Caller, *, at: dt.datetime | None = None
                 ) -> RegisterOut:
        """Creates the device, or updates the one with the same identity (idempotent)."""
        access.check_machine(caller.scope, caller.machine, body.serial, list(body.macs or []))
        try:
            ident = identity.derive_identity(serial=body.serial,
                                             baseboard_serial=body.baseboard_serial,
                                             uuid=body.uuid, macs=body.macs, maker=body.maker)
        except identity.NoIdentityError as exc:
            raise Invalid(str(exc)) from exc
        point = body.point or caller.point or self.settings.default_point
        when = at or utcnow()
        for attempt in range(_RETRIES):
            try:
                with self.db.write() as s:
                    dev = s.scalar(select(Device).where(Device.identity_key == ident.key))
                    if dev is None:
                        dev = self._create(s, body, ident, point, caller, when)
                        created = True
                    else:
                        self._update(s, dev, body, caller, when)
                        created = False
                    s.flush()
                    return RegisterOut(**_device_fields(dev), created=created,
                                       last_event=self._last_event(s, dev.id))
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
            except OperationalError as exc:  # PostgreSQL deadlock/serialisation: retry
                if attempt == _RETRIES - 1 or self.db.dialect == "sqlite":
                    raise
                del exc
        raise AssertionError("unreachable")

    def _next_number(self, s: Session, point: str) -> int:
        stmt = (update(Counter).where(Counter.point == point)
                .values(last_number=Counter.last_number + 1).returning(Counter.last_number)
                .execution_options(synchronize_session=False))
        number = s.execute(stmt).scalar()
        if number is None:
            s.add(Counter(point=point, last_number=1))
            s.flush()  # a concurrent first tag of this point fails here and is retried
            number = 1
        return number

    def _create(self, s: Session, body: DeviceIn, ident: identity.Identity, point: str,
                caller: Caller, when: dt.datetime) -> Device:
        tag = self.settings.asset_tag_format.format(point=point, number=self._next_number(s, point))
        dev = Device(asset_tag=tag, identity_key=ident.key, identity_source=ident.source,
                     point=point, status=EventType.registered.value, needs_wipe=False,
                     batch_date=when.astimezone().date(), created_at=when, updated_at=when,
                     grade=body.grade)
        self._apply_inventory(dev, body, set(_INVENTORY_FIELDS))
        s.add(dev)
        s.flush()
        self._append(s, dev, EventType.registered, caller, when,
                     {"identity_source": ident.source, "identity": ident.value})
        if body.grade:
            self._append(s, dev, EventType.graded, caller, when, {"grade": body.grade})
        return dev

    @staticmethod
    def _apply_inventory(dev: Device, body: DeviceIn, fields: set[str]) -> list[str]:
        changed = []
        for name in _INVENTORY_FIELDS:
            if name not in fields:
                continue
            value: Any = getattr(body, name)
            if name == "macs":
                value = [m for m in (identity.clean_mac(v) for v in value) if m]
            elif name == "disks":
                value = [d.model_dump(exclude_none=True) for d in value]
            elif name == "battery":
                value = value.model_dump(exclude_none=True) if value else None
            elif isinstance(value, str):
                value = value.strip()
            if getattr(dev, name) != value:
                setattr(dev, name, value)
                changed.append(name)
        dev.serial_placeholder = identity.is_placeholder(dev.serial)
        return changed

    def _update(self, s: Session, dev: Device, body: DeviceIn, caller: Caller,
                when: dt.datetime) -> None:
        status = EventType(dev.status)
        if status is EventType.retired:
            raise Conflict(f"{dev.asset_tag} is retired; it cannot be registered again")
        changed = self._apply_inventory(dev, body, body.model_fields_set)
        if changed:
            self._guard(dev, EventType.inventoried)
            self._append(s, dev, EventType.inventoried, caller, when, {"changed": changed})
        if body.point and body.point != dev.point:
            dev.point = body.point
            changed.append("point")
        if body.grade and body.grade != dev.grade:
            self._guard(dev, EventType.graded)
            self._append(s, dev, EventType.graded, caller, when,
                         {"grade": body.grade, "previous": dev.grade})
            dev.grade = body.grade
            changed.append("grade")
        if changed:
            dev.updated_at = when

    @staticmethod
    def _guard(dev: Device, event: EventType) -> tuple[EventType, bool]:
        try:
            return lifecycle.check(EventType(dev.status), dev.needs_wipe, event)
        except lifecycle.TransitionError as exc:
            raise Conflict(f"{dev.asset_tag}: {exc}") from exc

    @staticmethod
    def _append(s: Session, dev: Device, kind: EventType, caller: Caller, when: dt.datetime,
                details: dict[str, Any], *, uid: str | None = None,
                technician: str | None = None, build_id: str | None = None) -> Event:
        ev = Event(uid=uid or uuidlib.uuid4().hex, device_id=dev.id, type=kind.value, at=when,
                   recorded_at=utcnow(), station=caller.station, technician=technician,
                   build_id=build_id, details=details)
        s.add(ev)
        return ev

    @staticmethod
    def _last_event(s: Session, device_id: int) -> EventOut | None:
        ev = s.scalar(select(Event).where(Event.device_id == device_id)
                      .order_by(Event.id.desc()).limit(1))
        return _event_out(ev) if ev else None

    def add_event(self, asset_tag: str, body: EventIn, caller: Caller) -> tuple[EventOut, bool]:
        """Appends an event after checking the caller's scope and the transition; returns
        (event, newly stored)."""
        access.check_event(caller.scope, body.type)
        for attempt in range(_RETRIES):
            try:
                with self.db.write() as s:
                    return self._add_event(s, asset_tag, body, caller)
            except IntegrityError:  # the same uid stored concurrently: the retry finds it
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _add_event(self, s: Session, asset_tag: str, body: EventIn, caller: Caller
                   ) -> tuple[EventOut, bool]:
        dev = s.scalar(select(Device).where(Device.asset_tag == asset_tag))
        if dev is None:
            raise NotFound(f"no device with asset tag {asset_tag!r}")
        access.check_machine(caller.scope, caller.machine, dev.serial, list(dev.macs or []))
        if body.if_status is not None and dev.status != body.if_status.value:
            raise Conflict(f"{asset_tag} is {dev.status} now, not {body.if_status.value}: someone "
                           "changed it meanwhile; nothing was recorded")
        if body.uid:
            known = s.scalar(select(Event).where(Event.uid == body.uid))
            if known is not None:
                if known.device_id != dev.id or known.type != body.type.value:
                    raise Conflict(f"event uid {body.uid!r} is already used by another event")
                return _event_out(known), False
        new_status, needs_wipe = self._guard(dev, body.type)
        details = dict(body.details)
        if body.type is EventType.wiped:
            details = evidence.keep_certificate(
                details, asset_tag=asset_tag, caller=caller, key=self.station_key,
                point=caller.point or self.settings.default_point)
            # a wipe that left a hidden area or whose erase the drive did not confirm: the
            # previous family's data may still be there, so the device is not clean
            needs_wipe = needs_wipe or details.get("result", "passed") != "passed"
        build_id = body.build_id or (str(details["build_id"]) if "build_id" in details else None)
        if body.type is EventType.graded:
            grade = details.get("grade")
            if not isinstance(grade, str) or not _valid_grade(grade):
                raise Invalid("a 'graded' event needs details.grade, a capital letter like 'B'")
            details.setdefault("previous", dev.grade)
            dev.grade = grade
        when = body.at or utcnow()
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        ev = self._append(s, dev, body.type, caller, when, details, uid=body.uid,
                          technician=body.technician, build_id=build_id)
        dev.status, dev.needs_wipe = new_status.value, needs_wipe
        dev.updated_at = utcnow()
        s.flush()
        return _event_out(ev), True

    def station_key(self) -> Ed25519PrivateKey:
        """The station's signing key, made in the data folder on first use."""
        if self._key is None:
            self._key = signed_certificate.load_or_make_key(self.settings.data_dir)
        return self._key

    def get_device(self, asset_tag: str) -> DeviceWithEvents:
        with self.db.read() as s:
            dev = s.scalar(select(Device).where(Device.asset_tag == asset_tag))
            if dev is None:
                raise NotFound(f"no device with asset tag {asset_tag!r}")
            events = [_event_out(e) for e in s.scalars(
                select(Event).where(Event.device_id == dev.id).order_by(Event.id))]
            return DeviceWithEvents(**_device_fields(dev), events=events,
                                    last_event=events[-1] if events else None)

    def list_devices(self, *, status: str | None = None, point: str | None = None,
                     batch: dt.date | None = None, serial: str | None = None,
                     limit: int = 500, offset: int = 0) -> list[DeviceOut]:
        where = [cond for value, cond in ((status, Device.status == status),
                                          (point, Device.point == point),
                                          (batch, Device.batch_date == batch),
                                          (serial, Device.serial == serial)) if value]
        return self._devices(*where, limit=limit, offset=offset)

    def find_device(self, *, serial: str | None = None, maker: str | None = None,
                    mac: str | None = None) -> DeviceOut | None:
        """The one device with this real serial (with the maker, when known: serials are
        unique per maker only), else the one that has this MAC. None when there is none, or
        when several match (two makers' serial, a USB NIC lent from laptop to laptop): a
        guess could wipe the wrong machine."""
        if serial and not identity.is_placeholder(serial):
            if maker:
                key = identity.derive_identity(serial=serial, baseboard_serial=None, uuid=None,
                                               macs=(), maker=maker).key
                found = self._devices(Device.identity_key == key, limit=2)
            else:
                found = self._devices(Device.serial == serial.strip(), limit=2)
            if len(found) == 1:
                return found[0]
        wanted = identity.clean_mac(mac or "")
        if wanted:
            # macs is a JSON list of strings, so its text holds each MAC in quotes (the same
            # on SQLite and PostgreSQL; no portable JSON-contains operator exists).
            found = self._devices(cast(Device.macs, String).ilike(f'%"{wanted}"%'), limit=2)
            if len(found) == 1:
                return found[0]
        return None

    def search(self, text: str, limit: int = 50) -> list[DeviceOut]:
        """Devices by what a volunteer reads off a laptop or its sticker: the asset tag, the
        serial (any maker's) or a MAC, each matched whole (a database query, not a scan)."""
        text = text.strip()
        if not text:
            return []
        wanted = [Device.asset_tag == text.upper(), Device.serial == text,
                  Device.baseboard_serial == text]
        mac = identity.clean_mac(text)
        if mac:
            wanted.append(cast(Device.macs, String).ilike(f'%"{mac}"%'))
        return self._devices(or_(*wanted), limit=limit)

    def _devices(self, *where: ColumnElement[bool], limit: int, offset: int = 0
                 ) -> list[DeviceOut]:
        """Devices with their last event, in registration order."""
        last = (select(Event.device_id, func.max(Event.id).label("last_id"))
                .group_by(Event.device_id).subquery())
        stmt = (
            select(Device, Event).outerjoin(last, last.c.device_id == Device.id)
            .outerjoin(Event, Event.id == last.c.last_id).where(*where).order_by(Device.id)
            .limit(limit).offset(offset)
        )
        with self.db.read() as s:
            return [DeviceOut(**_device_fields(d), last_event=_event_out(e) if e else None)
                    for d, e in s.execute(stmt).all()]

    def events(self, *, types: set[str] | None = None) -> list[tuple[DeviceOut, EventOut]]:
        """All events (optionally of some types) with their devices, oldest first."""
        stmt = select(Device, Event).join(Event, Event.device_id == Device.id).order_by(Event.id)
        if types:
            stmt = stmt.where(Event.type.in_(types))
        with self.db.read() as s:
            return [(DeviceOut(**_device_fields(d)), _event_out(e))
                    for d, e in s.execute(stmt).all()]

    def last_event_id(self) -> int:
        """The newest event's id: the cockpit's live stream watches it move."""
        with self.db.read() as s:
            return int(s.scalar(select(func.max(Event.id))) or 0)

    def count_devices(self) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(Device)) or 0)

    # -- builds --------------------------------------------------------------------------

    def add_build(self, manifest: dict[str, Any], manifest_sha256: str) -> tuple[BuildOut, bool]:
        build_id, profile = manifest["build_id"], manifest["profile"]
        with self.db.write() as s:
            known = s.get(Build, build_id)
            if known is not None:
                if known.manifest_sha256 != manifest_sha256:
                    raise Conflict(f"build {build_id!r} is already recorded with another "
                                   "manifest; a build id names one build only")
                return _build_out(known), False
            row = Build(build_id=build_id, profile=profile["name"],
                        profile_digest=profile["digest"], manifest_sha256=manifest_sha256,
                        created=manifest["created"], artifacts=manifest["artifacts"],
                        recorded_at=utcnow())
            s.add(row)
            return _build_out(row), True

    def list_builds(self) -> list[BuildOut]:
        with self.db.read() as s:
            return [_build_out(b) for b in s.scalars(select(Build).order_by(Build.recorded_at))]


def _build_out(b: Build) -> BuildOut:
    return BuildOut(build_id=b.build_id, profile=b.profile, profile_digest=b.profile_digest,
                    manifest_sha256=b.manifest_sha256, created=b.created, artifacts=b.artifacts,
                    recorded_at=b.recorded_at)


def _valid_grade(grade: str) -> bool:
    return 1 <= len(grade) <= 2 and grade[0].isupper() and grade[1:] in ("", "+", "-")
