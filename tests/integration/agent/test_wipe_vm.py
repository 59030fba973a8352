"""`deelit agent wipe --method auto` inside the booted installer (QEMU, TCG): an emulated NVMe
disk is purged through its firmware (Format NVM), a virtio disk gets the verified overwrite,
the boot medium is refused, and a wipe cut off by killing the whole VM leaves no certificate
until a rerun after the next boot finishes it. An emulated NVMe that refuses the format (QEMU
answers Format NVM on a zoned namespace with INVALID FORMAT; it ignores the secure erase
setting, so that is the refusal it offers) ends the wipe failed: no certificate, never Purge.

The disks are files on this host filled with a known pattern, so "the pattern is gone" is read
from the files themselves, not from the guest. Certificates go to a small ext4 disk of their
own, so they outlive the killed VM (the live system keeps everything else in RAM).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paramiko
import pytest

from provisioner.profile import PROJECT_ROOT
from provisioner.vm import VM, VMSpec

pytestmark = [pytest.mark.slow, pytest.mark.root]

PATTERN = (b"DEEL-IT family photo \x00\x01\x02\x03 " * 20)[:512]  # one sector, easy to count
MiB = 1 << 20
BOOT_TIMEOUT = 1800  # TCG on a 2-core machine
DISKS = {  # serial -> (size, QEMU device)
    "DLWIPENVME1": (192 * MiB, "nvme"),
    "DLWIPEVIRTIO1": (128 * MiB, "virtio-blk-pci"),
    "DLWIPEBIG1": (384 * MiB, "virtio-blk-pci"),  # cut off a third of the way: ~10 s of TCG writes, polled every 2 s
}
CERTS_LABEL = "DEELITCERTS"
ZNS_SERIAL = "DLWIPEZNS1"
ZNS_SIZE = 128 * MiB  # two zones of 64 MiB (Linux wants a power-of-two zone size)


def fill(path: Path, size: int) -> None:
    block = PATTERN * (MiB // len(PATTERN))
    with path.open("wb") as f:
        for _ in range(size // MiB):
            f.write(block)


def pattern_count(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(16 * MiB):
            count += chunk.count(PATTERN)
    return count


@pytest.fixture(scope="module")
def installer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("installer") / "out"
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli", "build", "installer", "--out",
                           str(out)], capture_output=True, text=True, cwd=PROJECT_ROOT, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return out


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("wipe-disks")
    files = {}
    for serial, (size, _) in DISKS.items():
        files[serial] = folder / f"{serial}.raw"
        fill(files[serial], size)
    certs = folder / "certs.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-L", CERTS_LABEL, str(certs), "16M"], check=True)
    files["certs"] = certs
    return files


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Guest:
    def __init__(self, vm: VM, key: Path) -> None:
        self.vm = vm
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # new keys every boot
        self.client.connect("127.0.0.1", port=vm.ssh_port, username="root", key_filename=str(key),
                            timeout=30, banner_timeout=60, auth_timeout=60, look_for_keys=False,
                            allow_agent=False)

    def run(self, command: str, timeout: float = 900) -> tuple[int, str, str]:
        _, stdout, stderr = self.client.exec_command(command, timeout=timeout)
        out, err = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out, err

    def check(self, command: str, timeout: float = 900) -> str:
        code, out, err = self.run(command, timeout)
        assert code == 0, f"{command}: exit {code}\n{out}\n{err}"
        return out

    def device(self, serial: str) -> str:
        disks = json.loads(self.check("lsblk -J -d -o NAME,SERIAL"))["blockdevices"]
        names = [d["name"] for d in disks if (d.get("serial") or "").strip() == serial]
        assert len(names) == 1, disks
        return f"/dev/{names[0]}"

    def wipe(self, device: str, *, background: bool = False) -> dict[str, Any]:
        plan = json.loads(self.check(f"deelit agent wipe {device} --dry-run --json"))
        command = (f"deelit agent wipe {device} --method auto --confirm {plan['token']} "
                   "--point DEELIT-TEST --technician tech-07 --cert-dir /mnt/certs --json")
        if background:
            self.check(f"nohup {command} >/root/wipe.out 2>&1 </dev/null &")
            return plan
        return dict(json.loads(self.check(command)))


@contextmanager
def booted(installer: Path, disks: dict[str, Path], key: Path, console: Path,
           extra: tuple[str, ...] = ()) -> Iterator[Guest]:
    drives: list[str] = [*extra]
    for i, (serial, (_, device)) in enumerate(DISKS.items()):
        drives += ["-drive", f"file={disks[serial]},format=raw,if=none,id=w{i}",
                   "-device", f"{device},drive=w{i},serial={serial}"]
    drives += ["-drive", f"file={disks['certs']},format=raw,if=virtio"]
    spec = VMSpec(artifact=installer, media="local", console_log=console, smbios_serial="DL-WIPE-VM-1",
                  ssh_pubkey=key.with_suffix(".pub").read_text(), extra_qemu=drives)
    with VM(spec) as vm:
        try:
            vm.wait_for_ssh(BOOT_TIMEOUT)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n{vm.console()[-3000:]}")
        guest = Guest(vm, key)
        guest.check(f"mkdir -p /mnt/certs && mount LABEL={CERTS_LABEL} /mnt/certs")
        try:
            yield guest
        finally:
            guest.client.close()


def test_auto_wipe_purges_nvme_overwrites_virtio_refuses_the_boot_medium(
    installer: Path, disks: dict[str, Path], key: Path, tmp_path: Path,
) -> None:
    """Also, in the same boot (one TCG boot less in CI): an emulated NVMe that refuses the
    format (QEMU: Format NVM on a zoned namespace) ends the wipe failed, with no certificate
    and never Purge, and nothing on it erased."""
    zns = tmp_path / f"{ZNS_SERIAL}.raw"
    fill(zns, ZNS_SIZE)
    extra = ("-drive", f"file={zns},format=raw,if=none,id=zns0",
             "-device", f"nvme,id=nvmezns,serial={ZNS_SERIAL}",
             "-device", "nvme-ns,drive=zns0,bus=nvmezns,nsid=1,zoned=true,zoned.zone_size=64M")
    with booted(installer, disks, key, tmp_path / "console.log", extra) as guest:
        medium = guest.check("findmnt -no SOURCE /run/live/medium").strip()
        code, _, err = guest.run(f"deelit agent wipe {medium} --dry-run")
        assert code != 0 and "refusing to wipe" in err, err

        device = guest.device(ZNS_SERIAL)
        plan = json.loads(guest.check(f"deelit agent wipe {device} --dry-run --json"))
        assert plan["method"] == "nvme-format", plan  # what the controller advertises
        code, out, err = guest.run(
            f"deelit agent wipe {device} --method auto --confirm {plan['token']} --point "
            "DEELIT-TEST --technician tech-07 --cert-dir /mnt/certs --json")
        assert code == 1, f"exit {code}\n{out}\n{err}"  # failed: not 0 (passed), not 2 (certified)
        assert "nvme format" in err and "no certificate written" in err, err
        assert "Purge" not in out, out

        nvme = guest.wipe(guest.device("DLWIPENVME1"))
        assert nvme["nist_category"] == "Purge" and nvme["method"].startswith("nvme-"), nvme
        virtio = guest.wipe(guest.device("DLWIPEVIRTIO1"))
        assert virtio["method"] == "overwrite" and virtio["nist_category"] == "Clear", virtio
        assert virtio["verification"]["passed"]

        for result, serial in ((nvme, "DLWIPENVME1"), (virtio, "DLWIPEVIRTIO1")):
            cert = json.loads(guest.check(f"cat {shlex.quote(result['certificate'])}"))
            assert cert["result"] == "passed" and cert["media"]["serial"] == serial
            assert cert["sanitization"]["method"] == result["method"]
            assert cert["organisation"] == "DEELIT-TEST" and cert["technician_id"] == "tech-07"
            assert cert["computer"]["serial"] == "DL-WIPE-VM-1"
            digest = guest.check(f"sha256sum {shlex.quote(result['certificate'])}").split()[0]
            assert digest == result["certificate_sha256"]
        guest.check("sync")
        certs = guest.check("ls -A /mnt/certs").split()
        assert not [c for c in certs if c.endswith(".json") and ZNS_SERIAL in
                    guest.check(f"cat /mnt/certs/{c}")], certs
        guest.check("sync")
    # read from the files behind the disks, after QEMU is gone
    assert pattern_count(disks["DLWIPENVME1"]) == 0
    assert pattern_count(disks["DLWIPEVIRTIO1"]) == 0
    assert pattern_count(zns) == ZNS_SIZE // len(PATTERN)  # refused: nothing was erased


def test_wipe_cut_off_by_killing_the_vm_is_not_certified_until_rerun(
    installer: Path, disks: dict[str, Path], key: Path, tmp_path: Path,
) -> None:
    big, size = disks["DLWIPEBIG1"], DISKS["DLWIPEBIG1"][0]
    full = size // len(PATTERN)
    with booted(installer, disks, key, tmp_path / "console-1.log") as guest:
        guest.wipe(guest.device("DLWIPEBIG1"), background=True)
        deadline = time.monotonic() + 1200
        while pattern_count(big) > full * 2 // 3:  # a third overwritten: kill it
            assert time.monotonic() < deadline, guest.check("cat /root/wipe.out")
            time.sleep(2)
        assert guest.vm.proc is not None
        guest.vm.proc.kill()  # power cut: no shutdown, no flush of anything in flight
        guest.vm.proc.wait()
    left = pattern_count(big)
    assert 0 < left < full, "the kill did not land halfway"

    with booted(installer, disks, key, tmp_path / "console-2.log") as guest:
        certs = guest.check("ls -A /mnt/certs").split()
        assert not [c for c in certs if c.endswith(".json") and "DLWIPEBIG1" in
                    guest.check(f"cat /mnt/certs/{c}")], certs  # nothing claims the big disk
        done = guest.wipe(guest.device("DLWIPEBIG1"))
        assert done["verification"]["passed"] and done["certificate"]
        guest.check("sync")
    assert pattern_count(big) == 0
