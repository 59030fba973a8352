"""Placeholder serials and the identity fallback, on real dmidecode captures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from provisioner.registry.identity import (
    NoIdentityError,
    derive_identity,
    is_placeholder,
    normalise_mac,
    normalise_uuid,
    permanent_macs,
)

FACTS_PLACEHOLDERS = ["To Be Filled By O.E.M.", "Default string", "System Serial Number",
                      "Chassis Serial Number", "0123456789", "123456789", "Not Specified",
                      "None", "N/A", "OEM", ""]
SEEN_IN_FIXTURES = ["--", "-- REDACTED --", "REDACTED", "XXXXXXXXXXXX", "MB-1234567890",
                    "00000000", "Not Supported by CPU", " ", "Base Board Serial Number"]
REAL = ["D8XD62J", "CNF01207X6", "X2735244G", "48368130c2f8", "002460202151",
        ".D8XD62J.CN4864363E7491.", "/D0JHP72/CN1296364600B8/", "AZAX63801455",
        "MS1C93BB0H00980", "DHN39Q1", "$$T02XB1K9"]


@pytest.mark.parametrize("value", FACTS_PLACEHOLDERS + SEEN_IN_FIXTURES + [None])
def test_placeholders_are_recognised(value: str | None) -> None:
    assert is_placeholder(value)


@pytest.mark.parametrize("value", REAL)
def test_real_serials_are_kept(value: str) -> None:
    assert not is_placeholder(value)


def _section(text: str, handle_type: str) -> dict[str, str]:
    """The key: value lines of the first DMI section with the given title."""
    fields: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if line.strip() == handle_type:
            inside = True
            continue
        if inside:
            if not line.strip() or not line[0].isspace():  # blank or next "Handle ..." line
                break
            m = re.match(r"\s+([^:]+):\s?(.*)$", line)
            if m:
                fields[m.group(1).strip()] = m.group(2)
    return fields


# file -> (identity source, identity value) expected from its System/Base Board sections
EXPECTED = {
    "dmidecode-dell-latitude-d610-ok.txt": ("serial", "D8XD62J"),
    "dmidecode-toshiba-satellite-2410-ok.txt": ("serial", "X2735244G"),
    "dmidecode-placeholder-system-serial-number.txt": ("baseboard", "MS1C93BB0H00980"),
    "dmidecode-placeholder-not-specified.txt": ("baseboard", "AZAX63801455"),
    "dmidecode-placeholder-blank-serial-dell-fx170.txt":
        ("uuid", "000c7406-053f-1710-8e47-e3ae95ed8cf9"),
    "dmidecode-lenovo-thinkpad-t440-serial-masked.txt": ("none", ""),
    "dmidecode-teclast-f7s-default-string-serial-masked.txt": ("none", ""),
    "dmidecode-microsoft-surface-go-2-space-indented.txt": ("serial", "48368130c2f8"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_identity_from_real_dmidecode(hardware_fixtures: Path, name: str) -> None:
    text = (hardware_fixtures / "dmidecode" / name).read_text(errors="replace")
    system = _section(text, "System Information")
    board = _section(text, "Base Board Information")
    source, value = EXPECTED[name]
    if source == "none":
        with pytest.raises(NoIdentityError):
            derive_identity(serial=system.get("Serial Number"),
                            baseboard_serial=board.get("Serial Number"),
                            uuid=system.get("UUID"), macs=[], maker=system.get("Manufacturer"))
        # with a burnt-in MAC the masked machine still gets an identity
        ident = derive_identity(serial=system.get("Serial Number"),
                                baseboard_serial=board.get("Serial Number"),
                                uuid=system.get("UUID"), macs=["3c:97:0e:11:22:33"])
        assert (ident.source, ident.value) == ("mac", "3c:97:0e:11:22:33")
        return
    ident = derive_identity(serial=system.get("Serial Number"),
                            baseboard_serial=board.get("Serial Number"), uuid=system.get("UUID"),
                            macs=[], maker=system.get("Manufacturer"))
    assert (ident.source, ident.value) == (source, value)


def test_baseboard_placeholder_falls_through_to_uuid(hardware_fixtures: Path) -> None:
    text = (hardware_fixtures / "dmidecode" /
            "dmidecode-t-baseboard-placeholder-mb-1234567890.txt").read_text()
    board = _section(text, "Base Board Information")
    assert board["Serial Number"] == "MB-1234567890"
    ident = derive_identity(serial="System Serial Number", baseboard_serial=board["Serial Number"],
                            uuid="40EB001E-8C00-01CE-8E2C-00248C590A84", macs=[])
    assert ident.source == "uuid"


def test_serial_key_is_per_maker_and_case_insensitive() -> None:
    a = derive_identity(serial="ABC1234", baseboard_serial=None, uuid=None, macs=[],
                        maker="LENOVO")
    b = derive_identity(serial=" abc1234 ", baseboard_serial=None, uuid=None, macs=[],
                        maker="Lenovo ")
    c = derive_identity(serial="ABC1234", baseboard_serial=None, uuid=None, macs=[], maker="HP")
    assert a.key == b.key != c.key


def test_uuid_templates_and_mac_rules() -> None:
    assert normalise_uuid("03000200-0400-0500-0006-000700080009") is None
    assert normalise_uuid("00000000-0000-0000-0000-000000000000") is None
    assert normalise_uuid("--") is None
    assert normalise_uuid("4C4C4544-0030-4A10-8048-C4C04F503732") == \
        "4c4c4544-0030-4a10-8048-c4c04f503732"
    assert normalise_mac("02:11:22:33:44:55") is None  # locally administered (random)
    assert normalise_mac("01:00:5e:00:00:01") is None  # multicast
    assert normalise_mac("00-1A-2B-3C-4D-5E") == "00:1a:2b:3c:4d:5e"
    # order of the NICs does not change the identity
    assert permanent_macs(["f0:de:f1:00:00:01", "00:1a:2b:3c:4d:5e", "zz"]) == \
        ["00:1a:2b:3c:4d:5e", "f0:de:f1:00:00:01"]
