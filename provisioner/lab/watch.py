"""Watching a virtual laptop go through the station: console phases and the progress view.

Pure parts that unit tests feed with station board rows, registry records and console bytes:
`boot_phase` reads the installer's boot off the serial console while the board still says
"pxe"; a `Tracker` keeps one laptop's state and says what changed; `render` draws the table
and `summary` the result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from provisioner.registry.identity import is_placeholder
from provisioner.registry.schemas import DeviceWithEvents
from provisioner.vm import Firmware

DISK_BOOT_MARK = "deelit: loading Linux from UUID"  # the installed system's GRUB, on the console
# The firstboot role's unit in systemd's status lines on the serial console (its description
# is cut to the line's width there, its name is not); the dialog itself is drawn on the
# screen (tty1), which a screenshot shows.
FIRSTBOOT_MARK = "deelit-firstboot.service"
FIRSTBOOT_CREDENTIALS = "deelit.firstboot."  # seeded answers: no dialog, the accounts are made
PERCENT_STAGES = frozenset({"download", "wipe", "install", "verify", "done"})
# The installer's boot, read off the laptop's serial console while the station board still says
# "pxe" (its agent reports from "inventory" on): (console text, stage, message), in boot order.
BOOT_MARKS: tuple[tuple[str, str, str], ...] = (
    ("Linux version", "boot", "the installer's kernel is starting"),
    ("Trying wget", "download", "fetching the installer's filesystem.squashfs"),
    ("Welcome to", "start", "the installer's system is starting"),
)
_SQUASHFS_PERCENT = re.compile(rb"filesystem\.squashfs\s+(\d{1,3})%")


BootPhase = tuple[str, str, float | None]  # stage, message, percent


_RATE = re.compile(r", \d+ MB/s$")


def boot_phase(recent: bytes) -> BootPhase | None:
    """Where the installer's boot is, from the console's recent output: the latest mark wins;
    while live-boot downloads the squashfs, its wget's own percent."""
    best: tuple[int, str, str] | None = None
    for mark, stage, message in BOOT_MARKS:
        pos = recent.rfind(mark.encode())
        if pos >= 0 and (best is None or pos > best[0]):
            best = (pos, stage, message)
    if best is None:
        return None
    percent = None
    if best[1] == "download":
        found = _SQUASHFS_PERCENT.findall(recent[best[0]:])
        percent = float(min(100, int(found[-1]))) if found else 0.0
    return best[1], best[2], percent


@dataclass(frozen=True)
class LaptopSpec:
    serial: str
    mac: str
    firmware: Firmware = "bios"
    # systemd credentials handed to the laptop (SMBIOS type 11), e.g. seeded first-boot answers
    credentials: tuple[tuple[str, str], ...] = ()
    family_data: bool = False  # a pattern on its disk, as a returned laptop's data

    @property
    def seeds_first_boot(self) -> bool:
        return any(name.startswith(FIRSTBOOT_CREDENTIALS) for name, _ in self.credentials)


