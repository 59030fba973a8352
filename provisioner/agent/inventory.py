"""What the laptop is: identity from SMBIOS (placeholders flagged), CPU, RAM, disks, NICs, battery.

The `Inventory` model is the JSON the agent prints with `--json` and POSTs to the registry.
Live collection and saved reports go through the same `build_inventory`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from provisioner.agent.battery import Battery, read_batteries
from provisioner.agent.dmi import DmiRecord, first, of_type, parse_dmidecode
from provisioner.agent.sysrun import run
from provisioner.errors import DeelitError

SCHEMA_VERSION = 1
SYS_CLASS_NET = Path("/sys/class/net")

# Strings vendors leave in SMBIOS instead of a serial (FACTS.md, plus masks seen in public dumps).
_PLACEHOLDERS = {
    "to be filled by o.e.m.",
    "to be filled by oem",
    "default string",
    "system serial number",
    "chassis serial number",
    "base board serial number",
    "baseboard serial number",
    "not specified",
    "not applicable",
    "not available",
    "not settable",
    "not present",
    "none",
    "n/a",
    "na",
    "oem",
    "o.e.m.",
    "unknown",
    "invalid",
    "<bad index>",
    "empty",
    "serial",
    "system product name",
    "system manufacturer",
    "chassis manufacture",
    "chassis version",
    "redacted",
    "-- redacted --",
    "xxxxxxxxxxxx",
}
_DIGIT_RUN = "1234567890"
_PLACEHOLDER_UUIDS = {
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",  # AMI's template UUID, shipped unchanged by many boards
}


def is_placeholder(value: str | None) -> bool:
    """True when a serial-like value cannot identify one machine."""
    if value is None:
        return True
    text = value.strip()
    folded = text.lower()
    if not text or folded in _PLACEHOLDERS or "redacted" in folded or "to be filled" in folded:
        return True
    alnum = re.sub(r"[^0-9a-z]", "", folded)
    if len(set(alnum)) <= 1:  # "", "--", "0000000", "XXXXXXXX", "..."
        return True
    # "0123456789", "123456789", "MB-1234567890", "Asset-1234567890": a counting run, not a serial
    return len(alnum) >= 8 and any(
        alnum[i : i + 8] in "0" + _DIGIT_RUN for i in range(len(alnum) - 7)
    )


def is_placeholder_uuid(value: str | None) -> bool:
    return is_placeholder(value) or (value or "").strip().lower() in _PLACEHOLDER_UUIDS


class Cpu(BaseModel):
    model: str | None = None
    cores: int | None = None
    threads: int | None = None


class Disk(BaseModel):
    """One whole disk as lsblk sees it."""

    name: str
    path: str
    model: str | None = None
    serial: str | None = None
    size_bytes: int
    transport: str | None = None  # sata, nvme, usb, … (None for virtio)
    rotational: bool
    removable: bool = False


class Nic(BaseModel):
    name: str
    mac: str
    permanent: bool = True


class Inventory(BaseModel):
    schema_version: int = SCHEMA_VERSION
    serial: str | None = Field(
        default=None, description="best usable serial: system, else board, else chassis"
    )
    serial_source: Literal["system", "baseboard", "chassis", "none"] = "none"
    system_serial: str | None = None
    baseboard_serial: str | None = None
    chassis_serial: str | None = None
    uuid: str | None = None
    placeholder_fields: list[str] = Field(
        default_factory=list,
        description="identity fields holding a placeholder, e.g. chassis_serial",
    )
    maker: str | None = None
    model: str | None = None
    model_version: str | None = None
    cpu: Cpu = Field(default_factory=Cpu)
    ram_bytes: int | None = None
    disks: list[Disk] = Field(default_factory=list)
    macs: list[Nic] = Field(default_factory=list)
    battery: Battery | None = Field(default=None, description="the first battery (BAT0)")
    batteries: list[Battery] = Field(default_factory=list)


def _clean(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


def _size_bytes(text: str) -> int | None:
    match = re.match(r"\s*(\d+)\s*(B|bytes|kB|KB|MB|GB|TB)\b", text)
    if not match:
        return None  # "No Module Installed", "Unknown"
    factor = {
        "B": 1,
        "bytes": 1,
        "kB": 1 << 10,
        "KB": 1 << 10,
        "MB": 1 << 20,
        "GB": 1 << 30,
        "TB": 1 << 40,
    }[match.group(2)]
    return int(match.group(1)) * factor


def cpu_from_dmi(records: list[DmiRecord]) -> Cpu:
    procs = [r for r in of_type(records, 4) if "Populated" in r.props.get("Status", "Populated")]
    if not procs:
        return Cpu()
    version = _clean(procs[0].props.get("Version"))
    model = " ".join(version.split()) if version and not is_placeholder(version) else None
    if model is None:  # SMBIOS 2.3-era dumps leave Version blank but name maker and family
        parts = [_clean(procs[0].props.get(k)) for k in ("Manufacturer", "Family")]
        named = [p for p in parts if p and not is_placeholder(p)]
        model = " ".join(named) or None

    def total(key: str) -> int | None:
        counts = [int(p.props[key]) for p in procs if p.props.get(key, "").strip().isdigit()]
        return sum(counts) if counts else None

    return Cpu(model=model, cores=total("Core Count"), threads=total("Thread Count"))


def ram_from_dmi(records: list[DmiRecord]) -> int | None:
    sizes = [_size_bytes(r.props.get("Size", "")) for r in of_type(records, 17)]
    known = [s for s in sizes if s]
    return sum(known) if known else None


def parse_lsblk(text: str) -> list[Disk]:
    """Whole disks from `lsblk --json -b -d -o NAME,PATH,MODEL,SERIAL,SIZE,TRAN,ROTA,TYPE,RM`."""
    disks = []
    for dev in json.loads(text).get("blockdevices", []):
        if dev.get("type") != "disk" or str(dev.get("name", "")).startswith(("zram", "ram")):
            continue
        disks.append(
            Disk(
                name=dev["name"],
                path=dev.get("path") or f"/dev/{dev['name']}",
                model=_clean(dev.get("model")),
                serial=_clean(dev.get("serial")),
                size_bytes=int(dev.get("size") or 0),
                transport=dev.get("tran"),
                rotational=bool(dev.get("rota")) and dev.get("rota") not in ("0", 0),
                removable=bool(dev.get("rm")) and dev.get("rm") not in ("0", 0),
            )
        )
    return disks


def read_nics(root: Path = SYS_CLASS_NET) -> list[Nic]:
    """Physical NICs only (they have a `device` link); virtual ones (bridges, veth) have none.

    `addr_assign_type` 0 means the address is the burnt-in one; Wi-Fi MAC randomisation and
    user-set addresses show other values and are reported as `permanent: false`.
    """
    nics = []
    for iface in sorted(root.iterdir()) if root.is_dir() else []:
        if not (iface / "device").exists():
            continue
        try:
            mac = (iface / "address").read_text().strip().lower()
            assign = (iface / "addr_assign_type").read_text().strip()
        except OSError:
            continue
        if mac and mac != "00:00:00:00:00:00":
            nics.append(Nic(name=iface.name, mac=mac, permanent=assign == "0"))
    return nics


def build_inventory(
    records: list[DmiRecord],
    *,
    disks: list[Disk] | None = None,
    nics: list[Nic] | None = None,
    batteries: list[Battery] | None = None,
    cpu_fallback: Cpu | None = None,
    ram_fallback: int | None = None,
) -> Inventory:
    """One function for live runs and saved reports: SMBIOS records plus what else is known."""
    system, board, chassis = first(records, 1), first(records, 2), first(records, 3)

    def prop(rec: DmiRecord | None, key: str) -> str | None:
        return _clean(rec.props.get(key)) if rec is not None else None

    fields = {
        "system_serial": prop(system, "Serial Number"),
        "baseboard_serial": prop(board, "Serial Number"),
        "chassis_serial": prop(chassis, "Serial Number"),
    }
    # A record that exists with a blank value is a placeholder; a record not in the dump is unknown.
    present = {"system_serial": system, "baseboard_serial": board, "chassis_serial": chassis}
    placeholders = [k for k, v in fields.items() if present[k] is not None and is_placeholder(v)]
    uuid = prop(system, "UUID")
    if system is not None and is_placeholder_uuid(uuid):
        placeholders.append("uuid")
    serial, source = None, "none"
    for key, name in (
        ("system_serial", "system"),
        ("baseboard_serial", "baseboard"),
        ("chassis_serial", "chassis"),
    ):
        if fields[key] is not None and key not in placeholders:
            serial, source = fields[key], name
            break
    maker, model = prop(system, "Manufacturer"), prop(system, "Product Name")
    for key, value in (("maker", maker), ("model", model)):
        if value is not None and is_placeholder(value):
            placeholders.append(key)
    cpu = cpu_from_dmi(records)
    if cpu_fallback is not None:
        cpu = Cpu(
            model=cpu.model or cpu_fallback.model,
            cores=cpu.cores or cpu_fallback.cores,
            threads=cpu.threads or cpu_fallback.threads,
        )
    version = prop(system, "Version")
    bats = batteries or []
    return Inventory(
        serial=serial,
        serial_source=source,  # type: ignore[arg-type]
        uuid=uuid,
        placeholder_fields=placeholders,
        maker=maker,
        model=model,
        model_version=version if version and not is_placeholder(version) else None,
        cpu=cpu,
        ram_bytes=ram_from_dmi(records) or ram_fallback,
        disks=disks or [],
        macs=nics or [],
        battery=bats[0] if bats else None,
        batteries=bats,
        system_serial=fields["system_serial"],
        baseboard_serial=fields["baseboard_serial"],
        chassis_serial=fields["chassis_serial"],
    )


def _cpu_from_proc() -> Cpu:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = " ".join(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return Cpu(model=model, threads=os.cpu_count())


def _ram_from_proc() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


LSBLK_ARGS = ["lsblk", "--json", "-b", "-d", "-o", "NAME,PATH,MODEL,SERIAL,SIZE,TRAN,ROTA,TYPE,RM"]


def collect() -> Inventory:
    """Inventory of the machine the agent runs on (needs root for dmidecode)."""
    if os.geteuid() != 0:
        raise DeelitError("`deelit agent inventory` reads SMBIOS with dmidecode: run it as root")
    records = parse_dmidecode(run(["dmidecode"]).stdout)
    if first(records, 1) is None:
        raise DeelitError(
            "dmidecode found no SMBIOS system record (is /sys/firmware/dmi/tables present?): "
            "this machine cannot be identified; grade a saved dump with --dmidecode FILE"
        )
    return build_inventory(
        records,
        disks=parse_lsblk(run(LSBLK_ARGS).stdout),
        nics=read_nics(),
        batteries=read_batteries(),
        cpu_fallback=_cpu_from_proc(),
        ram_fallback=_ram_from_proc(),
    )


def from_dmidecode_file(path: Path, *, batteries: list[Battery] | None = None) -> Inventory:
    """Inventory from a saved `dmidecode` dump (what technicians keep, and what the tests use)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DeelitError(f"cannot read dmidecode report {path}: {exc.strerror}") from exc
    records = parse_dmidecode(text)
    if not records:
        raise DeelitError(f"{path} has no `Handle 0x…, DMI type N` records: not dmidecode output")
    return build_inventory(records, batteries=batteries)
