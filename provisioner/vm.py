"""QEMU virtual laptops: boot an artifact under SeaBIOS or OVMF, serial console, SSH forwarding.

Used by `deelit boot` (people) and by the tests alike. The build machines have no working KVM,
so TCG is the default accelerator; `accel="kvm"` is for hosts where it works.

Netboot artifacts boot with live-boot: over HTTP (`fetch=`, served from this process to the
guest's 10.0.2.2) or from a local file (a small ext4 disk holding live/filesystem.squashfs).
A disk image (NAME.img.zst or a raw file) boots as a fresh virtual laptop: the firmware boots it
from a qcow2 overlay (optionally larger than the image), so the artifact itself never changes.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from provisioner import procs
from provisioner.errors import DeelitError

Firmware = Literal["bios", "uefi", "uefi-secureboot"]
Media = Literal["http", "local"]

OVMF_DIR = Path("/usr/share/OVMF")
OVMF = {
    "uefi": ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    "uefi-secureboot": ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
}
GUEST_HOST = "10.0.2.2"  # the host as QEMU user networking shows it to the guest
VERIFY_SSH_PORT = 2222  # roles/base: deelit-verify-access.service, only in a VM given its key


@dataclass
class VMSpec:
    artifact: Path  # a netboot artifact folder, or a disk image file (.img.zst or raw)
    firmware: Firmware = "bios"
    media: Media = "http"
    memory_mib: int = 2048
    cpus: int = 2
    accel: str = "tcg"
    ssh_port: int | None = None  # host port forwarded to the guest's 22 (None: a free one)
    ssh_pubkey: str | None = None  # handed over as systemd credential ssh.authorized_keys.root
    # "verify": as credential deelit.verify.ssh-key instead, for the image's own VM-only
    # access unit (roles/base, deelit-verify-access.service on port 2222): no role needed
    ssh_access: Literal["technician", "verify"] = "technician"
    smbios_serial: str | None = None
    console_log: Path | None = None  # None: serial console on this terminal
    kernel_args: list[str] = field(default_factory=list)
    extra_qemu: list[str] = field(default_factory=list)
    disk_size: int | None = None  # bytes of the virtual disk a disk image is written to

    @property
    def is_disk(self) -> bool:
        return self.artifact.is_file()


PANIC = b"Kernel panic - not syncing"
# QEMU's multi-threaded TCG now and then lets one vCPU run a stale int3 while the other patches
# kernel code (a static key, early in the boot): an emulator fault, not seen on hardware.
TCG_CODE_PATCH_OOPS = b"Oops: int3"


class GuestPanic(DeelitError):
    """The guest's kernel panicked (after TCG's int3 fault, only on the second boot: see
    VM._boot_again_after_tcg_oops)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_tool(argv: list[str], image: Path) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise DeelitError(f"{argv[0]}: not installed (make setup)") from None
    if proc.returncode != 0:
        raise DeelitError(f"{image}: {argv[0]} failed: {proc.stderr.strip()[-400:]}; is it a "
                          "disk image from deelit build (NAME.img.zst or raw)?")


def smbios_value(text: str) -> str:
    """QEMU option values double their commas."""
    return text.replace(",", ",,")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class ArtifactServer:
    """Serves a folder over HTTP on loopback (the guest reaches it as 10.0.2.2)."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ArtifactServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():  # shutdown() would wait forever for a loop never started
            self.httpd.shutdown()
        self.httpd.server_close()


def firmware_args(fw: Firmware, vars_dir: Path) -> list[str]:
    """QEMU's machine and firmware: SeaBIOS, or OVMF with a writable copy of its variables."""
    if fw == "bios":
        return ["-machine", "q35"]
    code, vars_template = OVMF[fw]
    for name in (code, vars_template):
        if not (OVMF_DIR / name).exists():
            raise DeelitError(f"{OVMF_DIR / name}: missing; install the 'ovmf' package (make setup)")
    vars_copy = vars_dir / "OVMF_VARS.fd"  # the firmware writes its variables: use a copy
    shutil.copyfile(OVMF_DIR / vars_template, vars_copy)
    machine = ["-machine", "q35,smm=on" if fw == "uefi-secureboot" else "q35"]
    secure = (["-global", "driver=cfi.pflash01,property=secure,value=on"]
              if fw == "uefi-secureboot" else [])
    return [
        *machine, *secure,
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_DIR / code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
    ]


