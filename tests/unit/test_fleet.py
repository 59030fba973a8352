"""deelit fleet: the generated play, the recap parser, the example inventory, the command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from provisioner import fleet
from provisioner.cli import make_app
from provisioner.errors import DeelitError
from provisioner.profile import PROJECT_ROOT, load_profile

app = make_app()

RECAP = """
PLAY RECAP *********************************************************************
deelit-ex-000001           : ok=57   changed=2    unreachable=0    failed=0    skipped=9    rescued=0    ignored=0
deelit-ex-000002           : ok=0    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
"""


def test_play_runs_the_profile_roles_but_base() -> None:
    profile = load_profile("pupil")
    play = yaml.safe_load(fleet.render_playbook(profile, "http://mirror.invalid/debian", None))[0]
    names = [r["role"] for r in play["roles"]]
    assert names == [r.name for r in profile.roles if r.name != "base"]
    assert "support_tools" in names and "firstboot" in names
    assert play["vars"]["deelit_fleet"] is True
    assert play["vars"]["deelit_components"] == profile.components
    assert play["hosts"] == "all"


def test_profile_role_vars_are_passed_and_point_settings_are_not() -> None:
    """Role vars of the profile pass as role params; the point's contact details must stay
    defaults, so inventory group_vars can override them."""
    profile = load_profile("pupil-test")
    play = yaml.safe_load(fleet.render_playbook(profile, "http://mirror.invalid/debian", None))[0]
    by_name = {r["role"]: r.get("vars", {}) for r in play["roles"]}
    assert by_name["technician_ssh"] == {"technician_ssh_accept_credential": True}
    assert not any(k.startswith("support_tools_point") for v in by_name.values() for k in v)


def test_recap_parsing() -> None:
    results = fleet.parse_recap("TASK [x]\nok: [a]\n" + RECAP)
    assert results["deelit-ex-000001"] == fleet.HostResult("deelit-ex-000001", 57, 2, 0, 0)
    assert results["deelit-ex-000001"].success
    assert not results["deelit-ex-000002"].success
    assert fleet.parse_recap("ERROR! no hosts matched") == {}


def test_example_inventory_has_point_details_and_no_personal_data() -> None:
    folder = PROJECT_ROOT / "inventory" / "example"
    hosts = yaml.safe_load((folder / "hosts.yml").read_text())
    assert all(name.startswith("deelit-ex-") for name in hosts["example"]["hosts"])
    group = yaml.safe_load((folder / "group_vars" / "example.yml").read_text())
    assert group["support_tools_point_phone"] and group["support_tools_point_name"]
    defaults = yaml.safe_load((PROJECT_ROOT / "roles/support_tools/defaults/main.yml").read_text())
    unknown = {k for k in group if not k.startswith("ansible_") and k not in defaults
               and not k.startswith("school_apps_")}
    assert unknown == set()
    # example addresses only (RFC 2606 / 5737): no real host, no family
    assert group["support_tools_tunnel_host"].endswith("example.org")
    assert all(h["ansible_host"].startswith("192.0.2.") for h in hosts["example"]["hosts"].values())


def test_missing_inventory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeelitError, match="no such inventory"):
        fleet.apply(load_profile("pupil"), tmp_path / "nope")


def test_cli_has_fleet_apply() -> None:
    result = CliRunner().invoke(app, ["fleet", "apply", "--help"])
    assert result.exit_code == 0
    assert "--inventory" in result.output and "--limit" in result.output
