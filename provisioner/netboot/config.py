"""What the station serves and where: one model, filled from `deelit serve` options.

The interface defaults to the one carrying the default route (the café's LAN); its address
and subnet come from `ip -j addr`, so nothing about the network is typed in by hand.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from provisioner.errors import DeelitError
from provisioner.registry.settings import Settings

Action = Literal["inventory", "wipe-install", "install", "local"]
ACTIONS: tuple[str, ...] = ("inventory", "wipe-install", "install", "local")
UefiBinary = Literal["snponly.efi", "ipxe.efi"]


class StationConfig(BaseModel):
    interface: str
    server_ip: str
    subnet: str = Field(description="network address of the interface's subnet, e.g. 192.168.1.0")
    http_port: int = Field(default=8080, ge=1, le=65535)
    data_dir: Path  # registry database, station token, prepared images, per-machine actions
    run_dir: Path  # dnsmasq config, TFTP root: world-readable, because dnsmasq drops to nobody
    image_dir: Path  # the target image's build folder (NAME.img.zst + NAME.bmap + manifest.json)
    installer_dir: Path  # the installer's netboot artifacts (vmlinuz, initrd.img, filesystem.squashfs)
    default_action: Action = "wipe-install"
    # Seconds the laptop's screen shows what is about to happen to its disk before it starts,
    # any key stopping it (a laptop that booted from the network by mistake).
    countdown: int = Field(default=15, ge=5, le=600)
    # Another PXE server shares the LAN (serve was told to start anyway): act only on machines
    # approved here, known or not; every other one is sent to its own disk.
    only_approved: bool = False
    uefi_binary: UefiBinary = "snponly.efi"
    secure_boot: bool = False  # UEFI clients get shim -> signed GRUB instead of iPXE
    thresholds: Path | None = None  # the point's grading policy for the agents (else shipped)
    kernel_console: list[str] = Field(default_factory=lambda: ["console=tty0",
                                                               "console=ttyS0,115200n8"])
    # The point's registry: its central database when it has one (else SQLite in data_dir), and
    # the point code of new asset tags, as `deelit registry serve` takes them.
    db_url: str | None = None
    point: str = "MEC"

    def registry_settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, db_url=self.db_url, default_point=self.point)

    @property
    def http_base(self) -> str:
        return f"http://{self.server_ip}:{self.http_port}"


def _ip_json(argv: list[str]) -> list[dict[str, object]]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10)
    except FileNotFoundError as exc:
        raise DeelitError("`ip` is not installed: install the Debian package iproute2") from exc
    except subprocess.CalledProcessError as exc:
        raise DeelitError(f"`{' '.join(argv)}` failed: {exc.stderr.strip()}") from exc
    data = json.loads(proc.stdout or "[]")
    return data if isinstance(data, list) else []


def default_interface() -> str:
    """The interface of the default route: where the café's router and laptops are."""
    for route in _ip_json(["ip", "-j", "-4", "route", "show", "default"]):
        if isinstance(route.get("dev"), str):
            return str(route["dev"])
    raise DeelitError("no default route: name the LAN interface with --interface (see `ip link`)")


def interface_address(interface: str) -> tuple[str, str]:
    """(IPv4 address, network address) of an interface; refuses one without IPv4."""
    rows = _ip_json(["ip", "-j", "-4", "addr", "show", "dev", interface])
    for row in rows:
        for info in row.get("addr_info", []) or []:  # type: ignore[attr-defined]
            if info.get("family") == "inet":
                iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
                return str(iface.ip), str(iface.network.network_address)
    if not rows:
        raise DeelitError(f"interface {interface!r} does not exist (see `ip link`)")
    raise DeelitError(
        f"interface {interface!r} has no IPv4 address: connect it to the café's network "
        "(the router gives it one) or give it a fixed one"
    )
