"""The offline stick and the Secure Boot netboot chain, each in QEMU (TCG).

Both take many minutes: they are `heavy_vm` (selected with `-m heavy_vm`, see the README).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from provisioner.formats import manifest as fm
from provisioner.lab.cafe import STATION_IP, Lan
from provisioner.lab.laptop import DEELIT, Laptop, StationProcess, qemu_thresholds, wait_for
from provisioner.lab.qmp import QMP
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.vm import smbios_value

from .disks import installed_image_matches

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.heavy_vm, pytest.mark.timeout(7200)]
QUESTION = "[screen] Typ de laatste vier tekens van het serienummer (B4R9)"


def deelit(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(DEELIT), *args], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"deelit {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


def test_offline_stick_installs_and_queues(tmp_path: Path, ci_out: Path,
                                           installer_usb_out: Path) -> None:
    images = sorted(installer_usb_out.glob("*.img.zst"))
    stick = tmp_path / "stick.raw"
    deelit("flash", str(images[0]), str(stick), "--to-file", "--yes")
    deelit("stick", "prepare", str(stick), "--image", str(ci_out), "--point", "MEC",
           "--thresholds", str(qemu_thresholds(tmp_path / "grading.yaml")))
    target = tmp_path / "internal.raw"
    with target.open("wb") as f:
        f.truncate(64 << 30)  # sparse; the grading rejects disks under 60 GB
    console = tmp_path / "console.log"
    qmp_socket = tmp_path / "qmp.sock"
    started = time.monotonic()
    qemu = subprocess.Popen([
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "2048",
        "-machine", "q35", "-nic", "none", "-display", "none", "-monitor", "none",
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        "-serial", f"file:{console}", "-device", "qemu-xhci",
        "-drive", f"file={stick},format=raw,if=none,id=stick,cache=unsafe",
        "-device", "usb-storage,drive=stick,bootindex=1,removable=on",
        "-drive", f"file={target},format=raw,if=none,id=d0,cache=unsafe",
        "-device", "nvme,serial=DLNVMEUSB1,drive=d0,bootindex=2",
        "-smbios", f"type=1,serial={smbios_value('DL-USB-4R9')},manufacturer=DEELIT-TEST",
    ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # The laptop's screen asks for the serial's last four characters before it wipes:
        # typed on its keyboard once the question is there (as the serial console shows it).
        deadline = time.monotonic() + 3000
        while not console.exists() or QUESTION not in console.read_text(errors="replace"):
            if qemu.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the stick's question never came: "
                            + (console.read_text(errors="replace")[-4000:] if console.exists() else ""))
            time.sleep(5)
        with QMP(qmp_socket) as qmp:
            for key in ("b", "4", "r", "9", "ret"):  # DL-USB-4R9
                qmp.key(key)
        qemu.wait(timeout=3600)  # the agent powers off when done offline
    except subprocess.TimeoutExpired:
        pytest.fail("no power-off within an hour: " + console.read_text(errors="replace")[-4000:])
    finally:  # whatever failed, no QEMU is left running
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    print(f"USB: power-on to power-off {time.monotonic() - started:.0f} s")
    text = console.read_text(errors="replace")
    assert "[done]" in text and "queued at" in text, text[-4000:]
    assert "[screen] typed 4 character(s)" in text, text[-4000:]
    installed_image_matches(target, ci_out)
    deelit("stick", "queue", str(stick), str(tmp_path / "fromstick"))
    queued = list((tmp_path / "fromstick" / "queue").glob("*.json"))
    assert len(queued) == 1
    data = tmp_path / "central"
    deelit("registry", "import", str(tmp_path / "fromstick" / "queue"), "--data", str(data))
    store = Store(Settings(data_dir=data))
    try:
        [dev] = store.list_devices(serial="DL-USB-4R9")
        full = store.get_device(dev.asset_tag)
        assert full.status == "ready" and full.point == "MEC"
        build_id = fm.read(ci_out / fm.FILENAME).build_id
        assert next(e for e in full.events if e.type == "imaged").build_id == build_id
        assert len(str(next(e for e in full.events if e.type == "wiped").details["certificate_sha256"])) == 64
    finally:
        store.close()
    # countersigned at import, and checkable offline from its PDF against the station's key
    pdf, key = tmp_path / "cert.pdf", tmp_path / "station.pub"
    deelit("registry", "certificate", dev.asset_tag, "--data", str(data), "-o", str(pdf))
    deelit("certificate", "station-key", "--data", str(data), "-o", str(key))
    checked = deelit("certificate", "verify", str(pdf), "--trust", str(key))
    assert "intact" in checked.stdout and "imported from a stick's queue" in checked.stdout


# "plain": the café's router knows nothing of the station (the real case). Debian 12's signed
# grubnetx64 (GRUB 2.06) ignored the proxy-DHCP offer and stopped at grub>; the station now
# serves the installer image's own trixie GRUB (2.12), which reads it.
@pytest.mark.parametrize("router", [
    "plain",
    "next-server-station",  # the router also names the station, as some cafés' routers can
])
def test_secure_boot_signed_chain_boots_the_installer(tmp_path: Path, router: str, ci_out: Path,
                                                     installer_out: Path) -> None:
    """OVMF with Secure Boot enforced: shim -> Debian's signed grubnetx64 -> signed kernel."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with Lan(next_server=STATION_IP if router == "next-server-station" else None) as lan:
        station = StationProcess(lan, tmp_path / "data", ci_out, installer_out,
                                 ["--secure-boot", "--action", "inventory", "--approve-next", "1"])
        station.wait_ready()
        lt = Laptop(lan, "sb0", "DL-SB-8C3", "52:54:00:de:e1:0b", "uefi-secureboot",
                    ssh_pubkey=key.with_suffix(".pub").read_text())
        try:
            lt.power_on()
            timeout = 2400 if router != "plain" else 900
            dev = wait_for("the installer (inventory only) registered the laptop",
                           lambda: station.device(serial="DL-SB-8C3"), timeout, [lt])
            assert dev is not None
            ip = wait_for("lease", lambda: lan.leases().get(lt.mac), 300, [lt])
            port = lan.relay(ip, 22)
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a throwaway VM
            wait_for("SSH", lambda: _try_connect(client, port, key), 600, [lt], every=10)
            _, out, _ = client.exec_command("mokutil --sb-state; dmesg | grep -i 'secure boot'")
            text = out.read().decode()
            client.close()
            print(text)
            assert "SecureBoot enabled" in text, text
        finally:
            lt.power_off()
            (tmp_path / "console.log").write_text(lt.console_text())
            (tmp_path / "station.log").write_text(station.log.read_text(errors="replace"))


def _try_connect(client: object, port: int, key: Path) -> bool:
    try:
        client.connect("127.0.0.1", port=port, username="root", key_filename=str(key),  # type: ignore[attr-defined]
                       timeout=10, banner_timeout=20, allow_agent=False, look_for_keys=False)
        return True
    except Exception:
        return False

