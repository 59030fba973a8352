"""The agent's settings: kernel command line first, the stick's station.json for the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.agent import station
from provisioner.build import staging
from provisioner.errors import DeelitError

CMDLINE = ("BOOT_IMAGE=/vmlinuz boot=live fetch=http://192.168.77.2:8080/installer/filesystem.squashfs "
           "deelit.server=http://192.168.77.2:8080 deelit.token=dlt_abc deelit.action=wipe-install "
           "console=ttyS0,115200n8 BOOTIF=01-52-54-00-12-34-56")


def test_kernel_command_line() -> None:
    cfg = station.load_config(CMDLINE, None)
    assert (cfg.server, cfg.token, cfg.action) == ("http://192.168.77.2:8080", "dlt_abc", "wipe-install")
    assert cfg.reboot and cfg.queue_dir is None and cfg.disk is None
    assert not station.load_config(CMDLINE + " deelit.reboot=0 deelit.disk=/dev/vda", None).reboot


def test_offline_stick_settings(tmp_path: Path) -> None:
    (tmp_path / "deelit").mkdir()
    (tmp_path / "deelit" / "station.json").write_text(json.dumps({"action": "wipe-install", "point": "MEC"}))
    assert station.find_stick((tmp_path / "nothing", tmp_path)) == tmp_path
    cfg = station.load_config("boot=live quiet", tmp_path)
    assert cfg.server is None and cfg.point == "MEC" and cfg.queue_dir == tmp_path / "deelit" / "queue"
    assert station.load_config("deelit.action=inventory", tmp_path).action == "inventory"  # cmdline wins


def test_refuses_unknown_action_and_nowhere_to_report() -> None:
    with pytest.raises(DeelitError, match="not one of"):
        station.load_config("deelit.server=http://x deelit.action=format-everything", None)
    with pytest.raises(DeelitError, match="nowhere to get the image"):
        station.load_config("boot=live deelit.action=install", None)


def test_staged_agent_imports_nothing_of_the_host_side(tmp_path: Path) -> None:
    dest = staging.stage_agent(tmp_path / "agent")
    names = {p.relative_to(dest).as_posix() for p in dest.rglob("*.py")}
    assert "provisioner/agent/station.py" in names and "provisioner/formats/bmap.py" in names
    assert "provisioner/formats/manifest.py" in names
    assert not any(n.startswith(("provisioner/build", "provisioner/netboot", "provisioner/registry"))
                   for n in names)
    # the agent's own CLI (`deelit agent …` on the installer) goes along
    assert {"provisioner/agent/commands.py", "provisioner/agent/__main__.py"} <= names
    for path in (dest / "provisioner").rglob("*.py"):
        text = path.read_text()
        for forbidden in ("provisioner.build", "provisioner.netboot", "provisioner.registry",
                          "provisioner.cli"):
            assert forbidden not in text, f"{path.name} uses {forbidden}"
        if path.name not in ("commands.py", "__main__.py"):  # the CLI: Debian's typer and rich
            assert "import typer" not in text and "import rich" not in text, path.name


def test_builds_with_the_installer_role_stage_the_agent_themselves(tmp_path: Path) -> None:
    from provisioner.profile import load_profile

    (tmp_path / "installer").mkdir()
    assert staging.stage_role_inputs(load_profile("ci"), tmp_path) == []
    assert not (tmp_path / staging.AGENT_STAGE).exists()
    assert staging.stage_role_inputs(load_profile("installer"), tmp_path) == ["installer"]
    staged = tmp_path / staging.AGENT_STAGE / "provisioner" / "agent" / "station.py"
    assert staged.read_bytes() == (staging.PACKAGE / "agent" / "station.py").read_bytes()


def test_disk_size_from_the_kernel_when_smart_has_none() -> None:
    from provisioner.agent.inventory import Disk, Inventory
    from provisioner.agent.smart import DiskHealth

    inv = Inventory(disks=[Disk(name="vda", path="/dev/vda", size_bytes=3 << 30, rotational=False)])
    disks = [DiskHealth(source="/dev/vda", reader="smartctl-json"),
             DiskHealth(source="/dev/sda", reader="smartctl-json", size_bytes=5)]
    got = station.with_known_sizes(inv, disks)
    assert [d.size_bytes for d in got] == [3 << 30, 5]


def test_the_cards_facts_carry_disk_health_memory_battery_and_reasons() -> None:
    from provisioner.agent.battery import Battery
    from provisioner.agent.health import DeviceGrade, DiskGrade, Reason
    from provisioner.agent.inventory import Inventory
    from provisioner.agent.station import machine_facts

    worn = Reason(component="battery", code="wear", grade="B", message="58 % of design capacity")
    grade = DeviceGrade(grade="B", reasons=[worn], disks=[
        DiskGrade(source="/dev/sda", model="ST500", serial="S1", kind="hdd",
                  size_bytes=500_000_000_000, grade="B", reasons=[])])
    inv = Inventory.model_construct(maker="LENOVO", model="20AN", ram_bytes=8 << 30, disks=[],
                                    battery=Battery(name="BAT0", unit="uWh", full=582, design=1000))
    facts = machine_facts(inv, grade, "00:00:5e:00:53:01")
    assert facts["disks"] == "hdd 500 GB: B" and facts["ram"] == "8 GiB"
    assert facts["battery"] == "58 %" and facts["reasons"] == "battery: 58 % of design capacity"
    assert (facts["maker"], facts["grade"], facts["mac"]) == ("LENOVO", "B", "00:00:5e:00:53:01")
