"""Virtual laptops and the station for the end-to-end tests and the bench: QEMU (TCG) with its
NIC on the namespace LAN's bridge, a blank virtio disk and a made-up SMBIOS serial; and
`deelit serve` in the station namespace."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from provisioner.registry.schemas import DeviceWithEvents
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.vm import OVMF, OVMF_DIR, smbios_value

from .lan import STATION_IP, Lan

REPO = Path(__file__).resolve().parents[3]
SHIPPED_GRADING = REPO / "provisioner" / "agent" / "grading.yaml"
DEELIT = Path(sys.executable).with_name("deelit")


@dataclass
class Laptop:
    lan: Lan
    name: str
    serial: str
    mac: str
    firmware: str = "bios"  # bios | uefi | uefi-secureboot
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
            "-device", f"virtio-net-pci,netdev=n0,mac={self.mac},bootindex=1",
            "-drive", f"file={self.disk},format=raw,if=none,id=d0,cache=unsafe",
            # NVMe, as in most laptops now; QEMU's implements Format NVM, so the wipe is a Purge
            # that takes seconds, not an overwrite of 64 GiB.
            "-device", f"nvme,serial=DLNVME{self.name[-4:]},drive=d0,bootindex=2",
            "-device", "virtio-rng-pci",
            "-smbios", f"type=1,serial={smbios_value(self.serial)},manufacturer=DEELIT-TEST,product=VirtualLaptop",
        ]
        if self.ssh_pubkey:
            cred = f"io.systemd.credential:ssh.authorized_keys.root={self.ssh_pubkey.strip()}"
            argv += ["-smbios", f"type=11,value={smbios_value(cred)}"]
        if self.firmware == "bios":
            argv += ["-machine", "q35,graphics=off"]  # SeaBIOS mirrors the screen (iPXE) to serial
        else:
            code, template = OVMF[self.firmware]  # type: ignore[index]
            vars_copy = self.workdir / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_DIR / template, vars_copy)
            secure = self.firmware == "uefi-secureboot"
            argv += ["-machine", "q35,smm=on" if secure else "q35",
                     *(["-global", "driver=cfi.pflash01,property=secure,value=on"] if secure else []),
                     "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_DIR / code}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        return argv

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
    rules = yaml.safe_load(SHIPPED_GRADING.read_text())
    rules["nvme"]["spare_at_or_below_threshold"] = "A"
    dest.write_text(yaml.safe_dump(rules))
    return dest


class StationProcess:
    """`deelit serve` inside the station namespace, with its own data folder."""

    def __init__(self, lan: Lan, data: Path, image: Path, installer: Path,
                 extra: list[str] | None = None) -> None:
        self.lan, self.data = lan, data
        data.mkdir(parents=True, exist_ok=True)
        extra = ["--thresholds", str(qemu_thresholds(data / "grading.yaml")), *(extra or [])]
        self.log = lan.dir / "station.log"
        self.proc = lan.popen(lan.station_ns, [
            str(DEELIT), "serve", "--interface", "st0", "--image", str(image),
            "--installer", str(installer), "--data", str(data), "--http-port", "8080",
            *(extra or [])], log=self.log)
        self.base = f"http://{STATION_IP}:8080"

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready" in self.log.read_text(errors="replace").splitlines():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"deelit serve exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)
        raise AssertionError(f"deelit serve not ready after {timeout} s: {self.log.read_text()[-2000:]}")

    def device(self, serial: str | None = None, mac: str | None = None) -> DeviceWithEvents | None:
        """What the station's registry holds now (read through its SQLite file)."""
        store = Store(Settings(data_dir=self.data), migrate=False)
        try:
            for dev in store.list_devices(limit=1000):
                if (serial and dev.serial == serial) or (mac and mac in dev.macs):
                    return store.get_device(dev.asset_tag)
            return None
        finally:
            store.close()


def wait_for(what: str, check, timeout: float, laptops: list[Laptop], every: float = 5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        for lt in laptops:
            if not lt.alive():
                raise AssertionError(f"{lt.name} (QEMU) stopped while waiting for {what}: "
                                     f"{lt.console_text()[-3000:]}")
        time.sleep(every)
    tails = "\n".join(f"--- {lt.name}:\n{lt.console_text()[-4000:]}" for lt in laptops)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tails}")
