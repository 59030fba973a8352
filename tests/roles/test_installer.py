"""Role `installer`: the agent, its tools, its unit, and `deelit agent …` for a technician."""

from __future__ import annotations

from typing import Any

import pytest

TOOLS = ["smartctl", "nvme", "hdparm", "dmidecode", "zstd", "lsblk", "sfdisk", "mokutil"]


@pytest.fixture
def installer(role_vars: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if "installer" not in role_vars:
        pytest.skip("profile has no installer role")
    return role_vars["installer"]


def test_tools_are_there(host: Any, installer: dict[str, Any]) -> None:
    for tool in TOOLS:
        assert host.exists(tool), tool


def test_agent_cli_runs_with_debians_python(host: Any, installer: dict[str, Any]) -> None:
    out = host.run("deelit agent --help")
    assert out.rc == 0, out.stderr
    for command in ("inventory", "grade", "wipe", "run"):
        assert command in out.stdout
    grade = host.run("deelit agent grade --help")
    assert grade.rc == 0 and "--smartctl-json" in grade.stdout, grade.stderr
    other = host.run("deelit build ci")
    assert other.rc == 2 and "only 'deelit agent" in other.stderr


def test_agent_unit(host: Any, installer: dict[str, Any]) -> None:
    unit = host.file("/etc/systemd/system/deelit-agent.service").content_string
    assert "provisioner.agent.station" in unit
    assert host.service("deelit-agent").is_enabled == installer.get("installer_autostart", True)
