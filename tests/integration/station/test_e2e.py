"""End to end: a QEMU laptop PXE-boots beside a router, is inventoried, graded, wiped, gets
the `ci` disk image, registers, reboots into it and passes the `ci` testinfra suite over SSH.

BIOS runs in the default suite. UEFI, two laptops at once (one with a placeholder serial) and
Secure Boot take many TCG minutes each: they run with DEELIT_E2E_ALL=1.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from provisioner import profile as profiles
from provisioner import verify as verifier
from provisioner.registry.identity import is_placeholder
from provisioner.registry.schemas import DeviceWithEvents

from .lan import Lan
from .laptop import Laptop, StationProcess, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(7200)]
ALL = os.environ.get("DEELIT_E2E_ALL") == "1"
INSTALL_TIMEOUT = 3600  # TCG on a busy 2-core machine: power-on to ready
SSH_TIMEOUT = 1200


def ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(10)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def check_registered(dev: DeviceWithEvents | None, build_id: str) -> None:
    assert dev is not None and dev.status == "ready", dev
    types = [e.type for e in dev.events]
    for kind in ("inventoried", "graded", "wiped", "imaged", "verified", "ready"):
        assert kind in types, types
    wiped = next(e for e in dev.events if e.type == "wiped")
    assert re.fullmatch(r"[0-9a-f]{64}", str(wiped.details["certificate_sha256"]))
    assert next(e for e in dev.events if e.type == "imaged").build_id == build_id
    assert dev.grade and dev.maker == "DEELIT-TEST"


def image_laptops(tmp_path: Path, laptops_spec: list[dict[str, str]], ci_out: Path,
                  installer_out: Path) -> dict[str, float]:
    """Boots the laptops, checks each end to end; returns timings (s) per laptop and stage."""
    build_id = json.loads((ci_out / "manifest.json").read_text())["build_id"]
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-e2e", "-f", str(key)],
                   check=True)
    timings: dict[str, float] = {}
    with Lan() as lan:
        station = StationProcess(lan, tmp_path / "station-data", ci_out, installer_out)
        station.wait_ready()
        laptops = [Laptop(lan, f"lt{i}", spec["serial"], spec["mac"], spec.get("firmware", "bios"),
                          ssh_pubkey=key.with_suffix(".pub").read_text())
                   for i, spec in enumerate(laptops_spec)]
        try:
            for lt in laptops:
                lt.power_on()
            for lt in laptops:
                real = not is_placeholder(lt.serial)

                def ready(lt: Laptop = lt, real: bool = real) -> DeviceWithEvents | None:
                    d = station.device(serial=lt.serial) if real else station.device(mac=lt.mac)
                    return d if d is not None and d.status == "ready" else None

                dev = wait_for(f"{lt.name} ready in the registry", ready, INSTALL_TIMEOUT, laptops)
                timings[f"{lt.name}.ready"] = time.monotonic() - lt.started_at
                check_registered(dev, build_id)
                if real:
                    assert dev is not None and dev.identity_source == "serial"
                else:  # registered under its fallback identity, not the shared placeholder
                    assert dev is not None and dev.identity_source != "serial" and dev.serial_placeholder
            ci = profiles.load_profile("ci")
            for lt in laptops:
                # The installed system's GRUB says this on the serial console: the agent rebooted,
                # the station answered "local disk", and the firmware went on to the disk.
                ip = wait_for(f"{lt.name} booted from its disk, with the router's address",
                              lambda lt=lt: lan.leases().get(lt.mac)
                              if "deelit: loading Linux from UUID" in lt.console_text() else None,
                              SSH_TIMEOUT, laptops)
                port = lan.relay(ip, 22)
                wait_for(f"{lt.name} SSH", lambda port=port: ssh_banner(port), SSH_TIMEOUT, laptops)
                timings[f"{lt.name}.installed_ssh"] = time.monotonic() - lt.started_at
                code = verifier.run_suites(ci, f"paramiko://root@127.0.0.1:{port}",
                                           [f"--ssh-identity-file={key}"])
                assert code == 0, f"ci testinfra suite on the installed {lt.name}: exit {code}"
        finally:
            for lt in laptops:
                lt.power_off()
            (tmp_path / "station.log").write_text(station.log.read_text(errors="replace"))
            for lt in laptops:
                (tmp_path / f"{lt.name}-console.log").write_text(lt.console_text())
    return timings


@pytest.mark.heavy_vm
def test_pxe_bios_laptop_end_to_end(tmp_path: Path, ci_out: Path, installer_out: Path) -> None:
    t = image_laptops(tmp_path, [{"serial": "DL-E2E-BIOS-7Q2", "mac": "52:54:00:de:e1:01"}],
                      ci_out, installer_out)
    print(f"BIOS power-on to ready {t['lt0.ready']:.0f} s, to installed SSH {t['lt0.installed_ssh']:.0f} s")


@pytest.mark.skipif(not ALL, reason="set DEELIT_E2E_ALL=1 (TCG boot minutes)")
def test_pxe_uefi_laptop_end_to_end(tmp_path: Path, ci_out: Path, installer_out: Path) -> None:
    t = image_laptops(tmp_path, [{"serial": "DL-E2E-UEFI-3K8", "mac": "52:54:00:de:e1:02",
                                  "firmware": "uefi"}], ci_out, installer_out)
    print(f"UEFI power-on to ready {t['lt0.ready']:.0f} s")


@pytest.mark.skipif(not ALL, reason="set DEELIT_E2E_ALL=1 (TCG boot minutes)")
def test_two_laptops_at_once_one_with_placeholder_serial(tmp_path: Path, ci_out: Path,
                                                         installer_out: Path) -> None:
    t = image_laptops(tmp_path, [{"serial": "DL-E2E-TWO-5M1", "mac": "52:54:00:de:e1:03"},
                                 {"serial": "To Be Filled By O.E.M.", "mac": "52:54:00:de:e1:04"}],
                      ci_out, installer_out)
    print(f"two laptops: ready after {t['lt0.ready']:.0f} s and {t['lt1.ready']:.0f} s")
