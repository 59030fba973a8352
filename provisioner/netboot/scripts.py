"""Which action a machine gets, and the boot scripts (iPXE, GRUB) that carry it out.

Precedence: an action set for this machine at the station (by serial or MAC) wins; else the
registry decides from the device's status (returned -> wipe + install; ready -> local disk,
so a freshly imaged laptop that PXE-boots again is not imaged twice). A machine the registry
does not know gets the default only once a volunteer approved it (approvals.py): until then
it boots the installer to be inventoried and graded, and waits, with nothing written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jinja2 import Environment, PackageLoader, StrictUndefined

from provisioner.netboot.approvals import Approvals
from provisioner.netboot.config import ACTIONS, Action, StationConfig
from provisioner.registry import identity
from provisioner.registry.schemas import DeviceOut
from provisioner.registry.store import Store

templates = Environment(
    loader=PackageLoader("provisioner.netboot", "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # iPXE, GRUB and dnsmasq syntax, not HTML
)

_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
# Characters that could end an iPXE/GRUB word or start a command: never echoed into a script.
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:/+@-]")


@dataclass(frozen=True)
class Machine:
    """What iPXE tells about itself: `${smbios/serial}`, `${net0/mac}`, `${uuid}`, `${platform}`."""

    serial: str | None = None
    mac: str | None = None
    uuid: str | None = None
    platform: str | None = None

    @classmethod
    def from_query(cls, serial: str | None, mac: str | None, uuid: str | None,
                   platform: str | None) -> Machine:
        mac_norm = (mac or "").strip().lower().replace("-", ":")
        return cls(
            serial=(serial or "").strip() or None,
            mac=mac_norm if _MAC_RE.match(mac_norm) else None,
            uuid=(uuid or "").strip().lower() or None,
            platform=(platform or "").strip() or None,
        )

    @property
    def usable_serial(self) -> str | None:
        return None if identity.is_placeholder(self.serial) else self.serial

    @property
    def key(self) -> str:
        """The station's name for it: the serial, else the MAC (placeholder serials are shared)."""
        return self.usable_serial or self.mac or "unknown"

    @property
    def label(self) -> str:
        return _UNSAFE.sub("?", self.key)[:64]


# "wait": the installer inventories and grades the machine, shows what it is on its screen
# and asks the station again until a volunteer approves (or refuses) it.
BootAction = Action | Literal["wait"]


@dataclass(frozen=True)
class Decision:
    action: BootAction
    reason: str


class ActionBook:
    """Actions set at the station for particular machines, kept in DATA/actions.json."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Action]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {str(k): v for k, v in data.items() if v in ACTIONS}

    def set(self, key: str, action: Action | None) -> None:
        data = self.load()
        if action is None:
            data.pop(key, None)
        else:
            data[key] = action
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(self.path)

    def lookup(self, machine: Machine) -> Action | None:
        data = self.load()
        for key in (machine.usable_serial, machine.mac):
            if key and key in data:
                return data[key]
        return None


def find_device(store: Store, machine: Machine) -> DeviceOut | None:
    """The registry's record of this machine: by real serial, else by MAC."""
    return store.find_device(serial=machine.usable_serial, mac=machine.mac)


def decide(machine: Machine, default: Action, book: ActionBook, store: Store | None,
           approvals: Approvals, *, only_approved: bool = False) -> Decision:
    chosen = book.lookup(machine)
    if chosen is not None:
        return Decision(chosen, "set for this machine at the station")
    if only_approved and approvals.verdict(machine.usable_serial, machine.mac) != "approved":
        return Decision("local", "another PXE server shares this LAN: this station acts only "
                                 "on machines approved here")
    device = find_device(store, machine) if store is not None else None
    if device is None:
        if default == "local":
            return Decision("local", "new to the registry; this station boots the local disk")
        verdict = approvals.verdict(machine.usable_serial, machine.mac)
        if verdict == "refused":
            return Decision("local", "refused at the station")
        if verdict == "waiting":
            return Decision("wait", "new to the registry: waits for a volunteer's approval")
        return Decision(default, "new to the registry, approved at the station")
    if device.status == "returned" or device.needs_wipe:
        return Decision("wipe-install", f"{device.asset_tag} was returned: wipe before reuse")
    if device.status in ("verified", "ready"):
        return Decision("local", f"{device.asset_tag} is {device.status}")
    if device.status == "loaned":
        return Decision("local", f"{device.asset_tag} is on loan: record it returned first")
    if device.status == "retired":
        return Decision("local", f"{device.asset_tag} is retired")
    return Decision(default, f"{device.asset_tag} is {device.status}")


def installer_cmdline(cfg: StationConfig, action: str, token: str, *, ipxe: bool) -> str:
    """Kernel command line of the installer: live-boot fetch, plus what the agent reads.
    `token` is readable by anyone on the network: serve passes an agent-scoped one."""
    args = [
        "boot=live",
        f"fetch={cfg.http_base}/installer/filesystem.squashfs",
        f"deelit.server={cfg.http_base}",
        f"deelit.token={token}",
        f"deelit.action={action}",
        f"deelit.countdown={cfg.countdown}",
        *cfg.kernel_console,
    ]
    if ipxe:  # initramfs-tools brings up the NIC that booted, not whichever answers first
        args.append("BOOTIF=01-${net0/mac:hexhyp}")
    return " ".join(args)


def chain_script(cfg: StationConfig) -> str:
    return templates.get_template("boot.ipxe.j2").render(stage="chain", http_base=cfg.http_base)


def machine_script(cfg: StationConfig, machine: Machine, decision: Decision, token: str) -> str:
    return templates.get_template("boot.ipxe.j2").render(
        stage="machine",
        http_base=cfg.http_base,
        machine=machine.label,
        action=decision.action,
        reason=_UNSAFE.sub("?", decision.reason),
        cmdline=installer_cmdline(cfg, decision.action, token, ipxe=True),
    )


def grub_config(cfg: StationConfig, token: str) -> str:
    return templates.get_template("grub.cfg.j2").render(
        action="auto",
        server_host=cfg.server_ip,
        http_port=cfg.http_port,
        cmdline=installer_cmdline(cfg, "auto", token, ipxe=False),
    )
