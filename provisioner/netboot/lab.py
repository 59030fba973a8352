"""A café on this one machine, for `deelit demo`, the end-to-end tests and the bench.

Network namespaces: a bridge (the switch), a plain DHCP server (the café's router), a namespace
for the station running `deelit serve`, and TAP ports for QEMU laptops (TCG, a blank NVMe disk,
a made-up SMBIOS serial). Nothing leaves these namespaces, except through a TCP relay from the
host's loopback into the LAN (Python 3.11 has no os.setns: ctypes), which carries the station
page and a laptop's SSH to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml

from provisioner.errors import DeelitError
from provisioner.registry.schemas import DeviceWithEvents
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.vm import OVMF, OVMF_DIR, Firmware, smbios_value

SUBNET = "192.168.77"
ROUTER_IP, STATION_IP, LAN_IP = f"{SUBNET}.1", f"{SUBNET}.2", f"{SUBNET}.3"
STATION_PORT = 8080
CLONE_NEWNET = 0x40000000
DEELIT = Path(sys.executable).with_name("deelit")
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def ip(*args: str) -> None:
    try:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise DeelitError("`ip` is not installed: install the Debian package iproute2") from None
    except subprocess.CalledProcessError as exc:
        raise DeelitError(f"`ip {' '.join(args)}` failed: {exc.stderr.strip()}") from None


def deelit_argv() -> list[str]:
    """How to start this same deelit (the venv's console script, else this interpreter)."""
    return [str(DEELIT)] if DEELIT.exists() else [sys.executable, "-m", "provisioner.cli"]


class Lan:
    def __init__(self, tag: str | None = None, next_server: str | None = None) -> None:
        self.next_server = next_server
        tag = tag or f"{os.getpid() % 100000}"
        self.router_ns, self.station_ns, self.lan_ns = (f"dlt{tag}{x}" for x in "rsl")
        self.dir = Path(tempfile.mkdtemp(prefix="deelit-lan-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.taps: list[str] = []
        self._relays: list[socket.socket] = []
        self._made: list[str] = []

    # -- setup / teardown ------------------------------------------------------------------

    def __enter__(self) -> Lan:
        try:
            self.up(next_server=self.next_server)
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self, router: bool = True, next_server: str | None = None) -> None:
        for ns in (self.lan_ns, self.router_ns, self.station_ns):
            ip("netns", "add", ns)
            self._made.append(ns)  # only what this Lan made is deleted again
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.lan_ns, "link", "add", "br0", "type", "bridge", "stp_state", "0",
           "forward_delay", "0")
        ip("-n", self.lan_ns, "addr", "add", f"{LAN_IP}/24", "dev", "br0")
        ip("-n", self.lan_ns, "link", "set", "br0", "up")
        for ns, dev, addr in ((self.router_ns, "rt0", ROUTER_IP), (self.station_ns, "st0", STATION_IP)):
            ip("-n", self.lan_ns, "link", "add", f"{dev}p", "type", "veth", "peer", "name", dev,
               "netns", ns)
            ip("-n", self.lan_ns, "link", "set", f"{dev}p", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        if router:
            self.start_router(next_server)

    def start_router(self, next_server: str | None = None) -> None:
        """The café's router: a plain dnsmasq DHCP server handing out .100-.150.

        `next_server` reconfigures it to name a TFTP server (what proxy-DHCP is there to avoid;
        only for the Secure Boot diagnosis)."""
        self.popen(self.router_ns, [
            "dnsmasq", "--keep-in-foreground", "--port=0", "--interface=rt0", "--bind-interfaces",
            f"--dhcp-range={SUBNET}.100,{SUBNET}.150,255.255.255.0,1h",
            f"--dhcp-option=option:router,{ROUTER_IP}", "--dhcp-authoritative",
            f"--dhcp-leasefile={self.dir / 'router.leases'}", f"--pid-file={self.dir / 'router.pid'}",
            "--log-dhcp", "--log-facility=-",
            *([f"--dhcp-boot=shimx64.efi,,{next_server}"] if next_server else []),
        ], log=self.dir / "router.log")

    def popen(self, ns: str, argv: list[str], log: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = (log or self.dir / f"proc{len(self.procs)}.log").open("ab")
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)  # Ctrl-C reaches us, we stop them
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def run(self, ns: str, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def add_tap(self, name: str) -> str:
        ip("-n", self.lan_ns, "tuntap", "add", "dev", name, "mode", "tap")
        ip("-n", self.lan_ns, "link", "set", name, "master", "br0", "up")
        self.taps.append(name)
        return name

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()

    def down(self) -> None:
        for s in self._relays:
            with contextlib.suppress(OSError):
                s.close()
        for proc in reversed(self.procs):
            self.stop(proc)
        for ns in self._made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._made.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- what the router saw -----------------------------------------------------------------

    def leases(self) -> dict[str, str]:
        """MAC -> the address of its newest lease. One MAC holds several leases (iPXE, the
        installer and the installed system each send their own client id): the latest wins."""
        path = self.dir / "router.leases"
        newest: dict[str, tuple[int, str]] = {}
        for line in path.read_text().splitlines() if path.exists() else []:
            parts = line.split()
            if len(parts) >= 3 and parts[0].isdigit():
                mac, expiry = parts[1].lower(), int(parts[0])
                if mac not in newest or expiry > newest[mac][0]:
                    newest[mac] = (expiry, parts[2])
        return {mac: ip for mac, (_, ip) in newest.items()}

    # -- host loopback -> LAN ----------------------------------------------------------------

    def relay(self, target_ip: str, target_port: int, host_port: int = 0) -> int:
        """A host port on 127.0.0.1 (`host_port`, 0: any free one) whose connections are
        carried to target inside the LAN. Raises OSError when `host_port` is taken."""
        listener = socket.socket()
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", host_port))
            listener.listen(16)
        except OSError:
            listener.close()
            raise
        self._relays.append(listener)
        threading.Thread(target=self._accept, args=(listener, target_ip, target_port),
                         daemon=True).start()
        return int(listener.getsockname()[1])

    def _lan_socket(self) -> socket.socket:
        """A socket created inside the LAN namespace (per-thread setns, then back)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.lan_ns}", os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the LAN namespace failed")
            try:
                return socket.socket()
            finally:
                if _libc.setns(own, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back failed")
        finally:
            os.close(own)
            os.close(target)

    def _accept(self, listener: socket.socket, host: str, port: int) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._lan_socket()
            except OSError:  # the namespace is gone: the LAN is going down
                client.close()
                continue
            upstream.settimeout(10)
            try:
                upstream.connect((host, port))
            except OSError:
                client.close()
                upstream.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def ssh_banner(port: int) -> bool:
    """Whether an SSH server answers on 127.0.0.1:port (through a relay)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(10)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


# -- virtual laptops -------------------------------------------------------------------------


@dataclass
class Laptop:
    """QEMU (TCG) with its NIC on the LAN's bridge, a blank NVMe disk and an SMBIOS serial."""

    lan: Lan
    name: str
    serial: str
    mac: str
    firmware: Firmware = "bios"
    disk_bytes: int = 64 << 30  # sparse; the grading rejects disks under 60 GB
    ssh_pubkey: str | None = None
    memory_mib: int = 2048
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    workdir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir = self.lan.dir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.disk = self.workdir / "disk.raw"
        self.console = self.workdir / "console.log"

    def argv(self) -> list[str]:
        tap = self.lan.add_tap(f"tap{self.name[-6:]}")
        with self.disk.open("wb") as f:
            f.truncate(self.disk_bytes)  # blank, as a new disk comes
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2",
            "-m", str(self.memory_mib), "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.console}",
            "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={self.mac},bootindex=1{self._nic_rom()}",
            "-drive", f"file={self.disk},format=raw,if=none,id=d0,cache=unsafe",
            # NVMe, as in most laptops now; QEMU's implements Format NVM, so the wipe is a Purge
            # that takes seconds, not an overwrite of 64 GiB.
            "-device", f"nvme,serial=DLNVME{self.name[-4:]},drive=d0,bootindex=2",
            "-device", "virtio-rng-pci",
            "-smbios", f"type=1,serial={smbios_value(self.serial)},manufacturer=DEELIT-TEST,"
                       "product=VirtualLaptop",
        ]
        if self.ssh_pubkey:
            cred = f"io.systemd.credential:ssh.authorized_keys.root={self.ssh_pubkey.strip()}"
            argv += ["-smbios", f"type=11,value={smbios_value(cred)}"]
        if self.firmware == "bios":
            argv += ["-machine", "q35,graphics=off"]  # SeaBIOS mirrors the screen (iPXE) to serial
        else:
            code, template = OVMF[self.firmware]
            vars_copy = self.workdir / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_DIR / template, vars_copy)
            secure = self.firmware == "uefi-secureboot"
            # IPv6 PXE off, as on most laptops as they ship: otherwise OVMF tries it (and
            # times out, minutes under TCG) before the disk on every boot after the install.
            argv += ["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"]
            argv += ["-machine", "q35,smm=on" if secure else "q35",
                     *(["-global", "driver=cfi.pflash01,property=secure,value=on"] if secure else []),
                     "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_DIR / code}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        return argv

    def _nic_rom(self) -> str:
        # SeaBIOS has no PXE of its own: QEMU's iPXE option ROM plays the laptop's PXE ROM.
        # Under UEFI that ROM would run instead of the firmware's own PXE (what a real laptop
        # has), skip the station's snponly.efi/shim and lend shim its own PXE protocol, which
        # reports a wrong file size for grubx64.efi; OVMF's built-in virtio driver and PXE
        # stand for the real firmware instead.
        return "" if self.firmware == "bios" else ",romfile="

    def power_on(self) -> None:
        self.started_at = time.monotonic()
        self.proc = self.lan.popen(self.lan.lan_ns, self.argv(), log=self.workdir / "qemu.log")

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def power_off(self) -> None:
        if self.proc is not None:
            self.lan.stop(self.proc)


def qemu_thresholds(dest: Path) -> Path:
    """The shipped grading policy, except that QEMU's NVMe reports available spare 0% with a
    threshold of 0% (no real drive does): that rule only notes it here instead of rejecting."""
    shipped = resources.files("provisioner.agent").joinpath("grading.yaml").read_text()
    rules = yaml.safe_load(shipped)
    rules["nvme"]["spare_at_or_below_threshold"] = "A"
    dest.write_text(yaml.safe_dump(rules))
    return dest


# -- the station -----------------------------------------------------------------------------


class StationProcess:
    """`deelit serve` inside the station namespace, with its own data folder."""

    def __init__(self, lan: Lan, data: Path, image: Path, installer: Path,
                 extra: list[str] | None = None) -> None:
        self.lan, self.data = lan, data
        data.mkdir(parents=True, exist_ok=True)
        extra = ["--thresholds", str(qemu_thresholds(data / "grading.yaml")), *(extra or [])]
        self.log = lan.dir / "station.log"
        self.proc = lan.popen(lan.station_ns, [
            *deelit_argv(), "serve", "--interface", "st0", "--image", str(image),
            "--installer", str(installer), "--data", str(data), "--http-port", str(STATION_PORT),
            *extra], log=self.log)
        self.base = f"http://{STATION_IP}:{STATION_PORT}"
        self._store: Store | None = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready" in self.log_text().splitlines():
                return
            if self.proc.poll() is not None:
                raise DeelitError(f"deelit serve exited ({self.proc.returncode}): "
                                  f"{last_line(self.log_text())}")
            time.sleep(0.5)
        raise DeelitError(f"deelit serve not ready after {timeout:.0f} s: {last_line(self.log_text())}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def token(self) -> str:
        """The station token its page uses (DATA/station-token); machines get agent tokens."""
        return (self.data / "station-token").read_text().strip()

    def device(self, serial: str | None = None, mac: str | None = None) -> DeviceWithEvents | None:
        """What the station's registry holds now (read through its SQLite file)."""
        if self._store is None:
            self._store = Store(Settings(data_dir=self.data), migrate=False)
        for dev in self._store.list_devices(limit=1000):
            if (serial and dev.serial == serial) or (mac and mac in dev.macs):
                return self._store.get_device(dev.asset_tag)
        return None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self.lan.stop(self.proc)


def last_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of a log, shortened: for one-line error messages."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1][:limit] if lines else "(no output)")


def wait_for(what: str, check: Callable[[], T | None], timeout: float, laptops: Sequence[Laptop],
             every: float = 5) -> T:
    """Polls `check` until it returns something true; fails early when a laptop's QEMU stops."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        for lt in laptops:
            if not lt.alive():
                raise DeelitError(f"{lt.name} (QEMU) stopped while waiting for {what}: "
                                  f"{lt.console_text()[-3000:]}")
        time.sleep(every)
    tails = "\n".join(f"--- {lt.name}:\n{lt.console_text()[-4000:]}" for lt in laptops)
    raise DeelitError(f"{what}: not within {timeout:.0f} s\n{tails}")
