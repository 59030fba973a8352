"""`deelit agent …` end to end on saved reports (no root needed)."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from provisioner.agent.commands import register

app = typer.Typer()
register(app)
runner = CliRunner()


def test_grade_saved_reports_json(hardware_fixtures):
    f = hardware_fixtures
    result = runner.invoke(
        app,
        [
            "agent",
            "grade",
            "--json",
            "--smartctl-json",
            str(f / "smart-json" / "hdd-hitachi-hds721050-usbjmicron-failed.json"),
            "--smartctl-text",
            str(f / "smart-text" / "nvme-wdc-pc-sn730-512g-1pct-used.txt"),
            "--dmidecode",
            str(f / "dmidecode" / "dmidecode-lenovo-thinkpad-edge-e320-ok.txt"),
            "--battery-uevent",
            str(f / "battery" / "bat0-uevent-thinkpad-lnv45n1-energy-95pct.txt"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["grade"] == "reject" and data["serial"] == "LR9NKZ7"
    assert [d["grade"] for d in data["disks"]] == ["reject", "A"]
    assert any(r["code"] == "smart_failed" for r in data["reasons"])


def test_inventory_from_a_saved_dump(hardware_fixtures):
    dump = hardware_fixtures / "dmidecode" / "dmidecode-placeholder-system-serial-number.txt"
    result = runner.invoke(app, ["agent", "inventory", "--json", "--dmidecode", str(dump)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["serial_source"] == "baseboard"


def test_grade_saved_needs_dmidecode(hardware_fixtures):
    report = hardware_fixtures / "smart-json" / "nvme-intel-660p-1tb-healthy.json"
    result = runner.invoke(app, ["agent", "grade", "--smartctl-json", str(report)])
    assert result.exit_code != 0
    assert "--dmidecode" in str(result.exception)


def test_missing_report_file_names_it(hardware_fixtures, tmp_path):
    missing = tmp_path / "gone.json"
    dmi = hardware_fixtures / "dmidecode" / "dmidecode-dell-latitude-d610-ok.txt"
    result = runner.invoke(
        app, ["agent", "grade", "--smartctl-json", str(missing), "--dmidecode", str(dmi)]
    )
    assert result.exit_code != 0 and "gone.json" in str(result.exception)
