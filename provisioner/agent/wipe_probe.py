"""What a disk can do for its own erasure, read from nvme-cli, smartctl and hdparm output.

Pure parsers of the capability data (`NvmeCaps`, `AtaSecurity`, and `HiddenProbe`: the host
protected area and device configuration overlay), unit-tested without hardware; `wipe_plan`
decides from them and `wipe` runs the result. Field meanings (nvme-cli 2.x JSON): `oacs` bit
1 = Format NVM; `fna` bit 2 = crypto erase by Format, bits 0/1 = format/erase apply to all
namespaces; `sanicap` bit 0 crypto, bit 1 block, bit 2 overwrite; `flbas` bits 3:0 = current
LBA format.

hdparm 9.x text, as its source prints it (identify.c, hdparm.c):
  -I      "Security: " then one flag a line, "\t\tsupported" or "\tnot\tsupported", ending
          at the next unindented line ("HW reset results:", "Logical Unit WWN ...",
          "Checksum: correct"); features as "\t   *\tHost Protected Area feature set"
          ("*" = enabled; the line at all = supported).
  -N      " max sectors   = VISIBLE/NATIVE, HPA is enabled" (or "disabled"; ACS-3 drives say
          "ACCESSIBLE MAX ADDRESS enabled|disabled"); VISIBLE > NATIVE prints
          "(N?), HPA setting seems invalid", a reading to distrust (USB bridges and some
          drivers print 0/1 and exit 0). Counts are logical sectors.
  --dco-identify  "\tReal max sectors: N" (the factory size, a count); a drive without the
          DCO feature set fails the command (" HDIO_DRIVE_CMD(dco_identify) failed").
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


def _security_section(text: str) -> list[str] | None:
    """The lines of `hdparm -I`'s Security section: indented lines after "Security:"."""
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if line.rstrip() == "Security:":
            section = []
            for follow in lines[n + 1 :]:
                if not follow.strip() or not follow[:1].isspace():
                    break
                section.append(follow.strip())
            return section
    return None


def ata_security_from_hdparm(text: str) -> AtaSecurity | None:
    """From `hdparm -I`'s Security section (the live path; "not" prefixes a cleared flag).

    Each flag is its own line, so "not\tsupported: enhanced erase" clears the enhanced-erase
    flag only, never "supported" (a drive with the normal erase alone is still one).
    """
    section = _security_section(text)
    if section is None:
        return None
    flags: dict[str, bool] = {}
    for line in section:
        negated = re.match(r"not\s+(.*)$", line)
        name = re.sub(r"\s+", " ", negated.group(1) if negated else line)
        flags[name] = not negated
    joined = "\n".join(section)

    def minutes(kind: str) -> int | None:
        match = re.search(rf"(\d+)min for {kind}SECURITY ERASE UNIT", joined)
        return int(match.group(1)) if match else None

    return AtaSecurity(
        supported=flags.get("supported", False),
        enabled=flags.get("enabled", False),
        locked=flags.get("locked", False),
        frozen=flags.get("frozen", False),
        count_expired=flags.get("expired: security count", False),
        enhanced_supported=flags.get("supported: enhanced erase", False),
        erase_minutes=minutes(""),
        enhanced_erase_minutes=minutes("ENHANCED "),
    )


def parse_hpa(text: str) -> tuple[int, int] | None:
    """`hdparm -N`: 'max sectors = 976771055/976773168, HPA is enabled' → (visible, native).

    None when there is no reading, or hdparm itself calls it invalid (visible above native:
    a USB bridge's "0/1", or "66055248/1(156301488?)"), or it counts no sectors at all.
    """
    match = re.search(r"max sectors\s*=\s*(\d+)/(\d+)", text)
    if not match or "seems invalid" in text:
        return None
    visible, native = int(match.group(1)), int(match.group(2))
    return (visible, native) if 0 < visible <= native else None


def parse_dco(text: str) -> int | None:
    """`hdparm --dco-identify`: 'Real max sectors: N' → N (the factory size)."""
    match = re.search(r"Real max sectors:\s*(\d+)", text)
    return int(match.group(1)) if match else None


