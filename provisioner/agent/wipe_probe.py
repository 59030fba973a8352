"""What a disk can do for its own erasure, read from nvme-cli, smartctl and hdparm output.

Pure parsers of the capability data (`NvmeCaps`, `AtaSecurity`, host protected area and device
configuration overlay), unit-tested without hardware; `wipe_plan` decides from them and
`wipe` runs the result. Field meanings (nvme-cli 2.x JSON): `oacs` bit 1 = Format NVM;
`fna` bit 2 = crypto erase by Format, bits 0/1 = format/erase apply to all namespaces;
`sanicap` bit 0 crypto, bit 1 block, bit 2 overwrite; `flbas` bits 3:0 = current LBA format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NvmeCaps:
    sanitize_crypto: bool = False
    sanitize_block: bool = False
    sanitize_overwrite: bool = False
    format_supported: bool = False
    format_crypto: bool = False
    format_all_namespaces: bool = False
    lbaf: int = 0


def nvme_caps(id_ctrl: dict[str, Any], id_ns: dict[str, Any] | None = None) -> NvmeCaps:
    """From `nvme id-ctrl -o json` (and `nvme id-ns -o json` for the current LBA format)."""
    sanicap, fna, oacs = (int(id_ctrl.get(k, 0)) for k in ("sanicap", "fna", "oacs"))
    return NvmeCaps(
        sanitize_crypto=bool(sanicap & 0b001),
        sanitize_block=bool(sanicap & 0b010),
        sanitize_overwrite=bool(sanicap & 0b100),
        format_supported=bool(oacs & 0b10),
        format_crypto=bool(fna & 0b100),
        format_all_namespaces=bool(fna & 0b011),
        lbaf=int((id_ns or {}).get("flbas", 0)) & 0xF,
    )


@dataclass(frozen=True)
class AtaSecurity:
    supported: bool
    enabled: bool = False
    locked: bool = False
    frozen: bool = False
    count_expired: bool = False
    enhanced_supported: bool = False
    erase_minutes: int | None = None
    enhanced_erase_minutes: int | None = None


def ata_security_from_smartctl(data: dict[str, Any]) -> AtaSecurity | None:
    """From `smartctl -j -x`'s `ata_security`: `state` is IDENTIFY word 128.

    Bits: 0 supported, 1 enabled, 2 locked, 3 frozen, 4 count expired, 5 enhanced erase.
    """
    sec = data.get("ata_security")
    if not isinstance(sec, dict) or "state" not in sec:
        return None
    word = int(sec["state"])
    return AtaSecurity(
        supported=bool(word & 1),
        enabled=bool(word & 2),
        locked=bool(word & 4),
        frozen=bool(word & 8),
        count_expired=bool(word & 16),
        enhanced_supported=bool(word & 32),
    )


def ata_security_from_hdparm(text: str) -> AtaSecurity | None:
    """From `hdparm -I`'s Security section (the live path; "not" prefixes a cleared flag)."""
    if "Security:" not in text:
        return None
    section = text.split("Security:", 1)[1].split("\n\n", 1)[0]

    def flag(name: str) -> bool:
        return bool(re.search(rf"^\s+{name}\s*$", section, re.M)) and not re.search(
            rf"not\s+{name}", section
        )

    def minutes(kind: str) -> int | None:
        match = re.search(rf"(\d+)min for {kind}SECURITY ERASE UNIT", section)
        return int(match.group(1)) if match else None

    return AtaSecurity(
        supported=flag("supported"),
        enabled=flag("enabled"),
        locked=flag("locked"),
        frozen=flag("frozen"),
        count_expired=flag("expired: security count"),
        enhanced_supported=flag("supported: enhanced erase"),
        erase_minutes=minutes(""),
        enhanced_erase_minutes=minutes("ENHANCED "),
    )


def parse_hpa(text: str) -> tuple[int, int] | None:
    """`hdparm -N`: 'max sectors = 976771055/976773168, HPA is enabled' → (visible, native)."""
    match = re.search(r"max sectors\s*=\s*(\d+)/(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_dco(text: str) -> int | None:
    """`hdparm --dco-identify`: 'Real max sectors: N' → N (the factory size)."""
    match = re.search(r"Real max sectors:\s*(\d+)", text)
    return int(match.group(1)) if match else None


def hidden_area_notes(hpa: tuple[int, int] | None, dco_max: int | None) -> list[str]:
    notes = []
    if hpa is None:
        notes.append("HPA: not reported by the drive")
    elif hpa[0] < hpa[1]:
        notes.append(
            f"HPA present: {hpa[0]} of {hpa[1]} sectors visible; {hpa[1] - hpa[0]} hidden "
            "sectors are not reached by an overwrite (a firmware erase covers them)"
        )
    else:
        notes.append(f"HPA: none ({hpa[0]} sectors visible of {hpa[1]})")
    if dco_max is not None and hpa is not None and dco_max > hpa[1]:
        notes.append(f"DCO restricts the drive: factory size {dco_max} sectors > {hpa[1]}")
    elif dco_max is not None:
        notes.append(f"DCO: none (factory size {dco_max} sectors)")
    else:
        notes.append("DCO: not reported by the drive")
    return notes
