"""End to end: a QEMU laptop PXE-boots beside a router, is inventoried, graded, wiped, gets
the `ci` disk image, registers, reboots into it and passes the `ci` testinfra suite over SSH.

Each goes through `deelit demo`'s own path (provisioner.netboot.demo.run), so a green BIOS run
here is the demo working. BIOS is heavy_vm (runs with DEELIT_HEAVY_VM=1); UEFI and two laptops
at once (one with a placeholder serial) take many more TCG minutes: they run with
DEELIT_E2E_ALL=1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from provisioner import profile as profiles
from provisioner import verify as verifier
from provisioner.netboot import demo
from provisioner.registry.identity import is_placeholder
from provisioner.registry.schemas import DeviceWithEvents

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(7200)]
ALL = os.environ.get("DEELIT_E2E_ALL") == "1"
# QEMU's 52:54:00 MACs are locally administered, which the registry rightly never takes for
# a device's identity; a laptop whose serial is a placeholder needs its NIC's burnt-in MAC,
# here one of the addresses RFC 7042 sets aside for documentation (00-00-5E-00-53-xx).
BURNT_IN_MAC = "00:00:5e:00:53:04"
INSTALL_TIMEOUT = 4800  # TCG on a busy 2-core machine: power-on to the boot from disk
SSH_TIMEOUT = 1200


def check_registered(dev: DeviceWithEvents | None, build_id: str) -> None:
    assert dev is not None and dev.status == "ready", dev
    types = [e.type for e in dev.events]
    for kind in ("inventoried", "graded", "wiped", "imaged", "verified", "ready"):
        assert kind in types, types
    wiped = next(e for e in dev.events if e.type == "wiped")
    assert re.fullmatch(r"[0-9a-f]{64}", str(wiped.details["certificate_sha256"]))
    assert next(e for e in dev.events if e.type == "imaged").build_id == build_id
    assert dev.grade and dev.maker == "DEELIT-TEST"


def image_laptops(tmp_path: Path, specs: list[demo.LaptopSpec], ci_out: Path,
                  installer_out: Path) -> dict[str, float]:
    """`deelit demo`'s path (provisioner.netboot.demo.run) with more laptops, then each one's
    record checked and the `ci` testinfra suite run on its installed system over SSH.
    Returns timings (s) per laptop and stage; logs land in tmp_path/logs."""
    build_id = json.loads((ci_out / "manifest.json").read_text())["build_id"]
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deelit-e2e", "-f", str(key)],
                   check=True)
    timings: dict[str, float] = {}
    ci = profiles.load_profile("ci")

    def after(session: demo.Session, results: list[demo.Result]) -> None:
        for tracker, result in zip(session.trackers, results, strict=True):
            timings[f"{result.name}.registered"] = result.registered_s
            timings[f"{result.name}.ready"] = result.ready_s
            timings[f"{result.name}.disk_boot"] = result.disk_boot_s
            dev = result.device
            check_registered(dev, build_id)
            if not is_placeholder(result.spec.serial):
                assert dev.identity_source == "serial" and dev.serial == result.spec.serial
            else:  # registered under its fallback identity, not the shared placeholder
                assert dev.identity_source != "serial" and dev.serial_placeholder
            summary = dict(demo.summary(result))
            assert summary["build id"] == build_id and summary["status"] == "ready"
            port = session.ssh_port(tracker, SSH_TIMEOUT)
            code = verifier.run_suites(ci, f"paramiko://root@127.0.0.1:{port}",
                                       [f"--ssh-identity-file={key}"])
            assert code == 0, f"ci testinfra suite on the installed {result.spec.serial}: exit {code}"

    demo.run(specs, ci_out, installer_out, view=demo.PrintView(), logs=tmp_path / "logs",
             ssh_pubkey=key.with_suffix(".pub").read_text(), timeout=INSTALL_TIMEOUT, after=after)
    return timings


@pytest.mark.heavy_vm
def test_pxe_bios_laptop_end_to_end(tmp_path: Path, ci_out: Path, installer_out: Path) -> None:
    t = image_laptops(tmp_path, [demo.LaptopSpec("DL-E2E-BIOS-7Q2", "52:54:00:de:e1:01")],
                      ci_out, installer_out)
    print(f"BIOS power-on to registered {t['laptop1.registered']:.0f} s, to ready "
          f"{t['laptop1.ready']:.0f} s, to disk boot {t['laptop1.disk_boot']:.0f} s")


@pytest.mark.skipif(not ALL, reason="set DEELIT_E2E_ALL=1 (TCG boot minutes)")
def test_pxe_uefi_laptop_end_to_end(tmp_path: Path, ci_out: Path, installer_out: Path) -> None:
    t = image_laptops(tmp_path, [demo.LaptopSpec("DL-E2E-UEFI-3K8", "52:54:00:de:e1:02", "uefi")],
                      ci_out, installer_out)
    print(f"UEFI power-on to ready {t['laptop1.ready']:.0f} s")


@pytest.mark.skipif(not ALL, reason="set DEELIT_E2E_ALL=1 (TCG boot minutes)")
def test_two_laptops_at_once_one_with_placeholder_serial(tmp_path: Path, ci_out: Path,
                                                         installer_out: Path) -> None:
    t = image_laptops(tmp_path, [demo.LaptopSpec("DL-E2E-TWO-5M1", "52:54:00:de:e1:03"),
                                 demo.LaptopSpec("To Be Filled By O.E.M.", BURNT_IN_MAC)],
                      ci_out, installer_out)
    print(f"two laptops: ready after {t['laptop1.ready']:.0f} s and {t['laptop2.ready']:.0f} s")