def identify_lists(text: str, feature: str) -> bool:
    """Whether `hdparm -I` lists a feature set (supported, enabled or not)."""
    return bool(re.search(rf"^\s*\*?\s*{re.escape(feature)}\s*$", text, re.M))


DCO_FEATURE = "Device Configuration Overlay feature set"


@dataclass(frozen=True)
class HiddenProbe:
    """What an ATA drive says about sectors beyond the ones it shows (hdparm, read only).

    `visible`/`native`: `hdparm -N` (the drive's current max and the max an HPA can be lifted
    to); `dco_max`: `--dco-identify`'s factory size, when the drive has DCO at all. Sector
    counts are logical sectors. `problems` says what could not be read; an unreadable answer
    is never taken for "nothing hidden".
    """

    visible: int | None = None
    native: int | None = None
    dco_supported: bool = False
    dco_max: int | None = None
    problems: tuple[str, ...] = ()

    @property
    def hpa_sectors(self) -> int:
        """Sectors an HPA (or an ACS-3 accessible max address) hides; 0 if none or unknown."""
        if self.visible is None or self.native is None:
            return 0
        return self.native - self.visible

    @property
    def dco_sectors(self) -> int:
        """Sectors a DCO hides below the factory size; 0 if none or unknown."""
        if self.dco_max is None or self.native is None:
            return 0
        return max(0, self.dco_max - self.native)

    @property
    def known(self) -> bool:
        return self.native is not None and (self.dco_max is not None or not self.dco_supported)


def hidden_probe(identify_text: str, hpa_text: str, dco_text: str) -> HiddenProbe:
    """The readings of `hdparm -I`, `hdparm -N` and `hdparm --dco-identify` together."""
    problems = []
    hpa = parse_hpa(hpa_text)
    if hpa is None:
        said = " ".join(hpa_text.split())[-160:] or "no output"
        problems.append(f"hdparm -N gave no valid max sectors reading ({said})")
    dco_supported = identify_lists(identify_text, DCO_FEATURE)
    dco = parse_dco(dco_text) if dco_supported else None
    if dco_supported and dco is None:
        said = " ".join(dco_text.split())[-160:] or "no output"
        problems.append(
            f"the drive lists the DCO feature set but hdparm --dco-identify did not read ({said})"
        )
    return HiddenProbe(
        visible=hpa[0] if hpa else None,
        native=hpa[1] if hpa else None,
        dco_supported=dco_supported,
        dco_max=dco,
        problems=tuple(problems),
    )


def hidden_area_notes(hpa: tuple[int, int] | None, dco_max: int | None) -> list[str]:
    """One line each for the HPA and the DCO, for the plan and the certificate."""
    notes = []
    if hpa is None:
        notes.append("HPA: not reported by the drive")
    elif hpa[0] < hpa[1]:
        notes.append(
            f"HPA present: {hpa[0]} of {hpa[1]} sectors visible; {hpa[1] - hpa[0]} hidden "
            "sectors, restored to the native max before the erase where the drive allows it"
        )
    else:
        notes.append(f"HPA: none ({hpa[0]} sectors visible of {hpa[1]})")
    if dco_max is not None and hpa is not None and dco_max > hpa[1]:
        notes.append(
            f"DCO restricts the drive: factory size {dco_max} sectors > {hpa[1]}; "
            f"{dco_max - hpa[1]} sectors are not erased (deelit does not restore a DCO)"
        )
    elif dco_max is not None:
        notes.append(f"DCO: none (factory size {dco_max} sectors)")
    else:
        notes.append("DCO: not reported by the drive")
    return notes


def probe_notes(probe: HiddenProbe) -> list[str]:
    hpa = (probe.visible, probe.native) if probe.visible and probe.native else None
    notes = hidden_area_notes(hpa, probe.dco_max)
    if probe.dco_max is None and not probe.dco_supported:
        notes[-1] = "DCO: the drive has no DCO feature set (hdparm -I)"
    return notes + [f"unread: {p}" for p in probe.problems]
