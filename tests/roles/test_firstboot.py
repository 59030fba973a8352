"""Role `firstboot`: no usable password in the image; a first-boot dialog or seed creates the
parent (administrator) and child (ordinary) accounts, once. The booted flow with a seed is in
tests/integration/pupil."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(scope="module")
def fb(role_settings: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return role_settings("firstboot")


def shadow(host: Any) -> dict[str, str]:
    text = host.file("/etc/shadow").content_string
    return dict(line.split(":")[:2] for line in text.splitlines() if line)


def test_image_has_no_usable_password_and_no_people(host: Any, booted: bool) -> None:
    if booted:
        return  # after first boot the parent has one, by design
    entries = shadow(host)
    assert entries["root"].startswith("!")
    assert [u for u, pw in entries.items() if not pw.startswith(("!", "*"))] == []
    people = host.run("getent passwd | awk -F: '$3 >= 1000 && $3 < 60000'").stdout
    assert people == ""


def test_first_boot_unit_runs_before_the_greeter(host: Any, fb: dict[str, Any]) -> None:
    assert host.service("deelit-firstboot").is_enabled
    unit = host.file("/etc/systemd/system/deelit-firstboot.service").content_string
    assert "Before=display-manager.service getty@tty1.service" in unit
    assert f"ImportCredential={fb['firstboot_credential_prefix']}.*" in unit
    assert f"ConditionPathExists=!{fb['firstboot_state_dir']}/firstboot-done" in unit
    assert host.file("/usr/local/sbin/deelit-firstboot").mode == 0o755
    assert host.exists("whiptail")


def test_dialog_is_drawn_on_its_terminal_and_nothing_scribbles_over_it(host: Any, fb: dict[str, Any]) -> None:
    """whiptail draws through stderr: stderr in the journal meant no dialog on the screen."""
    unit = host.file("/etc/systemd/system/deelit-firstboot.service").content_string
    streams = dict(line.split("=", 1) for line in unit.splitlines()
                   if line.startswith(("StandardInput=", "StandardOutput=", "StandardError=")))
    assert streams == {"StandardInput": "tty", "StandardOutput": "tty", "StandardError": "tty"}
    assert f"TTYPath={fb['firstboot_tty']}" in unit
    quiet = host.file("/etc/sysctl.d/20-deelit-quiet-console.conf").content_string
    assert "kernel.printk = 3 4 1 3" in quiet


def test_script_is_valid_shell_and_dutch(host: Any, fb: dict[str, Any]) -> None:
    assert host.run("bash -n /usr/local/sbin/deelit-firstboot").rc == 0
    settings = host.run(". /etc/deelit/firstboot.conf && echo \"$PARENT $PREFIX\"").stdout.split()
    assert settings == [fb["firstboot_parent_user"], fb["firstboot_credential_prefix"]]
    script = host.file("/usr/local/sbin/deelit-firstboot").content_string
    assert "Kies een wachtwoord voor de ouder" in script
    assert "voornaam van je kind" in script


def test_child_logs_in_without_password_only_through_the_group(host: Any, fb: dict[str, Any]) -> None:
    pam = host.file("/etc/pam.d/lightdm").content_string.splitlines()
    rule = "auth      sufficient pam_succeed_if.so user ingroup nopasswdlogin"
    assert (rule in pam) == fb["firstboot_child_password_free"]
    if fb["firstboot_child_password_free"]:  # after pam_nologin, before the password check
        assert pam.index(rule) < pam.index("@include common-auth")
    assert host.group("nopasswdlogin").exists
    assert "sudo" not in fb["firstboot_child_groups"]


def test_not_done_in_the_image(host: Any, fb: dict[str, Any], booted: bool) -> None:
    if not booted:
        assert not host.file(f"{fb['firstboot_state_dir']}/firstboot-done").exists
