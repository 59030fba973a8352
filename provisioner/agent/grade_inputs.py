"""What grading reads: a technician's saved reports, or this machine's own tools."""

from __future__ import annotations

import os
from pathlib import Path

from provisioner.agent.battery import Battery, parse_battery_file
from provisioner.agent.inventory import Inventory, collect, from_dmidecode_file
from provisioner.agent.smart import (
    DiskHealth,
    read_live,
    read_smartctl_json_file,
    read_smartctl_text_file,
)
from provisioner.errors import DeelitError


def collect_saved(
    smartctl_json: list[Path],
    smartctl_text: list[Path],
    dmidecode: Path,
    battery: Path | None,
) -> tuple[Inventory, list[DiskHealth], list[Battery] | None]:
    """Inputs of `grade_device` from a technician's saved reports."""
    disks = [read_smartctl_json_file(p) for p in smartctl_json]
    disks += [read_smartctl_text_file(p) for p in smartctl_text]
    batteries = [parse_battery_file(battery)] if battery is not None else None
    return from_dmidecode_file(dmidecode, batteries=batteries), disks, batteries


def collect_live() -> tuple[Inventory, list[DiskHealth], list[Battery] | None]:
    """Inputs of `grade_device` from this machine (root: dmidecode and smartctl need it)."""
    if os.geteuid() != 0:
        raise DeelitError("`deelit agent grade` reads SMART and SMBIOS data: run it as root")
    inv = collect()
    internal = [d for d in inv.disks if not d.removable and d.transport != "usb"]
    return inv, [read_live(d.path) for d in internal], inv.batteries