def clock(seconds: float) -> str:
    """185 -> '3:05'; 3723 -> '1:02:03'."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class Tracker:
    """What is known of one laptop: the station board's row and the registry's record.

    `observe` takes a fresh look and returns the lines worth printing (stage changes, percent
    quarters, registry events, the boot from disk); `render` shows the current state."""

    name: str
    spec: LaptopSpec
    stage: str = "power-on"
    action: str | None = None
    percent: float | None = None
    message: str = "firmware starting, PXE"
    elapsed: float = 0.0
    registered_s: float | None = None
    ready_s: float | None = None
    disk_boot_s: float | None = None
    want_dialog: bool = False  # the image asks first-boot questions and none were seeded
    dialog_s: float | None = None
    screenshot: Path | None = None
    device: DeviceWithEvents | None = None
    failed: str | None = None
    # New to the registry: it waited for approval; whether the registry had a record of it then
    waited_s: float | None = None
    recorded_while_waiting: bool = False
    approved_s: float | None = None
    disk_untouched_while_waiting: bool | None = None  # its family data, checked at approval
    _shown: tuple[str, str] = ("", "")
    _quarter: int = -1
    _events: list[str] = field(default_factory=list)

    @property
    def real_serial(self) -> bool:
        return not is_placeholder(self.spec.serial)

    @property
    def booted(self) -> bool:
        return self.ready_s is not None and self.disk_boot_s is not None

    @property
    def done(self) -> bool:
        return self.booted and (not self.want_dialog or self.dialog_s is not None)

    def dialog_shown(self, elapsed: float, screenshot: Path) -> list[str]:
        """The first-boot dialog is on the laptop's screen (seen in `screenshot`)."""
        if self.dialog_s is not None:
            return []
        self.dialog_s, self.screenshot, self.elapsed = elapsed, screenshot, elapsed
        return [self._say(elapsed, "first boot", f"the first-boot dialog is on the screen: {screenshot}")]

    def waiting(self, device: DeviceWithEvents | None) -> bool:
        """On the board as waiting for approval and not yet approved: notes that it waited,
        and whether the registry held anything of it meanwhile (it must not)."""
        if self.stage != "waiting" or self.approved_s is not None:
            return False
        self.waited_s = self.waited_s if self.waited_s is not None else self.elapsed
        self.recorded_while_waiting |= device is not None
        return True

    def approved(self, elapsed: float) -> str:
        self.approved_s = elapsed
        return self._say(elapsed, "approved", "approved at the station, as a volunteer does on "
                         "the page or with `deelit station approve`")

    def matches(self, row: Mapping[str, Any]) -> bool:
        mac = self.spec.mac.lower()
        if row.get("key") == mac or str(row.get("mac") or "").lower() == mac:
            return True
        return self.real_serial and self.spec.serial in (row.get("key"), row.get("serial"))

    def _say(self, elapsed: float, what: str, text: str) -> str:
        return f"{clock(elapsed):>7}  {self.spec.serial}  {what:<10} {text}".rstrip()

    def observe(self, elapsed: float, rows: Sequence[Mapping[str, Any]],
                device: DeviceWithEvents | None, disk_booted: bool,
                boot: BootPhase | None = None) -> list[str]:
        """`boot`: the installer's boot phase from the console, shown while the board says
        "pxe" for an install (not for the second PXE boot, sent to the local disk)."""
        self.elapsed = elapsed
        lines: list[str] = []
        mine = [r for r in rows if self.matches(r)]
        if mine:
            row = max(mine, key=lambda r: str(r.get("updated") or ""))
            self.stage = str(row.get("stage") or self.stage)
            self.action = row.get("action") or self.action
            self.message = str(row.get("message") or "")
            pct = row.get("percent")
            self.percent = float(pct) if pct is not None and self.stage in PERCENT_STAGES else None
            if boot is not None and self.stage == "pxe" and self.action != "local":
                self.stage, self.message, self.percent = boot
            # a new stage or message gets a line; the agent's running MB/s alone does not
            steady = _RATE.sub("", self.message)
            if (self.stage, steady) != self._shown:
                self._shown = (self.stage, steady)
                self._quarter = -1 if self.percent is None else int(self.percent // 25)
                text = self.message
                if self.stage == "pxe" and self.action:
                    text = f"action {self.action}" + (f": {self.message}" if self.message else "")
                lines.append(self._say(elapsed, self.stage, text))
            elif self.percent is not None and int(self.percent // 25) > self._quarter:
                self._quarter = int(self.percent // 25)
                lines.append(self._say(elapsed, self.stage, f"{self.percent:3.0f}%  {self.message}"))
            if self.stage == "failed":
                self.failed = self.message or "the agent reported a failure"
        if device is not None:
            self.device = device
            seen = {*self._events, "registered"}  # each kind once: the record says the rest
            new = ", ".join(dict.fromkeys(e.type for e in device.events[len(self._events):]
                                          if e.type not in seen))
            self._events = [e.type for e in device.events]
            text = new
            if self.registered_s is None:
                self.registered_s = elapsed
                text = (f"registered as {device.asset_tag} (grade {device.grade or '-'}, by "
                        f"{device.identity_source})" + (f": {new}" if new else ""))
            if device.status == "ready" and self.ready_s is None:
                self.ready_s = elapsed
                text += ("; " if text else "") + f"{device.asset_tag} is ready"
            if text:
                lines.append(self._say(elapsed, "registry", text))
        if disk_booted and self.disk_boot_s is None:
            self.disk_boot_s = elapsed
            lines.append(self._say(elapsed, "disk boot", "rebooted into its disk (GRUB: loading Linux)"))
        return lines


def _bar(percent: float | None, width: int = 20) -> Text:
    if percent is None:
        return Text("-", style="dim")
    filled = round(width * percent / 100)
    return Text("█" * filled + "░" * (width - filled) + f" {percent:3.0f}%")


def render(trackers: Sequence[Tracker]) -> Table:
    """The live view: one row per laptop."""
    table = Table(expand=False, box=None, padding=(0, 1), header_style="bold")
    for col in ("laptop", "firmware", "time", "stage", "progress", "milestones", "message"):
        table.add_column(col, no_wrap=col != "message", overflow="fold")
    for t in trackers:
        if t.done:
            stage = Text("imaged", style="bold green")
        elif t.failed:
            stage = Text("failed", style="bold red")
        else:
            stage = Text(t.stage, style="cyan")
        marks = [f"{what} {clock(s)}" for what, s in (("registered", t.registered_s),
                                                      ("ready", t.ready_s),
                                                      ("disk", t.disk_boot_s),
                                                      ("dialog", t.dialog_s)) if s is not None]
        table.add_row(t.spec.serial, t.spec.firmware, clock(t.elapsed), stage, _bar(t.percent),
                      " · ".join(marks) or "-", t.message)
    return table


@dataclass(frozen=True)
class Result:
    name: str
    spec: LaptopSpec
    registered_s: float
    ready_s: float
    disk_boot_s: float
    device: DeviceWithEvents
    dialog_s: float | None = None  # power-on -> the first-boot dialog on the screen
    screenshot: Path | None = None  # of that dialog
    waited_s: float | None = None  # power-on -> waiting for approval at the station
    recorded_while_waiting: bool = False  # the registry had it before approval (it must not)
    approved_s: float | None = None  # power-on -> approved
    disk_untouched_while_waiting: bool | None = None  # family data intact at approval


def summary(result: Result) -> list[tuple[str, str]]:
    """The registry record's gist and the timings, as (label, value) rows."""
    dev = result.device
    wiped = next((e for e in dev.events if e.type == "wiped"), None)
    imaged = next((e for e in dev.events if e.type == "imaged"), None)
    wipe = "-"
    if wiped is not None:
        d = wiped.details
        how = ", ".join(str(d[k]) for k in ("method", "nist_category") if d.get(k))
        wipe = f"{d.get('certificate_sha256', '-')}" + (f" ({how})" if how else "")
    return [
        *([("power-on → waiting for approval", clock(result.waited_s))]
          if result.waited_s is not None else []),
        *([("power-on → approved", clock(result.approved_s))]
          if result.approved_s is not None else []),
        ("power-on → registered", clock(result.registered_s)),
        ("power-on → ready", clock(result.ready_s)),
        ("power-on → disk boot", clock(result.disk_boot_s)),
        *([("power-on → first-boot dialog", clock(result.dialog_s))] if result.dialog_s else []),
        *([("screenshot", str(result.screenshot))] if result.screenshot else []),
        ("serial", dev.serial or "-"),
        ("asset tag", dev.asset_tag),
        ("status", dev.status),
        ("grade", dev.grade or "-"),
        ("build id", (imaged.build_id if imaged else None) or "-"),
        ("wipe certificate sha256", wipe),
    ]


class ConsoleWatch:
    """Follows a growing console log, reading only what is new: whether a mark has appeared,
    the recent output (for `boot_phase`), and the boot phase last seen."""

    RECENT = 64 << 10

    def __init__(self, path: Path, mark: str) -> None:
        self.path, self.mark = path, mark.encode()
        self.offset, self.recent, self.found = 0, b"", False
        self.phase: BootPhase | None = None

    def check(self) -> bool:
        if self.found or not self.path.exists():
            return self.found
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        window = self.recent[-len(self.mark):] + data
        self.found = self.mark in window
        self.recent = (self.recent + data)[-self.RECENT:]
        self.phase = boot_phase(self.recent) or self.phase  # a mark scrolled away: keep the last
        return self.found


def shows_whiptail_dialog(png: Path) -> bool:
    """Whether a screenshot shows a whiptail dialog on the text console: newt's blue screen
    (VGA blue, 0/0/170) around a grey box (170/170/170), as the firstboot role draws it."""
    from PIL import Image  # only the lab judges screens

    with Image.open(png) as shot:
        raw = shot.convert("RGB").resize((160, 100)).tobytes()
    pixels = [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3)]
    blue = sum(1 for r, g, b in pixels if r < 40 and g < 40 and b > 140) / len(pixels)
    grey = sum(1 for r, g, b in pixels if 150 < r < 200 and abs(r - g) < 20 and abs(g - b) < 20) / len(pixels)
    return blue > 0.3 and grey > 0.05
