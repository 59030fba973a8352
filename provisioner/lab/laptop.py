"""Virtual laptops and the station process on the café's network (lab/cafe.py).

A laptop is QEMU (TCG) with its NIC on the LAN's bridge, a blank NVMe disk and a made-up SMBIOS
serial; the station is `deelit serve` started inside its namespace with its own data folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml

from provisioner.errors import DeelitError
from provisioner.lab.cafe import STATION_IP, STATION_PORT, Lan, last_line
from provisioner.lab.qmp import QMP
from provisioner.registry.schemas import DeviceWithEvents
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.vm import OVMF, OVMF_DIR, Firmware, smbios_value

DEELIT = Path(sys.executable).with_name("deelit")
FAMILY_DATA = b"a previous family's photos and homework " * 100  # 4,100 bytes
T = TypeVar("T")


def deelit_argv() -> list[str]:
    """How to start this same deelit (the venv's console script, else this interpreter)."""
    return [str(DEELIT)] if DEELIT.exists() else [sys.executable, "-m", "provisioner.cli"]


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
    # systemd credentials handed over as SMBIOS type 11 strings (name -> value), e.g. the
    # first-boot answers a test seeds; QEMU passes them, a real laptop never has any.
    credentials: dict[str, str] = field(default_factory=dict)
    memory_mib: int = 2048
    # A previous family's data on the disk: a pattern at a few places, to show it untouched
    # while the laptop waits for approval (and gone once it is wiped).
    family_data: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    workdir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir = self.lan.dir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.disk = self.workdir / "disk.raw"
        self.console = self.workdir / "console.log"
        self.qmp_socket = self.workdir / "qmp.sock"

    def argv(self) -> list[str]:
        tap = self.lan.add_tap(f"tap{self.name[-6:]}")
        with self.disk.open("wb") as f:
            f.truncate(self.disk_bytes)  # blank, as a new disk comes
            if self.family_data:
                for offset in self._pattern_offsets():
                    f.seek(offset)
                    f.write(FAMILY_DATA)
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2",
            "-m", str(self.memory_mib), "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.console}",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",  # screenshots, keys
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
        creds = dict(self.credentials)
        if self.ssh_pubkey:
            creds["ssh.authorized_keys.root"] = self.ssh_pubkey.strip()
        for name, value in creds.items():
            cred = f"io.systemd.credential:{name}={value}"
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

    def _pattern_offsets(self) -> tuple[int, ...]:
        return (0, 1 << 20, 1 << 30, self.disk_bytes - (1 << 20))

    def family_data_intact(self) -> bool:
        """Every pattern block still on the disk (QEMU writes through the host's page cache)."""
        with self.disk.open("rb") as f:
            for offset in self._pattern_offsets():
                f.seek(offset)
                if f.read(len(FAMILY_DATA)) != FAMILY_DATA:
                    return False
        return True

    def power_on(self) -> None:
        self.started_at = time.monotonic()
        self.proc = self.lan.popen(self.lan.lan_ns, self.argv(), log=self.workdir / "qemu.log")

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def screenshot(self, png: Path) -> Path:
        """What the laptop's screen shows now, as PNG."""
        with QMP(self.qmp_socket, timeout=10) as qmp:
            return qmp.screenshot(png)

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
        found = self._store.find_device(serial=serial, mac=mac)
        return self._store.get_device(found.asset_tag) if found else None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self.lan.stop(self.proc)


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
