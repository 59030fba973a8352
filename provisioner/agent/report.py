"""Register the device with the registry, or queue the record on the stick; never lose it.

One record per agent run: the POST /devices body (inventory, grade) plus the events that
happened (inventoried, graded, wiped with the certificate hash, imaged/verified/ready with the
build id). Every event carries a uid made from the run's id, so sending again after a partial
failure, or importing a queued copy that was also sent, stores nothing twice.

Network errors and 5xx answers are retried with exponential backoff. When the registry stays
unreachable the record goes to the stick's queue folder (written whole: temp file, fsync,
rename, fsync of the folder) for `deelit registry import`; with no stick the agent keeps
trying and does not reboot, so the record is never dropped.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.agent.health import DeviceGrade
from provisioner.agent.inventory import Inventory
from provisioner.errors import DeelitError

Sleep = Callable[[float], None]


def registry_grade(grade: str) -> str:
    """The registry stores one capital letter; a rejected device is 'R'."""
    return "R" if grade == "reject" else grade


def device_body(inv: Inventory, grade: DeviceGrade | None, point: str | None) -> dict[str, Any]:
    """The POST /api/v1/devices body (registry schema DeviceIn): device data only."""
    body: dict[str, Any] = {
        "serial": inv.system_serial,
        "baseboard_serial": inv.baseboard_serial,
        "uuid": inv.uuid,
        "macs": [n.mac for n in inv.macs if n.permanent] or [n.mac for n in inv.macs],
        "maker": inv.maker,
        "model": inv.model,
        "cpu": inv.cpu.model,
        "ram_bytes": inv.ram_bytes,
        "disks": [{"model": d.model, "serial": d.serial, "size_bytes": d.size_bytes,
                   "kind": d.transport or ("hdd" if d.rotational else "ssd")}
                  for d in inv.disks if not d.removable and d.transport != "usb"][:16],
        "battery": ({"health_percent": inv.battery.health_percent,
                     "cycle_count": inv.battery.cycle_count} if inv.battery else None),
    }
    if grade is not None:
        body["grade"] = registry_grade(grade.grade)
    if point:
        body["point"] = point
    return {k: v for k, v in body.items() if v is not None}


@dataclass
class Record:
    run_id: str  # unique per agent run: event uids derive from it
    device: dict[str, Any]
    events: list[dict[str, Any]]

    def add(self, kind: str, *, build_id: str | None = None, **details: Any) -> None:
        event: dict[str, Any] = {"type": kind, "uid": f"{self.run_id}-{kind}",
                                 "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "details": details}
        if build_id:
            event["build_id"] = build_id
        self.events.append(event)

    def queued(self) -> dict[str, Any]:
        """The queue file's content (registry schema QueuedRecord)."""
        return {**self.device, "events": self.events}

    @property
    def key(self) -> str:
        raw = str(self.device.get("serial") or (self.device.get("macs") or ["device"])[0])
        return re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:48]


@dataclass
class Outcome:
    registered: bool
    asset_tag: str | None = None
    queued_at: Path | None = None
    status: str | None = None


class TransientError(Exception):
    """Worth retrying: no route, timeout, 5xx."""


class Reporter:
    def __init__(self, server: str | None, token: str | None, queue_dir: Path | None, *,
                 attempts: int = 6, first_delay: float = 2.0, max_delay: float = 60.0,
                 sleep: Sleep = time.sleep, log: Callable[[str], None] = lambda _: None) -> None:
        self.server = server.rstrip("/") if server else None
        self.token, self.queue_dir = token, queue_dir
        self.attempts, self.first_delay, self.max_delay = attempts, first_delay, max_delay
        self.sleep, self.log = sleep, log

    # -- HTTP ------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.server is not None
        req = urllib.request.Request(
            self.server + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return dict(json.loads(resp.read() or b"{}"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            if exc.code >= 500 or exc.code == 429:
                raise TransientError(f"HTTP {exc.code}: {detail}") from exc
            raise DeelitError(f"the registry refused {path} (HTTP {exc.code}): {detail}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise TransientError(str(getattr(exc, "reason", exc))) from exc

    def _send_once(self, record: Record) -> Outcome:
        out = self._post("/api/v1/devices", record.device)
        tag = str(out["asset_tag"])
        status = out.get("status")
        for event in record.events:
            ev = self._post(f"/api/v1/devices/{tag}/events", event)
            status = ev.get("type", status)
        return Outcome(registered=True, asset_tag=tag, status=str(status))

    def try_once(self, record: Record) -> Outcome | None:
        """One attempt, no retry, no queue: registering early so the station shows the device.
        The full record is delivered at the end all the same (same uids: nothing doubles)."""
        if self.server is None:
            return None
        try:
            return self._send_once(record)
        except (TransientError, DeelitError) as exc:
            self.log(f"early registration skipped ({exc}); the final report retries")
            return None

    # -- the one entry point -----------------------------------------------------------------

    def deliver(self, record: Record, *, forever_without_queue: bool = True) -> Outcome:
        """Send with backoff; then queue on the stick; with no stick keep trying (never drop)."""
        delay, attempt, refused = self.first_delay, 0, None
        while self.server is not None:
            try:
                return self._send_once(record)
            except TransientError as exc:
                attempt += 1
                self.log(f"registry unreachable ({exc}); attempt {attempt}")
                if attempt >= self.attempts and (self.queue_dir is not None
                                                 or not forever_without_queue):
                    break
            except DeelitError as exc:  # a refusal does not heal by retrying: keep the record
                refused = exc
                break
            self.sleep(delay)
            delay = min(delay * 2, self.max_delay)
        if self.queue_dir is None:
            raise DeelitError(f"record of {record.key} not registered and no stick to queue it on"
                              + (f": {refused}" if refused else ""))
        path = self.queue(record)
        if refused is not None:
            raise DeelitError(f"{refused}; the record is kept in {path}")
        return Outcome(registered=False, queued_at=path)

    def queue(self, record: Record) -> Path:
        assert self.queue_dir is not None
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        final = self.queue_dir / f"{record.key}-{record.run_id}.json"
        tmp = final.with_name(f".{final.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps(record.queued(), indent=2).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(self.queue_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself survives a power cut
        finally:
            os.close(dfd)
        return final
