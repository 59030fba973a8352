"""Inventory from the real dmidecode, battery and lsblk-shaped data in ../shared/fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.agent.battery import parse_battery_file
from provisioner.agent.dmi import parse_dmidecode
from provisioner.agent.inventory import (
    from_dmidecode_file,
    is_placeholder,
    parse_lsblk,
    read_nics,
)
from provisioner.errors import DeelitError


def dmi(fixtures: Path, name: str) -> Path:
    return fixtures / "dmidecode" / name


@pytest.mark.parametrize(
    ("name", "serial", "maker", "model"),
    [
        ("dmidecode-dell-latitude-d610-ok.txt", "D8XD62J", "Dell Inc.", "Latitude D610"),
        ("dmidecode-lenovo-thinkpad-edge-e320-ok.txt", "LR9NKZ7", "LENOVO", "1298A8G"),
        (
            "dmidecode-hp-pavilion-dv6-freebsd-ok.txt",
            "CNF01207X6",
            "Hewlett-Packard",
            "HP Pavilion dv6 Notebook PC",
        ),
        (
            "dmidecode-microsoft-surface-go-2-space-indented.txt",
            "48368130c2f8",
            "Microsoft Corporation",
            "Surface Go 2",
        ),
    ],
)
def test_real_serials_are_used_from_the_system_record(
    hardware_fixtures, name, serial, maker, model
):
    inv = from_dmidecode_file(dmi(hardware_fixtures, name))
    assert (inv.serial, inv.serial_source, inv.maker, inv.model) == (serial, "system", maker, model)
    assert "system_serial" not in inv.placeholder_fields


def test_placeholder_system_serial_falls_back_to_the_board(hardware_fixtures):
    inv = from_dmidecode_file(
        dmi(hardware_fixtures, "dmidecode-placeholder-system-serial-number.txt")
    )
    assert inv.system_serial == "System Serial Number"
    assert {"system_serial", "chassis_serial", "maker", "model"} <= set(inv.placeholder_fields)
    assert (inv.serial, inv.serial_source) == ("MS1C93BB0H00980", "baseboard")


def test_not_specified_is_a_placeholder(hardware_fixtures):
    inv = from_dmidecode_file(dmi(hardware_fixtures, "dmidecode-placeholder-not-specified.txt"))
    assert inv.system_serial == "Not Specified"
    assert "system_serial" in inv.placeholder_fields
    assert (inv.serial, inv.serial_source) == ("AZAX63801455", "baseboard")


def test_blank_serial_with_space_indentation(hardware_fixtures):
    inv = from_dmidecode_file(
        dmi(hardware_fixtures, "dmidecode-placeholder-blank-serial-dell-fx170.txt")
    )
    assert "system_serial" in inv.placeholder_fields
    assert (inv.serial, inv.serial_source) == ("DHN39Q1", "chassis")


@pytest.mark.parametrize(
    "name",
    [
        "dmidecode-lenovo-thinkpad-t440-serial-masked.txt",
        "dmidecode-teclast-f7s-default-string-serial-masked.txt",
    ],
)
def test_masked_serials_leave_no_usable_serial(hardware_fixtures, name):
    inv = from_dmidecode_file(dmi(hardware_fixtures, name))
    assert inv.serial is None and inv.serial_source == "none"
    assert {"system_serial", "baseboard_serial", "chassis_serial", "uuid"} <= set(
        inv.placeholder_fields
    )


def test_partial_dumps_flag_only_what_they_hold(hardware_fixtures):
    board = from_dmidecode_file(
        dmi(hardware_fixtures, "dmidecode-t-baseboard-placeholder-mb-1234567890.txt")
    )
    assert board.baseboard_serial == "MB-1234567890"
    assert board.placeholder_fields == ["baseboard_serial"]
    chassis = from_dmidecode_file(
        dmi(hardware_fixtures, "dmidecode-t-chassis-placeholder-chassis-serial-number.txt")
    )
    assert chassis.placeholder_fields == ["chassis_serial"]


@pytest.mark.parametrize(
    "value",
    [
        "To Be Filled By O.E.M.",
        "Default string",
        "System Serial Number",
        "Chassis Serial Number",
        "0123456789",
        "123456789",
        "Not Specified",
        "None",
        "N/A",
        "OEM",
        "",
        " ",
        "--",
        "-- REDACTED --",
        "XXXXXXXXXXXX",
        "00000000",
        "Asset-1234567890",
    ],
)
def test_placeholder_strings(value):
    assert is_placeholder(value)


@pytest.mark.parametrize("value", ["D8XD62J", "LR9NKZ7", "CNF01207X6", "48368130c2f8", "PF0ABC12"])
def test_real_serials_are_not_placeholders(value):
    assert not is_placeholder(value)


def test_cpu_and_ram_from_smbios(hardware_fixtures):
    inv = from_dmidecode_file(
        dmi(hardware_fixtures, "dmidecode-dell-xps13-9350-with-battery-ok.txt")
    )
    assert inv.cpu.model == "Intel(R) Core(TM) i5-6200U CPU @ 2.30GHz"
    assert (inv.cpu.cores, inv.cpu.threads) == (2, 4)
    assert inv.ram_bytes == 2 * 4096 * 2**20
    # "No Module Installed" slots count for nothing
    e320 = from_dmidecode_file(dmi(hardware_fixtures, "dmidecode-lenovo-thinkpad-edge-e320-ok.txt"))
    assert e320.ram_bytes == 2 * 4096 * 2**20


def test_old_smbios_cpu_named_from_maker_and_family(hardware_fixtures):
    inv = from_dmidecode_file(dmi(hardware_fixtures, "dmidecode-dell-latitude-d610-ok.txt"))
    assert inv.cpu.model == "Intel Pentium M" and inv.cpu.cores is None


def test_every_dmidecode_fixture_parses(hardware_fixtures):
    for path in sorted((hardware_fixtures / "dmidecode").iterdir()):
        records = parse_dmidecode(path.read_text(errors="replace"))
        assert records, path.name
        assert all(r.title for r in records), path.name


def test_not_dmidecode_is_a_clear_error(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello\n")
    with pytest.raises(DeelitError, match=r"notes\.txt"):
        from_dmidecode_file(bogus)


@pytest.mark.parametrize(
    ("name", "percent", "unit"),
    [
        ("bat0-uevent-thinkpad-42t4865-charge-32pct-worn.txt", 32.2, "uAh"),
        ("bat0-uevent-thinkpad-lnv45n1-energy-95pct.txt", 94.8, "uWh"),
        ("bat0-uevent-dell-m7r9677-charge-98pct.txt", 97.8, "uAh"),
        ("upower-dell-xps13-9350-capacity-92.txt", 92.8, "uWh"),
    ],
)
def test_battery_health(hardware_fixtures, name, percent, unit):
    bat = parse_battery_file(hardware_fixtures / "battery" / name)
    assert bat.health_percent == percent and bat.unit == unit
    assert bat.cycle_count is None  # these firmwares report 0 or nothing: "not reported"


def test_inventory_json_shape(hardware_fixtures):
    bat = parse_battery_file(
        hardware_fixtures / "battery" / "upower-dell-xps13-9350-capacity-92.txt"
    )
    inv = from_dmidecode_file(
        dmi(hardware_fixtures, "dmidecode-dell-xps13-9350-with-battery-ok.txt"), batteries=[bat]
    )
    data = json.loads(inv.model_dump_json())
    for key in (
        "serial",
        "baseboard_serial",
        "chassis_serial",
        "uuid",
        "serial_source",
        "placeholder_fields",
        "maker",
        "model",
        "cpu",
        "ram_bytes",
        "disks",
        "macs",
        "battery",
    ):
        assert key in data
    assert data["battery"]["design"] == 57_532_000 and data["battery"]["full"] == 53_405_200
    assert data["uuid"] == "4C4C4544-0030-4A10-8048-C4C04F503732"


def test_lsblk_keeps_whole_disks_only():
    text = json.dumps(
        {
            "blockdevices": [
                {
                    "name": "nvme0n1",
                    "path": "/dev/nvme0n1",
                    "model": "WDC PC SN730 ",
                    "serial": "2115",
                    "size": 512110190592,
                    "tran": "nvme",
                    "rota": False,
                    "type": "disk",
                    "rm": False,
                },
                {
                    "name": "sda",
                    "path": "/dev/sda",
                    "model": "Cruzer",
                    "serial": "4C53",
                    "size": 16e9,
                    "tran": "usb",
                    "rota": "1",
                    "type": "disk",
                    "rm": "1",
                },
                {"name": "zram0", "size": 0, "type": "disk", "rota": False},
                {"name": "sr0", "size": 1024, "type": "rom", "rota": True},
            ]
        }
    )
    disks = parse_lsblk(text)
    assert [d.name for d in disks] == ["nvme0n1", "sda"]
    assert disks[0].model == "WDC PC SN730" and not disks[0].rotational
    assert disks[1].removable and disks[1].rotational and disks[1].transport == "usb"


def test_nics_physical_and_permanent_only(tmp_path):
    for name, mac, assign, physical in [
        ("enp0s31f6", "54:EE:75:11:22:33", "0", True),
        ("wlp3s0", "aa:bb:cc:dd:ee:01", "3", True),  # randomised by NetworkManager
        ("br0", "02:00:00:00:00:01", "3", False),
        ("lo", "00:00:00:00:00:00", "0", False),
    ]:
        iface = tmp_path / name
        iface.mkdir()
        (iface / "address").write_text(mac + "\n")
        (iface / "addr_assign_type").write_text(assign + "\n")
        if physical:
            (iface / "device").mkdir()
    nics = read_nics(tmp_path)
    assert [(n.name, n.mac, n.permanent) for n in nics] == [
        ("enp0s31f6", "54:ee:75:11:22:33", True),
        ("wlp3s0", "aa:bb:cc:dd:ee:01", False),
    ]
