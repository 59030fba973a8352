"""dnsmasq in proxy-DHCP mode with TFTP: config from the template, TFTP root, the process."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

from provisioner import procs
from provisioner.errors import DeelitError
from provisioner.netboot.config import StationConfig
from provisioner.netboot.daylog import DayLog
from provisioner.netboot.scripts import templates

IPXE_DIR = Path("/usr/lib/ipxe")
# The signed chain comes from the installer's own artifacts (outputs.netboot.secure_boot): the
# build host's may be older, and bookworm's GRUB 2.06 ignores the proxy-DHCP offer, so it
# would not find this station's TFTP server.
INSTALLER_SHIM = "shimx64.efi"
INSTALLER_GRUB_NET = "grubnetx64.efi"
BIOS_FILE = "undionly.kpxe"
SHIM_FILE = "shimx64.efi"
# shim loads grubx64.efi from the directory it came from; Debian's signed network GRUB then
# reads grub/grub.cfg below its TFTP prefix.
GRUB_FILE = "grubx64.efi"
SCRIPT_FILE = "boot.ipxe"  # the chain script, for iPXE over TFTP
SOURCES = {
    BIOS_FILE: (IPXE_DIR / "undionly.kpxe", "ipxe"),
    "ipxe.efi": (IPXE_DIR / "ipxe.efi", "ipxe"),
    "snponly.efi": (IPXE_DIR / "snponly.efi", "ipxe"),
}


def uefi_file(cfg: StationConfig) -> str:
    return SHIM_FILE if cfg.secure_boot else cfg.uefi_binary


def render_config(cfg: StationConfig) -> str:
    return templates.get_template("dnsmasq.conf.j2").render(
        interface=cfg.interface,
        subnet=cfg.subnet,
        http_base=cfg.http_base,
        bios_file=BIOS_FILE,
        uefi_file=uefi_file(cfg),
        script_file=SCRIPT_FILE,
        tftp_root=cfg.run_dir / "tftp",
        pid_file=cfg.run_dir / "dnsmasq.pid",
        lease_file=cfg.run_dir / "dnsmasq.leases",
    )


def populate_tftp(cfg: StationConfig, grub_cfg: str, chain_script: str = "") -> Path:
    """Copies Debian's boot binaries into the TFTP root (world-readable for dnsmasq's user)."""
    root = cfg.run_dir / "tftp"
    (root / "grub").mkdir(parents=True, exist_ok=True)
    for name in (BIOS_FILE, cfg.uefi_binary):
        src, package = SOURCES[name]
        if not src.is_file():
            raise DeelitError(f"{src}: missing; install the Debian package {package} (make setup)")
        _copy(src, root / name)
    if cfg.secure_boot:
        for src_name, name in ((INSTALLER_SHIM, SHIM_FILE), (INSTALLER_GRUB_NET, GRUB_FILE)):
            src = cfg.installer_dir / src_name
            if not src.is_file():
                raise DeelitError(
                    f"{src}: missing; --secure-boot needs an installer built with "
                    "outputs.netboot.secure_boot: true (images/installer.yaml has it; rebuild)")
            _copy(src, root / name)
        # the kernel and initrd GRUB loads over TFTP (templates/grub.cfg.j2 says why)
        (root / "installer").mkdir(mode=0o755, exist_ok=True)
        for name in ("vmlinuz", "initrd.img"):
            _copy(cfg.installer_dir / name, root / "installer" / name)
    (root / "grub" / "grub.cfg").write_text(grub_cfg)
    (root / SCRIPT_FILE).write_text(chain_script)
    for path in (cfg.run_dir, root, root / "grub", root / "grub" / "grub.cfg", root / SCRIPT_FILE):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def _copy(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)
    dest.chmod(0o644)


class Dnsmasq:
    """The dnsmasq process; stopped (and waited for) on exit, whatever happened."""

    def __init__(self, cfg: StationConfig, log: Path) -> None:
        self.cfg, self.log = cfg, log
        self.conf = cfg.run_dir / "dnsmasq.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self._copier: threading.Thread | None = None

    def start(self) -> None:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not Path(binary).exists():
            raise DeelitError("dnsmasq is not installed: install the Debian package dnsmasq-base")
        self.conf.write_text(render_config(self.cfg))
        self.conf.chmod(0o644)
        # Its log names every PXE client's MAC: a file a day, kept a week, each day capped.
        self.proc = subprocess.Popen(
            [binary, "--keep-in-foreground", "--log-facility=-", f"--conf-file={self.conf}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        self._copier = threading.Thread(target=DayLog(self.log).copy_from, args=(self.proc.stdout,),
                                        name="dnsmasq-log", daemon=True)
        self._copier.start()
        time.sleep(0.5)
        if self.proc.poll() is not None:
            self._copier.join(timeout=5)
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise DeelitError(f"dnsmasq exited at start ({self.proc.returncode}): "
                              + " / ".join(tail) + f"; config: {self.conf}")

    def stop(self) -> None:
        procs.stop(self.proc)
        if self._copier is not None:
            self._copier.join(timeout=5)
