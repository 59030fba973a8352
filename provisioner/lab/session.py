"""`deelit demo`'s session: the imaging station end to end on this one machine.

A private café in network namespaces (lab/cafe.py): a plain DHCP server for the router, `deelit
serve` in proxy-DHCP mode beside it, and virtual laptops (lab/laptop.py: QEMU TCG, blank NVMe
disk, a made-up SMBIOS serial) that PXE-boot, are inventoried, graded, wiped, imaged and
registered, and reboot into their disk. The station page is carried onto 127.0.0.1.

`Session` is the one path: `deelit demo` and the end-to-end tests both go through `run`; what
it watches is in lab/watch.py.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx

from provisioner.errors import DeelitError
from provisioner.formats import manifest as fm
from provisioner.lab.cafe import STATION_IP, STATION_PORT, Lan, last_line, ssh_banner
from provisioner.lab.laptop import Laptop, StationProcess
from provisioner.lab.watch import (
    DISK_BOOT_MARK,
    FIRSTBOOT_MARK,
    ConsoleWatch,
    LaptopSpec,
    Result,
    Tracker,
    clock,
    shows_whiptail_dialog,
)
from provisioner.vm import OVMF, OVMF_DIR, Firmware

FIRMWARES: tuple[str, ...] = ("bios", "uefi")
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
                 poll_every: float = 2.0, approve: bool = True,
                 hold_approval: float = 0.0) -> None:
        """`approve`: play the volunteer who approves each of its laptops once the station
        lists it as waiting (the station's rule for machines new to the registry), after
        `hold_approval` seconds of waiting (its disk and the registry are checked meanwhile)."""
        self.image_dir, self.installer_dir = image_dir.absolute(), installer_dir.absolute()
        self.view: View = view or PrintView()
        self.logs, self.want_port, self.ssh_pubkey = logs, page_port, ssh_pubkey
        self.tag, self.station_args, self.poll_every = tag, station_args, poll_every
        self.approve, self.hold_approval = approve, hold_approval
        self.lan: Lan | None = None
        self.station: StationProcess | None = None
        self.token = ""
        self.page_port = 0
        self.laptops: list[Laptop] = []
        self.trackers: list[Tracker] = []
        self._consoles: dict[str, ConsoleWatch] = {}
        self._firstboot: dict[str, ConsoleWatch] = {}
        self.asks_first_boot = False  # the image has the firstboot role
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
        return f"http://127.0.0.1:{self.page_port}/#token={self.token}"

    def start(self) -> None:
        for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
            if not (self.installer_dir / name).is_file():
                raise DeelitError(f"{self.installer_dir / name}: missing; build the installer "
                                  "(deelit build installer)")
        if not any(self.image_dir.glob("*.img.zst")):
            raise DeelitError(f"{self.image_dir}: no disk image (NAME.img.zst); build a profile "
                              "with outputs.disk (deelit build pupil)")
        roles = fm.read(self.image_dir / fm.FILENAME).profile.resolved.get("roles", [])
        self.asks_first_boot = any(r.get("name") == "firstboot" for r in roles)
        if self.logs is not None:  # a screenshot of an earlier run must not pass for this one's
            for old in [*self.logs.glob("laptop*-firstboot.png"), *self.logs.glob("laptop*-waiting.png")]:
                old.unlink()
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
                            ssh_pubkey=self.ssh_pubkey, credentials=dict(spec.credentials),
                            family_data=spec.family_data)
            laptop.power_on()
            self.laptops.append(laptop)
            self.trackers.append(Tracker(name, spec, want_dialog=self.asks_first_boot
                                         and not spec.seeds_first_boot))
            self._consoles[name] = ConsoleWatch(laptop.console, DISK_BOOT_MARK)
            self._firstboot[name] = ConsoleWatch(laptop.console, FIRSTBOOT_MARK)
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

    def station_call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A station-token call through the loopback relay, as the station page makes it."""
        resp = httpx.request(method, f"http://127.0.0.1:{self.page_port}{path}", json=body,
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=15)
        resp.raise_for_status()
        return resp.json()

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
                if self.approve and tracker.waiting(device) and self._held(lt, tracker):
                    self._screenshot(lt, "waiting")  # what its screen says while it waits
                    if lt.family_data:
                        tracker.disk_untouched_while_waiting = lt.family_data_intact()
                    self.station_call("POST", "/station/approve", {"key": lt.serial if
                                      tracker.real_serial else lt.mac})
                    self.view.line(tracker.approved(time.monotonic() - lt.started_at))
                if tracker.booted and tracker.want_dialog and self._firstboot[lt.name].check():
                    for text in self._look_for_dialog(lt, tracker):
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
                               t.disk_boot_s or 0.0, t.device,  # type: ignore[arg-type]
                               t.dialog_s, t.screenshot, t.waited_s, t.recorded_while_waiting,
                               t.approved_s, t.disk_untouched_while_waiting)
                        for t in self.trackers]
            if time.monotonic() - started > timeout:
                late = [t for t in self.trackers if not t.done]
                raise DeelitError(
                    f"{', '.join(t.spec.serial for t in late)}: not imaged and booted from disk "
                    f"within {clock(timeout)} (stage {late[0].stage}: {late[0].message or '-'}; "
                    f"console: {last_line(self.laptops[self.trackers.index(late[0])].console_text())})"
                    f"{self._where()}")
            time.sleep(self.poll_every)

    def _held(self, laptop: Laptop, tracker: Tracker) -> bool:
        """Whether it has waited `hold_approval` seconds; says so once when the hold starts."""
        waited = time.monotonic() - laptop.started_at - (tracker.waited_s or 0.0)
        if self.hold_approval and tracker.waited_s is not None and waited < self.poll_every:
            self.view.line(f"{clock(tracker.elapsed):>7}  {laptop.serial}  waiting    "
                           f"the volunteer looks at it for {clock(self.hold_approval)} first")
        return waited >= self.hold_approval

    def _screenshot(self, laptop: Laptop, what: str) -> Path | None:
        png = (self.logs or laptop.workdir) / f"{laptop.name}-{what}.png"
        try:
            return laptop.screenshot(png)
        except (OSError, RuntimeError, ConnectionError):
            return None  # QEMU busy: the run goes on without this picture

    def _look_for_dialog(self, laptop: Laptop, tracker: Tracker) -> list[str]:
        """The unit has started: a screenshot shows whether its dialog is drawn yet."""
        folder = self.logs or laptop.workdir
        png = folder / f"{laptop.name}-firstboot.png"
        try:
            laptop.screenshot(png)
        except (OSError, RuntimeError, ConnectionError):
            return []  # QEMU busy or gone: the next round looks again, or the liveness check says
        if not shows_whiptail_dialog(png):
            return []
        return tracker.dialog_shown(time.monotonic() - laptop.started_at, png)

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
        after: Callable[[Session, list[Result]], None] | None = None,
        station_args: list[str] | None = None, approve: bool = True,
        hold_approval: float = 0.0) -> list[Result]:
    """The demo's path: station up, page on loopback, laptops on, watched to their disk boot.

    `on_page` runs once the page is reachable (print its URL); `after` runs with the results
    while everything still runs (SSH checks, --keep)."""
    with Session(image_dir, installer_dir, view=view, logs=logs, page_port=page_port,
                 ssh_pubkey=ssh_pubkey, station_args=station_args, approve=approve,
                 hold_approval=hold_approval) as session:
        if on_page:
            on_page(session)
        session.power_on(specs)
        results = session.watch(timeout)
        if after:
            after(session, results)
        return results
