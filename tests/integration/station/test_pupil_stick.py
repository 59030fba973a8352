"""The family laptop through the offline stick, BIOS and UEFI: the USB installer (installer-usb
flashed to a file, `deelit stick prepare` with the pupil-test build) wipes the laptop's disk,
writes the pupil image and powers off; the laptop then boots from its disk in the same
firmware, its first boot makes the accounts from seeded answers, and the child's checks of
the station test hold. The stick's queue, imported at the point, says `ready` with the build.
`heavy_vm`: many TCG minutes (see the README).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.formats import manifest as fm
from provisioner.lab.laptop import DEELIT, qemu_thresholds
from provisioner.lab.qmp import QMP
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.vm import VM, VMSpec, firmware_args, smbios_value

from . import pupil_checks as pupil
from .disks import installed_image_matches

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.heavy_vm, pytest.mark.timeout(7200)]

SERIAL = "DL-USB-PUPIL-8K2"


def deelit(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(DEELIT), *args], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"deelit {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


def install_from_stick(stick: Path, target: Path, firmware: str, tmp: Path) -> float:
    """Boots the stick on a laptop with a blank 64 GiB NVMe disk; returns power-on to power-off."""
    console = tmp / "installer-console.log"
    started = time.monotonic()
    qemu = subprocess.Popen([
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "2048",
        *firmware_args(firmware, tmp),  # type: ignore[arg-type]
        "-nic", "none", "-display", "none", "-monitor", "none",
        "-serial", f"file:{console}", "-device", "qemu-xhci",
        "-drive", f"file={stick},format=raw,if=none,id=stick,cache=unsafe",
        "-device", "usb-storage,drive=stick,bootindex=1,removable=on",
        "-drive", f"file={target},format=raw,if=none,id=d0,cache=unsafe",
        "-device", "nvme,serial=DLNVMEPUP1,drive=d0,bootindex=2",
        "-smbios", f"type=1,serial={smbios_value(SERIAL)},manufacturer=DEELIT-TEST",
    ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        qemu.wait(timeout=3600)  # the agent powers off when done offline
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()
        pytest.fail("no power-off within an hour: " + console.read_text(errors="replace")[-4000:])
    text = console.read_text(errors="replace")
    assert "[done]" in text and "queued at" in text, text[-4000:]
    return time.monotonic() - started


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_pupil_laptop_through_the_offline_stick(firmware: str, tmp_path: Path, pupil_test_out: Path,
                                                installer_usb_out: Path) -> None:
    stick = tmp_path / "stick.raw"
    deelit("flash", str(next(installer_usb_out.glob("*.img.zst"))), str(stick), "--to-file", "--yes")
    # a stick for a batch: no question at the laptop (the ci stick test types the answer)
    deelit("stick", "prepare", str(stick), "--image", str(pupil_test_out), "--point", "MEC",
           "--thresholds", str(qemu_thresholds(tmp_path / "grading.yaml")), "--batch-no-questions")
    target = tmp_path / "internal.raw"
    with target.open("wb") as f:
        f.truncate(64 << 30)  # sparse; the grading rejects disks under 60 GB
    installed_s = install_from_stick(stick, target, firmware, tmp_path)
    installed_image_matches(target, pupil_test_out)

    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    qmp_socket = tmp_path / "qmp.sock"
    creds = [arg for name, value in pupil.credentials(secrets.token_urlsafe(12))
             for arg in ("-smbios", f"type=11,value={smbios_value(f'io.systemd.credential:{name}={value}')}")]
    console = tmp_path / "disk-console.log"
    spec = VMSpec(artifact=target, firmware=firmware,  # type: ignore[arg-type]
                  ssh_pubkey=key.with_suffix(".pub").read_text(), smbios_serial=SERIAL,
                  console_log=console, extra_qemu=[*creds, "-qmp", f"unix:{qmp_socket},server=on,wait=off"])
    started = time.monotonic()
    with VM(spec) as vm:
        try:
            vm.wait_for_ssh(1800)
        except TimeoutError:
            pytest.fail(f"no SSH from the disk; console tail:\n{console.read_text(errors='replace')[-3000:]}")
        booted_s = time.monotonic() - started
        ssh = pupil.connect(vm.ssh_port, key)
        try:
            def screenshot() -> None:
                with QMP(qmp_socket) as qmp:
                    qmp.screenshot(tmp_path / "child-desktop.png")
            seen = pupil.look(ssh, qmp_socket, screenshot)
        finally:
            ssh.close()
    pupil.check(seen, pupil_test_out)

    deelit("stick", "queue", str(stick), str(tmp_path / "fromstick"))
    data = tmp_path / "central"
    deelit("registry", "import", str(tmp_path / "fromstick" / "queue"), "--data", str(data))
    store = Store(Settings(data_dir=data))
    try:
        [dev] = store.list_devices(serial=SERIAL)
        full = store.get_device(dev.asset_tag)
    finally:
        store.close()
    assert full.status == "ready" and full.point == "MEC"
    build_id = fm.read(pupil_test_out / fm.FILENAME).build_id
    assert next(e for e in full.events if e.type == "imaged").build_id == build_id
    # the stick's certificate is countersigned at import, checkable offline from its PDF
    pdf, station_key = tmp_path / "cert.pdf", tmp_path / "station.pub"
    deelit("registry", "certificate", dev.asset_tag, "--data", str(data), "-o", str(pdf))
    deelit("certificate", "station-key", "--data", str(data), "-o", str(station_key))
    checked = deelit("certificate", "verify", str(pdf), "--trust", str(station_key))
    assert "intact" in checked.stdout and "imported from a stick's queue" in checked.stdout
    print(f"pupil via the offline stick ({firmware}): power-on to power-off {installed_s:.0f} s, "
          f"disk boot to SSH {booted_s:.0f} s")
