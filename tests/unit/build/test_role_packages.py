"""What roles declare they install: evaluated as Ansible would, from the roles themselves."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from provisioner.build import bootstrap, configure, role_packages
from provisioner.errors import DeelitError
from provisioner.profile import PROJECT_ROOT, ROLES_DIR, load_profile

PLAY = configure.play_vars(load_profile("pupil"), "http://m.invalid/debian", None)


def test_pupil_roles_declare_their_packages() -> None:
    found = role_packages.declared(load_profile("pupil"), ROLES_DIR, PLAY)
    assert set(found) == {r.name for r in load_profile("pupil").roles}
    assert {"xfce4", "lightdm", "cups"} <= set(found["desktop"])  # vars/main.yml + printing on
    assert {"intel-microcode", "firmware-iwlwifi"} <= set(found["firmware"])
    assert "unbound" in found["parental_filter"] and "timekpr-next" not in found["parental_filter"]
    assert "systemd-resolved" not in found["base"]  # pupil: base_network none
    # ...and the bootstrap installs them all in its one apt run
    assert set(found["school_apps"]) <= set(bootstrap.bootstrap_packages(load_profile("pupil"), found))


def test_profile_vars_decide_as_in_ansible() -> None:
    """pupil-test turns screen time on and adds technician_ssh; `ci` keeps networkd."""
    test = role_packages.declared(load_profile("pupil-test"), ROLES_DIR, PLAY)
    assert "timekpr-next" in test["parental_filter"]
    assert test["technician_ssh"] == ["openssh-server"]
    ci = role_packages.declared(load_profile("ci"), ROLES_DIR, PLAY)
    assert "systemd-resolved" in ci["base"]


def test_an_override_in_the_profile_wins(tmp_path: Path) -> None:
    prof = load_profile("pupil")
    roles = [r.model_copy(update={"vars": {"desktop_printing": False, "desktop_scanning": False}})
             if r.name == "desktop" else r for r in prof.roles]
    found = role_packages.declared(prof.model_copy(update={"roles": roles}), ROLES_DIR, PLAY)
    assert "cups" not in found["desktop"] and "xfce4" in found["desktop"]


@pytest.mark.parametrize("expression, message", [
    ("\"{{ nowhere_defined }}\"", "cannot be evaluated"),
    ("\"{{ 'just-one' }}\"", "not a list of package names"),
])
def test_a_broken_declaration_names_file_and_variable(tmp_path: Path, expression: str,
                                                      message: str) -> None:
    roles = tmp_path / "roles"
    shutil.copytree(PROJECT_ROOT / "roles" / "branding", roles / "branding")
    defaults = roles / "branding" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text() + f"\nbranding_apt_packages: {expression}\n")
    prof = load_profile("pupil")
    only = prof.model_copy(update={"roles": [r for r in prof.roles if r.name == "branding"]})
    with pytest.raises(DeelitError) as info:
        role_packages.declared(only, roles, PLAY)
    assert str(defaults) in str(info.value) and "branding_apt_packages" in str(info.value)
    assert message in str(info.value)
