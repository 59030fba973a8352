"""`deelit demo`: the imaging station end to end on this one machine.

A private café in network namespaces (provisioner/netboot/lab.py): a plain DHCP server for the
router, `deelit serve` in proxy-DHCP mode beside it, and virtual laptops (QEMU TCG, blank NVMe
disk, a made-up SMBIOS serial) that PXE-boot, are inventoried, graded, wiped, imaged and
registered, and reboot into their disk. The station page is carried onto 127.0.0.1.

`Session` is the one path: `deelit demo` and the end-to-end tests both go through `run`. The
watching is split into pure parts (`Tracker`, `render`, `summary`) that unit tests feed with
station board rows and registry records.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from rich.table import Table
from rich.text import Text

from provisioner.errors import DeelitError
from provisioner.netboot.lab import (
    STATION_IP,
    STATION_PORT,
    Lan,
    Laptop,
    StationProcess,
    last_line,
    ssh_banner,
)
from provisioner.registry.identity import is_placeholder
from provisioner.registry.schemas import DeviceWithEvents
from provisioner.vm import OVMF, OVMF_DIR, Firmware

DISK_BOOT_MARK = "deelit: loading Linux from UUID"  # the installed system's GRUB, on the console
FIRMWARES: tuple[str, ...] = ("bios", "uefi")
PERCENT_STAGES = frozenset({"download", "wipe", "install", "verify", "done"})
# The installer's boot, read off the laptop's serial console while the station board still says
# "pxe" (its agent reports from "inventory" on): (console text, stage, message), in boot order.
BOOT_MARKS: tuple[tuple[str, str, str], ...] = (
    ("Linux version", "boot", "the installer's kernel is starting"),
    ("Trying wget", "download", "fetching the installer's filesystem.squashfs"),
    ("Welcome to", "start", "the installer's system is starting"),
)
_SQUASHFS_PERCENT = re.compile(rb"filesystem\.squashfs\s+(\d{1,3})%")
# command -> the Debian package that brings it (all in host-packages.txt, so `make setup`)
HOST_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "dnsmasq": "dnsmasq-base", "ip": "iproute2"}
_SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/+-]{0,62}[A-Za-z0-9.]$")


# -- arguments and refusals ------------------------------------------------------------------


def check_firmware(value: str) -> Firmware:
    if value not in FIRMWARES:
        raise DeelitError(f"--firmware: {value!r} is not one of {', '.join(FIRMWARES)}")
    return value  # type: ignore[return-value]


def check_serial(value: str) -> str:
    """A made-up SMBIOS serial: 2-64 characters, letters and digits with . _ : / + - and
    spaces inside (what a label printer and the registry take without surprises)."""
    if not _SERIAL_RE.fullmatch(value):
        raise DeelitError(f"--serial: {value!r} is not a usable serial (2-64 characters: letters, "
                          "digits, and . _ : / + - or spaces inside)")
    return value


def check_timeout(minutes: float) -> float:
    if not minutes > 0:
        raise DeelitError(f"--timeout: {minutes} is not a number of minutes above 0")
    return minutes * 60


def check_page_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise DeelitError(f"--page-port: {port} is not a port (1-65535, or 0 for any free one)")
    return port


def random_serial(rng: random.Random | None = None) -> str:
    """DEMO- and six characters nobody misreads on a label (no 0/O, 1/I)."""
    rng = rng or random.SystemRandom()
    return "DEMO-" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6))


def random_mac(rng: random.Random | None = None) -> str:
    """A MAC of the documentation range of RFC 7042 (00:00:5e:00:53:xx). Like a laptop's
    burnt-in MAC it is universally administered, so `--serial` with a placeholder registers
    under the MAC; QEMU's own 52:54:00 range is local, and the registry refuses it as an
    identity."""
    rng = rng or random.SystemRandom()
    return f"00:00:5e:00:53:{rng.randrange(256):02x}"


def check_host(firmware: str, *, euid: int | None = None,
               which: Callable[[str], str | None] = shutil.which,
               exists: Callable[[Path], bool] = Path.exists) -> None:
    """Refuses, in one line each, what would fail minutes later: not root, missing tools."""
    if (os.geteuid() if euid is None else euid) != 0:
        raise DeelitError("deelit demo needs root: it creates network namespaces and TAP ports and "
                          "runs dnsmasq (run it as root: sudo make demo)")
    missing = [f"{cmd} (Debian package {pkg})" for cmd, pkg in HOST_TOOLS.items() if which(cmd) is None]
    if missing:
        raise DeelitError(f"missing {', '.join(missing)}: run make setup")
    if not exists(Path("/dev/net/tun")):
        raise DeelitError("/dev/net/tun is missing: QEMU needs it for the laptop's TAP port "
                          "(modprobe tun)")
    if firmware != "bios":
        needed = [OVMF_DIR / name for name in OVMF[firmware]]
        absent = [str(p) for p in needed if not exists(p)]
        if absent:
            raise DeelitError(f"--firmware {firmware}: {', '.join(absent)} missing "
                              "(Debian package ovmf: run make setup)")


# -- watching one laptop ---------------------------------------------------------------------

BootPhase = tuple[str, str, float | None]  # stage, message, percent


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
    device: DeviceWithEvents | None = None
    failed: str | None = None
    _shown: tuple[str, str] = ("", "")
    _quarter: int = -1
    _events: list[str] = field(default_factory=list)

    @property
    def real_serial(self) -> bool:
        return not is_placeholder(self.spec.serial)

    @property
    def done(self) -> bool:
        return self.ready_s is not None and self.disk_boot_s is not None

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
            if (self.stage, self.message) != self._shown:
                self._shown = (self.stage, self.message)
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
                                                      ("disk", t.disk_boot_s)) if s is not None]
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
        ("power-on → registered", clock(result.registered_s)),
        ("power-on → ready", clock(result.ready_s)),
        ("power-on → disk boot", clock(result.disk_boot_s)),
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


# -- the session -----------------------------------------------------------------------------


class View(Protocol):
    def line(self, text: str) -> None: ...

    def update(self, trackers: Sequence[Tracker]) -> None: ...


class PrintView:
    """Lines on stdout, no live table (tests, logs)."""

    def line(self, text: str) -> None:
        print(text, flush=True)

    def update(self, trackers: Sequence[Tracker]) -> None:
        pass


LOG_NAMES = ("station.log", "router.log", "dnsmasq.log")


class Session:
    """The LAN, the station and its page on 127.0.0.1, and the laptops; all gone on close."""

    def __init__(self, image_dir: Path, installer_dir: Path, *, view: View | None = None,
                 logs: Path | None = None, page_port: int = 0, ssh_pubkey: str | None = None,
                 tag: str | None = None, station_args: list[str] | None = None,
                 poll_every: float = 2.0) -> None:
        self.image_dir, self.installer_dir = image_dir.absolute(), installer_dir.absolute()
        self.view: View = view or PrintView()
        self.logs, self.want_port, self.ssh_pubkey = logs, page_port, ssh_pubkey
        self.tag, self.station_args, self.poll_every = tag, station_args, poll_every
        self.lan: Lan | None = None
        self.station: StationProcess | None = None
        self.token = ""
        self.page_port = 0
        self.laptops: list[Laptop] = []
        self.trackers: list[Tracker] = []
        self._consoles: dict[str, ConsoleWatch] = {}
        self._rows: list[dict[str, Any]] = []

    def __enter__(self) -> Session:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.page_port}/station#token={self.token}"

    def start(self) -> None:
        for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
            if not (self.installer_dir / name).is_file():
                raise DeelitError(f"{self.installer_dir / name}: missing; build the installer "
                                  "(deelit build installer)")
        if not any(self.image_dir.glob("*.img.zst")):
            raise DeelitError(f"{self.image_dir}: no disk image (NAME.img.zst); build a profile "
                              "with outputs.disk (deelit build ci)")
        self.view.line("starting the café: router (plain DHCP), station (proxy-DHCP, TFTP, HTTP)…")
        self.lan = Lan(self.tag)
        self.lan.up()
        self.station = StationProcess(self.lan, self.lan.dir / "station-data", self.image_dir,
                                      self.installer_dir, self.station_args)
        self.station.wait_ready(timeout=900)  # prepares (unpacks) the disk image first
        self.token = self.station.token()
        try:
            self.page_port = self.lan.relay(STATION_IP, STATION_PORT, self.want_port)
        except OSError as exc:
            if not self.want_port:
                raise DeelitError(f"no loopback port for the station page: {exc}") from exc
            self.page_port = self.lan.relay(STATION_IP, STATION_PORT, 0)
            self.view.line(f"127.0.0.1:{self.want_port} is taken ({exc.strerror}); "
                           f"the page is on port {self.page_port}")

    def power_on(self, specs: Sequence[LaptopSpec]) -> list[Tracker]:
        assert self.lan is not None, "start() first"
        for spec in specs:
            name = f"laptop{len(self.laptops) + 1}"
            laptop = Laptop(self.lan, name, spec.serial, spec.mac, spec.firmware,
                            ssh_pubkey=self.ssh_pubkey)
            laptop.power_on()
            self.laptops.append(laptop)
            self.trackers.append(Tracker(name, spec))
            self._consoles[name] = ConsoleWatch(laptop.console, DISK_BOOT_MARK)
            self.view.line(f"{clock(0):>7}  {spec.serial}  power-on   {spec.firmware}, MAC {spec.mac}, "
                           "blank 64 GiB NVMe disk")
        return self.trackers[-len(specs):]

    def board(self) -> list[dict[str, Any]]:
        """The station board's rows (what the page shows), through the loopback relay."""
        try:
            resp = httpx.get(f"http://127.0.0.1:{self.page_port}/station/machines",
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
            if resp.status_code == 200:
                self._rows = list(resp.json())
        except (httpx.HTTPError, ValueError):
            pass  # the previous rows stand; the registry is the source of truth
        return self._rows

    def _where(self) -> str:
        return f"; logs: {self.logs}" if self.logs else ""

    def watch(self, timeout: float) -> list[Result]:
        """Until every laptop is ready in the registry and has booted its disk."""
        assert self.station is not None and self.laptops, "power_on() first"
        started = min(lt.started_at for lt in self.laptops)
        while True:
            if not self.station.alive():
                raise DeelitError(f"deelit serve stopped: {last_line(self.station.log_text())}"
                                  f"{self._where()}")
            rows = self.board()
            for lt, tracker in zip(self.laptops, self.trackers, strict=True):
                if tracker.done:
                    continue
                device = (self.station.device(serial=lt.serial) if tracker.real_serial
                          else self.station.device(mac=lt.mac))
                console = self._consoles[lt.name]
                disk = console.check()
                for text in tracker.observe(time.monotonic() - lt.started_at, rows, device, disk,
                                            console.phase):
                    self.view.line(text)
                if tracker.failed:
                    raise DeelitError(f"{lt.serial}: the agent failed: {tracker.failed}{self._where()}")
                if not lt.alive():
                    raise DeelitError(f"{lt.serial}: QEMU stopped ({lt.proc.returncode if lt.proc else '?'}"
                                      f") at stage {tracker.stage}; console: "
                                      f"{last_line(lt.console_text())}{self._where()}")
            self.view.update(self.trackers)
            if all(t.done for t in self.trackers):
                return [Result(t.name, t.spec, t.registered_s or 0.0, t.ready_s or 0.0,
                               t.disk_boot_s or 0.0, t.device)  # type: ignore[arg-type]
                        for t in self.trackers]
            if time.monotonic() - started > timeout:
                late = [t for t in self.trackers if not t.done]
                raise DeelitError(
                    f"{', '.join(t.spec.serial for t in late)}: not imaged and booted from disk "
                    f"within {clock(timeout)} (stage {late[0].stage}: {late[0].message or '-'}; "
                    f"console: {last_line(self.laptops[self.trackers.index(late[0])].console_text())})"
                    f"{self._where()}")
            time.sleep(self.poll_every)

    def ssh_port(self, tracker: Tracker, timeout: float) -> int:
        """A loopback port reaching the laptop's SSH, following its newest router lease."""
        assert self.lan is not None
        laptop = self.laptops[self.trackers.index(tracker)]
        deadline = time.monotonic() + timeout
        target, port = "", 0
        while time.monotonic() < deadline:
            address = self.lan.leases().get(laptop.mac.lower())
            if address and address != target:
                target, port = address, self.lan.relay(address, 22)
            if port and ssh_banner(port):
                return port
            if not laptop.alive():
                raise DeelitError(f"{laptop.serial}: QEMU stopped while waiting for SSH{self._where()}")
            time.sleep(5)
        raise DeelitError(f"{laptop.serial}: no SSH on its router lease ({target or 'none'}) within "
                          f"{clock(timeout)}{self._where()}")

    def save_logs(self, dest: Path) -> None:
        if self.lan is None or not self.lan.dir.exists():
            return
        dest.mkdir(parents=True, exist_ok=True)
        for old in [*dest.glob("laptop*-console.log"), *dest.glob("laptop*-qemu.log"),
                    *(dest / n for n in LOG_NAMES)]:
            old.unlink(missing_ok=True)
        sources = {"station.log": self.lan.dir / "station.log",
                   "router.log": self.lan.dir / "router.log",
                   "dnsmasq.log": self.lan.dir / "station-data" / "dnsmasq.log"}
        for lt in self.laptops:
            sources[f"{lt.name}-console.log"] = lt.console
            sources[f"{lt.name}-qemu.log"] = lt.workdir / "qemu.log"
        for name, src in sources.items():
            if src.is_file():
                shutil.copyfile(src, dest / name)

    def close(self) -> None:
        """Everything stops and goes, whatever failed before: QEMU, station, router, namespaces.
        A second Ctrl-C while this runs is ignored, so nothing is left half torn down."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            self._close()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)

    def _close(self) -> None:
        try:
            for lt in self.laptops:
                lt.power_off()
            if self.logs is not None:
                self.save_logs(self.logs)
        finally:
            try:
                if self.station is not None:
                    self.station.close()
            finally:
                if self.lan is not None:
                    self.lan.down()
                self.lan = None


def run(specs: Sequence[LaptopSpec], image_dir: Path, installer_dir: Path, *,
        view: View | None = None, logs: Path | None = None, page_port: int = 0,
        ssh_pubkey: str | None = None, timeout: float = 3600,
        on_page: Callable[[Session], None] | None = None,
        after: Callable[[Session, list[Result]], None] | None = None) -> list[Result]:
    """The demo's path: station up, page on loopback, laptops on, watched to their disk boot.

    `on_page` runs once the page is reachable (print its URL); `after` runs with the results
    while everything still runs (SSH checks, --keep)."""
    with Session(image_dir, installer_dir, view=view, logs=logs, page_port=page_port,
                 ssh_pubkey=ssh_pubkey) as session:
        if on_page:
            on_page(session)
        session.power_on(specs)
        results = session.watch(timeout)
        if after:
            after(session, results)
        return results
