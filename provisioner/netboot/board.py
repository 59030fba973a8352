"""The station's board (machines seen by this run, in memory) and the desk that acts on it.

The desk is what a volunteer does at the station: approve or refuse a waiting machine, approve
every waiting one, arm or disarm a batch, retry a failed one. The JSON routes (http.py) and the
cockpit page (registry/cockpit.py, through its StationPanel protocol) both go through it, so
the page can do nothing the API cannot, and the other way round.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from provisioner.netboot.advice import advice
from provisioner.netboot.approvals import Approvals
from provisioner.netboot.credentials import MachineCredentials
from provisioner.registry.errors import NotFound
from provisioner.registry.identity import is_placeholder
from provisioner.registry.store import Store

BUSY = ("pxe", "booted", "inventory", "grade", "approved", "countdown", "wipe", "install",
        "verify", "report")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass
class MachineState:
    key: str
    stage: str
    action: str | None = None
    percent: float | None = None
    message: str = ""
    serial: str | None = None
    mac: str | None = None
    asset_tag: str | None = None
    maker: str | None = None
    model: str | None = None
    grade: str | None = None
    disks: str | None = None
    ram: str | None = None
    battery: str | None = None
    reasons: str | None = None  # the grade's findings, worst first
    first_seen: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    stage_since: str = field(default_factory=_now)  # when the current stage began


class Board:
    """Machines seen by this station run, in memory: the registry keeps what must last.

    Anyone on the LAN can ask for a boot script with a made-up serial, and each such ask adds a
    row: the board holds at most `capacity` rows, and a new one pushes out the row least
    recently heard of that never got past the boot script (then, if none, the oldest row).
    `version` grows with every change: the cockpit's live stream tells the page when it moves.
    """

    def __init__(self, capacity: int = 256) -> None:
        self._lock = threading.Lock()
        self._machines: dict[str, MachineState] = {}
        self.capacity = capacity
        self.version = 0

    def _make_room(self) -> None:
        rows = sorted(self._machines.values(), key=lambda m: m.updated)
        booted_only = [m for m in rows if m.stage == "pxe"]
        del self._machines[(booted_only or rows)[0].key]

    def update(self, key: str, **changes: Any) -> MachineState:
        with self._lock:
            if key not in self._machines and len(self._machines) >= self.capacity:
                self._make_room()
            state = self._machines.get(key) or MachineState(key=key, stage="pxe")
            if changes.get("stage") not in (None, state.stage):
                state.stage_since = _now()
                if changes["stage"] != "failed":
                    state.percent = None  # a new stage starts its own bar
            for name, value in changes.items():
                if value is not None:
                    setattr(state, name, value)
            state.updated = _now()
            self._machines[key] = state
            self.version += 1
            return state

    def touch(self) -> None:
        """Something the board's rows do not show changed (the batch): the page looks again."""
        with self._lock:
            self.version += 1

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(m) for m in self._machines.values()]

    def find(self, key: str) -> MachineState | None:
        """A row by its key, serial, MAC or asset tag (as a volunteer reads it off the page or
        a sticker)."""
        want = key.strip().lower()
        with self._lock:
            for m in self._machines.values():
                if want in {(v or "").lower() for v in (m.key, m.serial, m.mac, m.asset_tag)}:
                    return m
        return None

    def waiting(self) -> list[MachineState]:
        with self._lock:
            return [m for m in self._machines.values() if m.stage == "waiting"]


class StationDesk:
    """What a volunteer does at the station, for the JSON routes and the cockpit alike."""

    def __init__(self, board: Board, approvals: Approvals, credentials: MachineCredentials,
                 store: Store, default_action: str) -> None:
        self.board, self.approvals, self.credentials = board, approvals, credentials
        self.store, self.default_action = store, default_action
        self._lock = threading.Lock()  # two volunteers at once: one acts, the other sees it

    @property
    def version(self) -> int:
        return self.board.version

    def machines(self) -> list[dict[str, Any]]:
        """The board's rows, each with what the page says of it: a failure's advice, whether
        its serial is a placeholder."""
        rows = self.board.all()
        for row in rows:
            row["advice"] = asdict(advice(row["message"])) if row["stage"] == "failed" else None
            row["serial_placeholder"] = bool(row["serial"]) and is_placeholder(row["serial"])
        return rows

    def batch(self) -> dict[str, Any]:
        return dict(self.approvals.status())

    def counts(self) -> dict[str, int]:
        """Today's machines by where they are (this station run's board)."""
        rows = self.board.all()
        return {"ready": sum(r["stage"] == "done" and r["action"] != "local" for r in rows),
                "busy": sum(r["stage"] in BUSY for r in rows),
                "waiting": sum(r["stage"] == "waiting" for r in rows),
                "failed": sum(r["stage"] == "failed" for r in rows),
                "rejected": sum(r["grade"] == "reject" for r in rows)}

    def approve(self, key: str) -> list[str]:
        """One machine by the key the board shows, its asset tag, or a serial off its sticker
        before it boots. Its disk is wiped and written when it next asks (within seconds)."""
        with self._lock:
            row = self.board.find(key)
            if row is not None:
                self._approve_row(row, "approved at the station")
                return [row.key]
            try:  # an asset tag: the registry's device, by its serial and MACs
                device = self.store.get_device(key)
                keys = [device.serial if not device.serial_placeholder else None, *device.macs]
            except NotFound:
                keys = [key]
            self.approvals.approve(*keys)
            self.credentials.reset(*keys)
            return [key]

    def approve_all(self) -> list[str]:
        with self._lock:
            rows = self.board.waiting()
            for row in rows:
                self._approve_row(row, "approved at the station")
            return [r.key for r in rows]

    def refuse(self, key: str) -> list[str]:
        """The machine reboots to its own disk and is never written by this run. Only a
        machine still waiting (or not yet decided) can be refused: one already approved and
        at work is left alone, and the caller sees its stage."""
        with self._lock:
            row = self.board.find(key)
            if row is None:
                raise NotFound(f"no machine {key!r} on the board")
            if row.stage not in ("pxe", "booted", "inventory", "grade", "waiting", "approved"):
                return []
            self.approvals.refuse(row.key, row.serial, row.mac)
            self.board.update(row.key, stage="refused", action="local",
                              message="refused at the station")
            return [row.key]

    def retry(self, key: str) -> bool:
        """A failed machine, approved again: at its next network boot it gets a new credential
        and starts over. False when it has not failed (someone else already retried it)."""
        with self._lock:
            row = self.board.find(key)
            if row is None:
                raise NotFound(f"no machine {key!r} on the board")
            if row.stage != "failed":
                return False
            self._approve_row(row, "retry: restart the laptop from the network")
            return True

    def arm(self, minutes: float | None, count: int | None) -> dict[str, Any]:
        self.approvals.arm(span=dt.timedelta(minutes=minutes) if minutes else None, count=count)
        self.board.touch()
        return self.batch()

    def disarm(self) -> dict[str, Any]:
        self.approvals.disarm()
        self.board.touch()
        return self.batch()

    def _approve_row(self, row: MachineState, message: str) -> None:
        self.approvals.approve(row.key, row.serial, row.mac)
        self.credentials.reset(row.key, row.serial, row.mac)
        self.board.update(row.key, stage="approved", action=self.default_action, message=message)
