"""Grading from the real smartctl JSON/text, dmidecode and battery reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.agent import grade_inputs, health, thresholds
from provisioner.agent.battery import parse_battery_file
from provisioner.agent.inventory import from_dmidecode_file
from provisioner.agent.smart import (
    classic_attribute_table,
    read_smartctl_json_file,
    read_smartctl_text_file,
)
from provisioner.errors import DeelitError

RULES = thresholds.load_thresholds()


def disk(fixtures: Path, name: str):
    folder = "smart-json" if name.endswith(".json") else "smart-text"
    path = fixtures / folder / name
    return (
        read_smartctl_json_file(path) if name.endswith(".json") else read_smartctl_text_file(path)
    )


def graded(fixtures: Path, name: str) -> tuple[str, list[health.Reason]]:
    reasons = health.grade_disk(disk(fixtures, name), RULES)
    return health.worst([r.grade for r in reasons]), reasons


def codes(reasons: list[health.Reason]) -> set[str]:
    return {r.code for r in reasons}


def test_failing_drive_is_rejected_with_every_reason(hardware_fixtures):
    grade, reasons = graded(hardware_fixtures, "hdd-hitachi-hds721050-usbjmicron-failed.json")
    assert grade == "reject"
    assert {
        "smart_failed",
        "attribute_failing_now",
        "attribute_5",
        "attribute_197",
        "self_test_failures",
    } <= codes(reasons)
    failing = next(r for r in reasons if r.code == "attribute_failing_now")
    assert "Reallocated_Sector_Ct" in failing.message and "threshold 5" in failing.message


def test_reallocated_sectors_are_flagged_with_the_count(hardware_fixtures):
    _, reasons = graded(hardware_fixtures, "hdd-seagate-st3500418as-304-reallocated.json")
    realloc = [r for r in reasons if r.code == "attribute_5"]
    assert len(realloc) == 1 and "raw 304" in realloc[0].message
    # 304 >= the configured reject_at (100), so this one is a reject, and says why
    assert realloc[0].grade == "reject"


def test_one_reallocated_sector_caps_at_c_not_reject(hardware_fixtures):
    _, reasons = graded(hardware_fixtures, "hdd-wd5000aaks-usbjmicron-pending-67.json")
    by_code = {r.code: r for r in reasons}
    assert by_code["attribute_5"].grade == "C" and "raw 1 " in by_code["attribute_5"].message + " "
    assert by_code["attribute_197"].grade == "reject"


def test_pending_sectors_reject_even_when_smart_says_passed(hardware_fixtures):
    d = disk(hardware_fixtures, "hdd-seagate-st3000dm001-pending-1640-passed.json")
    assert d.smart_passed is True
    grade, reasons = graded(hardware_fixtures, "hdd-seagate-st3000dm001-pending-1640-passed.json")
    assert grade == "reject" and {"attribute_197", "attribute_198"} <= codes(reasons)


def test_healthy_nvme_passes(hardware_fixtures):
    assert graded(hardware_fixtures, "nvme-intel-660p-1tb-healthy.json") == ("A", [])


@pytest.mark.parametrize(
    ("name", "grade", "code"),
    [
        ("nvme-samsung-pm1725a-critical-warning-failed.json", "reject", "nvme_critical_warning"),
        ("nvme-samsung-970evo-media-errors-7.json", "C", "nvme_media_errors"),
        ("nvme-intel-dc-p4500-2tb-75pct-used.json", "B", "life_used"),
        ("hdd-laptop-toshiba-mq01abd050-no-smart-status.json", "C", "smart_unavailable"),
        ("vm-vbox-harddisk-no-smart.json", "C", "smart_unavailable"),
        ("usb-bridge-unknown-error.json", "C", "smart_unreadable"),
        ("smartctl-open-failed-windows.json", "C", "smart_unreadable"),
        (
            "hdd-seagate-st380815as-airflow-temp-failed-in-past.json",
            "B",
            "attribute_failed_in_past",
        ),
        ("hdd-wd-red-wd20efrx-healthy.json", "B", "power_on_hours"),
    ],
)
def test_json_reports(hardware_fixtures, name, grade, code):
    got, reasons = graded(hardware_fixtures, name)
    assert got == grade and code in codes(reasons), [r.message for r in reasons]
    assert next(r for r in reasons if r.code == code).grade == grade


def test_critical_warning_names_the_bit(hardware_fixtures):
    _, reasons = graded(hardware_fixtures, "nvme-samsung-pm1725a-critical-warning-failed.json")
    warn = next(r for r in reasons if r.code == "nvme_critical_warning")
    assert "0x10" in warn.message and "volatile memory backup failed" in warn.message


@pytest.mark.parametrize(
    "name",
    [
        "ssd-samsung-860evo-wear-leveling-81.json",
        "ssd-kingston-a400-480g-life-left-85.json",
        "ssd-crucial-mx500-lifetime-remain-83.json",
        "nvme-kingston-nv1-500g-9pct-used.json",
        "nvme-samsung-pm9a1-1tb-16pct-used.json",
        "hdd-laptop-toshiba-mk3275gsx-usb-healthy.json",
    ],
)
def test_healthy_drives_grade_a(hardware_fixtures, name):
    grade, reasons = graded(hardware_fixtures, name)
    assert grade == "A", [r.message for r in reasons]


# --- text reports through pySMART -----------------------------------------------------------


def test_text_pending_sectors_are_rejected(hardware_fixtures):
    d = disk(hardware_fixtures, "hdd-laptop-seagate-st1000lm024-pending-1425.txt")
    assert d.reader == "pysmart" and d.attributes[197].raw == 1425
    grade, reasons = graded(hardware_fixtures, "hdd-laptop-seagate-st1000lm024-pending-1425.txt")
    assert grade == "reject" and {"attribute_197", "attribute_198"} <= codes(reasons)


def test_text_offline_uncorrectable_and_failed_self_tests(hardware_fixtures):
    name = "hdd-laptop-samsung-hm641ji-offline-uncorrectable-5.txt"
    grade, reasons = graded(hardware_fixtures, name)
    assert grade == "C"
    assert {"attribute_198", "self_test_failures"} <= codes(reasons)
    assert disk(hardware_fixtures, name).self_test_failures == 4  # "Completed: read failure" rows


def test_text_nvme_fields(hardware_fixtures):
    d = disk(hardware_fixtures, "nvme-toshiba-kbg30-256g-28pct-used.txt")
    assert d.kind == "nvme" and d.nvme is not None
    assert (d.nvme.percentage_used, d.nvme.available_spare, d.nvme.available_spare_threshold) == (
        28,
        100,
        10,
    )
    assert d.power_on_hours == 5809
    assert graded(hardware_fixtures, "nvme-toshiba-kbg30-256g-28pct-used.txt")[0] == "A"


def test_text_and_json_paths_grade_alike(hardware_fixtures):
    """Both report kinds for healthy drives give A; the healthy HDD text has all five counters."""
    d = disk(hardware_fixtures, "hdd-seagate-st2000nm000a-healthy.txt")
    assert {5, 187, 188, 197, 198} <= set(d.attributes) and all(
        d.attributes[i].raw == 0 for i in (5, 187, 188, 197, 198)
    )
    assert graded(hardware_fixtures, "hdd-seagate-st2000nm000a-healthy.txt") == ("A", [])


def test_every_text_fixture_parses(hardware_fixtures):
    for path in sorted((hardware_fixtures / "smart-text").iterdir()):
        d = read_smartctl_text_file(path)
        assert d.model and d.smart_available, path.name


def test_brief_attribute_table_rewrite_keeps_flags_and_failure():
    brief = [
        "ID# ATTRIBUTE_NAME          FLAGS    VALUE WORST THRESH FAIL RAW_VALUE",
        "  5 Reallocated_Sector_Ct   PO--CK   001   001   005    NOW  1975",
        "190 Airflow_Temperature_Cel -O---K   055   030   045    Past 45 (Min/Max 20/45)",
        "                            ||||||_ K auto-keep",
        "",
    ]
    out = classic_attribute_table(brief)
    assert "0x0033" in out[1] and "Pre-fail" in out[1] and "FAILING_NOW" in out[1]
    assert "0x0022" in out[2] and "Old_age" in out[2] and "In_the_past" in out[2]
    assert not any("auto-keep" in line for line in out)


def test_not_smartctl_text_is_a_clear_error(tmp_path):
    path = tmp_path / "smart.txt"
    path.write_text("nothing here\n")
    with pytest.raises(DeelitError, match=r"smart\.txt"):
        read_smartctl_text_file(path)


# --- the whole device ---------------------------------------------------------------------


def device(fixtures: Path, dmidecode: str, disks: list[str], battery: str | None):
    json_files = [fixtures / "smart-json" / d for d in disks if d.endswith(".json")]
    text_files = [fixtures / "smart-text" / d for d in disks if d.endswith(".txt")]
    bat = fixtures / "battery" / battery if battery else None
    inputs = grade_inputs.collect_saved(json_files, text_files, fixtures / "dmidecode" / dmidecode, bat)
    return health.grade_device(*inputs, RULES)


def test_device_grade_lists_every_reason_worst_first(hardware_fixtures):
    result = device(
        hardware_fixtures,
        "dmidecode-lenovo-thinkpad-t440-serial-masked.txt",
        ["hdd-seagate-st3500418as-304-reallocated.json"],
        "bat0-uevent-thinkpad-42t4865-charge-32pct-worn.txt",
    )
    assert result.grade == "reject"
    got = {r.code: r.grade for r in result.reasons}
    assert got["attribute_5"] == "reject"
    assert got["battery_health"] == "C"  # 32 % of design: below C (60), above reject (30)
    assert got["placeholder_serial"] == "A"  # masked serials: noted, label it with an asset tag
    order = [thresholds.ORDER[r.grade] for r in result.reasons]
    assert order == sorted(order, reverse=True)


def test_good_laptop_grades_a(hardware_fixtures):
    result = device(
        hardware_fixtures,
        "dmidecode-dell-xps13-9350-with-battery-ok.txt",
        ["nvme-intel-660p-1tb-healthy.json"],
        "upower-dell-xps13-9350-capacity-92.txt",
    )
    assert result.grade == "A" and result.serial == "D0JHP72"
    assert all(r.grade == "A" for r in result.reasons)


def test_minimum_spec(hardware_fixtures):
    old = device(
        hardware_fixtures,
        "dmidecode-toshiba-satellite-2410-ok.txt",  # 768 MiB RAM
        ["hdd-laptop-toshiba-mk3275gsx-usb-healthy.json"],
        None,
    )
    ram = next(r for r in old.reasons if r.code == "ram")
    assert ram.grade == "reject" and "0.8 GiB" in ram.message
    assert "battery_not_given" in codes(old.reasons)
    atom = device(
        hardware_fixtures,
        "dmidecode-placeholder-blank-serial-dell-fx170.txt",  # 1 core, 2 GiB
        ["ssd-samsung-860evo-wear-leveling-81.json"],
        None,
    )
    got = {r.code: r.grade for r in atom.reasons}
    assert got["cpu_cores"] == "C" and got["ram"] == "C"


def test_small_disk_is_rejected(hardware_fixtures):
    # the VirtualBox disk is 17 GB: below the 60 GB the image needs
    result = device(
        hardware_fixtures,
        "dmidecode-dell-xps13-9350-with-battery-ok.txt",
        ["vm-vbox-harddisk-no-smart.json"],
        None,
    )
    assert {r.code: r.grade for r in result.reasons}["disk_size"] == "reject"


def test_battery_thresholds():
    from provisioner.agent.battery import Battery

    def grade_of(full: int, cycles: int | None = None) -> list[tuple[str, str]]:
        bat = Battery(name="BAT0", unit="uWh", full=full, design=100, cycle_count=cycles)
        return [(r.code, r.grade) for r in health.grade_battery([bat], RULES)]

    assert grade_of(95) == []
    assert grade_of(79) == [("battery_health", "B")]
    assert grade_of(59) == [("battery_health", "C")]
    assert grade_of(29) == [("battery_health", "reject")]
    assert grade_of(95, cycles=1200) == [("battery_cycles", "C")]
    assert health.grade_battery([], RULES)[0].code == "battery_missing"


def test_thresholds_file_errors_name_the_key(tmp_path):
    bad = tmp_path / "grading.yaml"
    text = thresholds.DEFAULT_THRESHOLDS.read_text().replace("smart_failed: reject", "smart_failed: D")
    bad.write_text(text)
    with pytest.raises(DeelitError, match=r"disk\.smart_failed"):
        thresholds.load_thresholds(bad)


def test_every_threshold_has_a_comment():
    lines = thresholds.DEFAULT_THRESHOLDS.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if (
            not stripped
            or stripped.startswith("#")
            or stripped.endswith(":")
            or stripped.startswith("- id")
        ):
            continue
        if ":" in stripped and not stripped.startswith(("grade:", "reject_at:", "Wear_")):
            above = lines[i - 1].strip()
            assert "#" in line or above.startswith("#"), f"line {i + 1} has no comment: {line}"


def test_battery_file_errors(tmp_path):
    path = tmp_path / "uevent"
    path.write_text("POWER_SUPPLY_NAME=BAT0\nPOWER_SUPPLY_STATUS=Full\n")
    with pytest.raises(DeelitError, match="uevent"):
        parse_battery_file(path)


def test_inventory_reused_by_grading(hardware_fixtures):
    inv = from_dmidecode_file(
        hardware_fixtures / "dmidecode" / "dmidecode-placeholder-not-specified.txt"
    )
    reasons = health.grade_spec(inv, [], RULES)
    assert "no_disk" in codes(reasons)