class VM:
    """A running QEMU guest; use as a context manager so it is always stopped."""

    def __init__(self, spec: VMSpec) -> None:
        self.spec = spec
        self.ssh_port = spec.ssh_port or free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="deelit-vm-"))
        self.server: ArtifactServer | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.command: list[str] = []  # the QEMU command line, once started
        self.booted_again = False  # after a TCG code-patching oops (wait_for_ssh)

    # --- command line ---------------------------------------------------------------------

    def argv(self) -> list[str]:
        spec = self.spec
        argv = [
            "qemu-system-x86_64", "-accel", spec.accel, "-cpu", "max" if spec.accel == "tcg" else "host",
            "-m", str(spec.memory_mib), "-smp", str(spec.cpus),
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:{self.guest_ssh_port}",
            "-device", "virtio-net-pci,netdev=n0",
            "-device", "virtio-rng-pci",
            *self._firmware_args(),
            *self._smbios_args(),
            *self._boot_args(),
            *spec.extra_qemu,
        ]
        if spec.console_log is None:
            argv += ["-nographic"]
        else:
            argv += ["-display", "none", "-serial", f"file:{spec.console_log}", "-monitor", "none"]
        return argv

    @property
    def guest_ssh_port(self) -> int:
        return VERIFY_SSH_PORT if self.spec.ssh_access == "verify" else 22

    def _firmware_args(self) -> list[str]:
        return firmware_args(self.spec.firmware, self.tmp)

    def _smbios_args(self) -> list[str]:
        out = []
        if self.spec.smbios_serial is not None:
            out += ["-smbios", f"type=1,serial={smbios_value(self.spec.smbios_serial)}"]
        if self.spec.ssh_pubkey:
            name = ("deelit.verify.ssh-key" if self.spec.ssh_access == "verify"
                    else "ssh.authorized_keys.root")
            cred = f"io.systemd.credential:{name}={self.spec.ssh_pubkey.strip()}"
            out += ["-smbios", f"type=11,value={smbios_value(cred)}"]
        return out

    def _boot_args(self) -> list[str]:
        if self.spec.is_disk:
            return self._disk_args()
        art = self.spec.artifact
        kernel, initrd, squashfs = (art / n for n in ("vmlinuz", "initrd.img", "filesystem.squashfs"))
        for path in (kernel, initrd, squashfs):
            if not path.is_file():
                raise DeelitError(f"{path}: missing; is {art} a netboot artifact folder (deelit build)?")
        args = ["boot=live", "console=tty0", "console=ttyS0,115200n8", *self.spec.kernel_args]
        drives: list[str] = []
        if self.spec.media == "http":
            self.server = ArtifactServer(art)
            args.append(f"fetch=http://{GUEST_HOST}:{self.server.port}/filesystem.squashfs")
        else:
            drives = ["-drive", f"file={self._live_disk(squashfs)},format=raw,if=virtio,readonly=on"]
        return ["-kernel", str(kernel), "-initrd", str(initrd), "-append", " ".join(args), *drives]

    def _live_disk(self, squashfs: Path) -> Path:
        """A small ext4 disk with live/filesystem.squashfs, made without mounting anything."""
        content = self.tmp / "live-disk"
        (content / "live").mkdir(parents=True)
        try:
            os.link(squashfs, content / "live" / "filesystem.squashfs")
        except OSError:
            shutil.copyfile(squashfs, content / "live" / "filesystem.squashfs")
        size_mib = squashfs.stat().st_size // (1 << 20) + 64
        disk = self.tmp / "live.img"
        subprocess.run(["mkfs.ext4", "-q", "-L", "DEELIT-LIVE", "-d", str(content), str(disk),
                        f"{size_mib}M"], check=True)
        return disk

    def _disk_args(self) -> list[str]:
        """The image under a qcow2 overlay: writes (and first-boot growth) land in self.tmp."""
        image = self.spec.artifact.resolve()
        base = image
        if image.name.endswith(".zst"):
            base = self.tmp / "disk.raw"
            _run_tool(["zstd", "-q", "-d", "--sparse", str(image), "-o", str(base)], image)
        size = base.stat().st_size
        wanted = self.spec.disk_size or size
        if wanted < size:
            raise DeelitError(f"--disk-size: {wanted} bytes is smaller than the image {image} "
                              f"({size} bytes)")
        overlay = self.tmp / "disk.qcow2"
        _run_tool(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                   str(overlay), str(wanted)], image)
        return ["-drive", f"file={overlay},format=qcow2,if=none,id=disk0,discard=unmap",
                "-device", "virtio-blk-pci,drive=disk0,bootindex=0"]

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> VM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.server:
            self.server.__enter__()
        self._launch()

    def _launch(self) -> None:
        argv = self.command = self.argv()
        interactive = self.spec.console_log is None
        if self.spec.console_log is not None:  # this boot's console only, from its start
            self.spec.console_log.write_bytes(b"")
        self.proc = subprocess.Popen(
            argv,
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=None if interactive else subprocess.DEVNULL,
            stderr=None if interactive else subprocess.PIPE,
        )

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def console(self) -> str:
        log = self.spec.console_log
        return log.read_text(errors="replace") if log and log.exists() else ""

    def wait_for_console(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.console():
                return
            self._check_alive()
            time.sleep(1)
        raise TimeoutError(f"'{text}' not on the serial console after {timeout:.0f} s")

    def wait_for_ssh(self, timeout: float) -> None:
        """Waits until the guest's SSH server sends its banner through the forwarded port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self._boot_again_after_tcg_oops():
                deadline = time.monotonic() + timeout
                continue
            self._check_no_panic()
            try:
                with socket.create_connection(("127.0.0.1", self.ssh_port), timeout=5) as s:
                    s.settimeout(10)
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(2)
        raise TimeoutError(f"no SSH on 127.0.0.1:{self.ssh_port} after {timeout:.0f} s")

    def _boot_again_after_tcg_oops(self) -> bool:
        """Powers the guest off and on once when its kernel died of TCG's int3 fault (the
        console of that boot is kept beside the log, as .panic); any other panic stays one."""
        log = self.spec.console_log
        if self.booted_again or log is None or not log.exists():
            return False
        tail = log.read_bytes()[-65536:]
        if PANIC not in tail or TCG_CODE_PATCH_OOPS not in tail:
            return False
        shutil.copyfile(log, log.with_name(log.name + ".panic"))
        procs.stop(self.proc)
        self.booted_again = True
        print(f"deelit vm: the guest's kernel hit TCG's int3 fault while booting ({log}.panic); "
              "booting it once more", file=sys.stderr)
        self._launch()
        return True

    def _check_no_panic(self) -> None:
        """A guest kernel that panicked never answers: say so now, not after the timeout."""
        log = self.spec.console_log
        if log is not None and log.exists() and PANIC in log.read_bytes()[-65536:]:
            raise GuestPanic(f"the guest's kernel panicked while booting; serial console: {log}")

    def _check_alive(self) -> None:
        if not self.alive():
            assert self.proc is not None
            stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise DeelitError(f"QEMU exited with {self.proc.returncode}: {stderr.strip()[-500:]}")

    def stop(self) -> None:
        procs.stop(self.proc)
        if self.server:
            self.server.__exit__()
        shutil.rmtree(self.tmp, ignore_errors=True)
