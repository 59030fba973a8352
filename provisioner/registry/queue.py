"""Import of records an offline installer queued on a USB stick (one JSON file per record).

Each file is the POST /devices body plus optional `events`. Files are never moved or
deleted: a malformed one stays for a person to fix, and importing the same folder again
changes nothing, because devices are matched by identity and each queued event gets a uid
derived from the device's identity, its position in the file and its content.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from provisioner.errors import DeelitError
from provisioner.registry.identity import NoIdentityError, derive_identity
from provisioner.registry.schemas import DeviceIn, QueuedRecord
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller

MAX_FILE_BYTES = 1024 * 1024


def canonical(obj: Any) -> str:
    """One text for equal JSON values, whatever their key order: what the event uids hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    events_added: int = 0
    events_known: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


def queued_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*.json") if p.is_file())
    raise DeelitError(f"{path}: no such file or folder; give the queue folder on the USB stick")


def import_queue(store: Store, path: Path, station: str) -> ImportReport:
    report = ImportReport()
    for file in queued_files(path):
        caller = Caller(station, channel=f"imported from a stick's queue ({file.name}) by "
                                         f"`deelit registry import` at station {station}")
        try:
            _import_file(store, file, caller, report)
        except DeelitError as exc:
            report.failed.append((file, str(exc)))
    return report


def _import_file(store: Store, file: Path, caller: Caller, report: ImportReport) -> None:
    if file.stat().st_size > MAX_FILE_BYTES:
        raise DeelitError(f"larger than {MAX_FILE_BYTES} bytes; not a queued record")
    try:
        record = QueuedRecord.model_validate(json.loads(file.read_bytes()))
    except json.JSONDecodeError as exc:
        raise DeelitError(f"not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise DeelitError(f"key {where}: {first['msg']}") from exc
    except UnicodeDecodeError as exc:
        raise DeelitError("not UTF-8 text") from exc
    try:
        ident = derive_identity(serial=record.serial, baseboard_serial=record.baseboard_serial,
                                uuid=record.uuid, macs=record.macs, maker=record.maker)
    except NoIdentityError as exc:
        raise DeelitError(str(exc)) from exc
    device = record.model_dump(exclude={"events"}, exclude_unset=True)
    registered = store.register(DeviceIn.model_validate(device), caller)
    (report.created if registered.created else report.updated).append(registered.asset_tag)
    for index, event in enumerate(record.events):
        if event.uid is None:
            seed = f"{ident.key}|{index}|{canonical(event.model_dump(mode='json'))}"
            event = event.model_copy(update={"uid": "q-" + hashlib.sha256(seed.encode())
                                             .hexdigest()[:40]})
        _, added = store.add_event(registered.asset_tag, event, caller)
        if added:
            report.events_added += 1
        else:
            report.events_known += 1
