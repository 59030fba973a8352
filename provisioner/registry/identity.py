"""Which hardware identifiers are real, and the stable identity of a device derived from them.

Deliberately free of registry imports: the agent (inside the installer image) may use or copy it.
Makers often leave a placeholder in SMBIOS ("To Be Filled By O.E.M.", "Default string", ...),
and public dmidecode captures are often masked ("--", "REDACTED", "XXXXXXXX"); neither may
become an identity, or every such laptop would collapse into one registry record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Compared after _squash(): casefolded, with everything but letters and digits removed.
_PLACEHOLDER_WORDS = {
    "tobefilledbyoem",
    "defaultstring",
    "default",
    "systemserialnumber",
    "chassisserialnumber",
    "baseboardserialnumber",
    "boardserialnumber",
    "type2boardserialnumber",
    "serialnumber",
    "serial",
    "sernum",
    "sernum0",
    "notspecified",
    "notapplicable",
    "notavailable",
    "notsupported",
    "notsupportedbycpu",
    "notpresent",
    "notsettable",
    "none",
    "null",
    "oem",
    "unknown",
    "invalid",
    "empty",
    "redacted",
    "masked",
    "systemmanufacturer",
    "systemproductname",
    "tbd",
    "0123456789",
    "123456789",
    "1234567890",
    "mb1234567890",
    "12345678",
    "1234567",
    "123456",
    "abcdef",
}

# UUIDs firmware vendors ship unchanged on many boards (AMI's template, all zeros, all ones).
_PLACEHOLDER_UUIDS = {
    "03000200-0400-0500-0006-000700080009",
    "00020003-0004-0005-0006-000700080009",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
}

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _squash(value: str) -> str:
    return re.sub(r"[^0-9a-z]", "", value.casefold())


def is_placeholder(value: str | None) -> bool:
    """True when a serial number cannot tell one machine from another."""
    if value is None:
        return True
    squashed = _squash(value)
    if len(squashed) < 4:  # "", "--", "N/A", "OEM", "0" and other too-short strings
        return True
    if squashed in _PLACEHOLDER_WORDS:
        return True
    if len(set(squashed)) == 1:  # "00000000", "XXXXXXXXXXXX", "FFFFFFFF"
        return True
    # "Not Specified", "To be filled by O.E.M. (serial)", "-- REDACTED --" with decoration
    return any(word in squashed for word in ("tobefilled", "redacted", "notspecified"))


def normalise_uuid(value: str | None) -> str | None:
    """Lower-case canonical SMBIOS UUID, or None when missing, malformed or a known template."""
    if value is None:
        return None
    uuid = value.strip().casefold()
    if not _UUID_RE.match(uuid) or uuid in _PLACEHOLDER_UUIDS:
        return None
    if len(set(uuid.replace("-", ""))) == 1:
        return None
    return uuid


def is_mac(value: str) -> bool:
    """True for a MAC written as six colon-separated lower-case hex pairs."""
    return bool(_MAC_RE.match(value))


def clean_mac(value: str) -> str | None:
    """aa:bb:cc:dd:ee:ff for any MAC written with colons or dashes; None for anything else."""
    mac = value.strip().casefold().replace("-", ":")
    return mac if _MAC_RE.match(mac) else None


def normalise_mac(value: str) -> str | None:
    """aa:bb:cc:dd:ee:ff for a MAC burnt in by the maker; None for random or invalid ones."""
    mac = clean_mac(value)
    if mac is None:
        return None
    first = int(mac[:2], 16)
    # Bit 1: locally administered (randomised Wi-Fi, USB tethering, VMs' bridges); bit 0:
    # multicast. Neither identifies the hardware.
    if first & 0x03 or mac in {"00:00:00:00:00:00"}:
        return None
    return mac


def permanent_macs(values: Iterable[str]) -> list[str]:
    """The permanent MACs, sorted so that the NICs' enumeration order does not matter."""
    return sorted({m for m in (normalise_mac(v) for v in values) if m})


def clean_serial(value: str | None) -> str | None:
    """The serial stripped of padding, or None when it is a placeholder."""
    if value is None or is_placeholder(value):
        return None
    return value.strip()


@dataclass(frozen=True)
class Identity:
    """`key` is unique per device in the registry; `source` says which identifier it came from."""

    key: str
    source: str  # "serial" | "baseboard" | "uuid" | "mac"
    value: str


class NoIdentityError(ValueError):
    """Raised when every identifier is a placeholder or missing."""


def derive_identity(
    *,
    serial: str | None,
    baseboard_serial: str | None,
    uuid: str | None,
    macs: Iterable[str],
    maker: str | None = None,
) -> Identity:
    """System serial, else baseboard serial, else SMBIOS UUID, else the lowest permanent MAC.

    Serials are unique per maker only, so the maker is part of their key; the maker string is
    read from the same SMBIOS table each boot, so it is stable for one machine.
    """
    maker_key = " ".join((maker or "").split()).casefold()
    system = clean_serial(serial)
    if system:
        return Identity(f"serial:{maker_key}:{system.casefold()}", "serial", system)
    board = clean_serial(baseboard_serial)
    if board:
        return Identity(f"baseboard:{maker_key}:{board.casefold()}", "baseboard", board)
    smbios_uuid = normalise_uuid(uuid)
    if smbios_uuid:
        return Identity(f"uuid:{smbios_uuid}", "uuid", smbios_uuid)
    nics = permanent_macs(macs)
    if nics:
        return Identity(f"mac:{nics[0]}", "mac", nics[0])
    raise NoIdentityError(
        "no usable identity: serial, baseboard serial and SMBIOS UUID are placeholders or "
        "missing and no permanent MAC was given; send the MACs of the built-in NICs"
    )
