"""Role `base`: locale, keyboard, timezone, hostname, apt, locked accounts."""

from __future__ import annotations

import re
from typing import Any

import pytest


def test_locale_is_generated_and_default(host: Any, profile: dict[str, Any]) -> None:
    locale = profile["locale"]
    assert f"LANG={locale}" in host.file("/etc/locale.conf").content_string.splitlines()
    default = host.file("/etc/default/locale")  # what PAM reads: must be the same file
    assert default.is_symlink and default.linked_to == "/etc/locale.conf"
    generated = host.check_output("locale -a").lower().replace("-", "")
    assert locale.lower().replace("-", "").replace("utf8", "utf8") in generated


def test_keyboard_layout(host: Any, profile: dict[str, Any]) -> None:
    assert f'XKBLAYOUT="{profile["keyboard"]}"' in host.file("/etc/default/keyboard").content_string


def test_timezone(host: Any, profile: dict[str, Any]) -> None:
    localtime = host.file("/etc/localtime")
    assert localtime.is_symlink
    assert localtime.linked_to == f"/usr/share/zoneinfo/{profile['timezone']}"


def test_root_locked_and_no_usable_password(host: Any, booted: bool,
                                            role_vars: dict[str, Any]) -> None:
    """The image carries no account with a usable password; once booted, only the people's
    accounts the first boot made (roles/firstboot: the parent, the child) may have one."""
    shadow = host.file("/etc/shadow").content_string
    entries = dict(line.split(":")[:2] for line in shadow.splitlines() if line)
    assert entries["root"].startswith("!")
    usable = {user for user, pw in entries.items() if not pw.startswith(("!", "*"))}
    people: set[str] = set()
    if booted and "firstboot" in role_vars:
        passwd = host.file("/etc/passwd").content_string.splitlines()
        people = {f[0] for f in (line.split(":") for line in passwd) if 1000 <= int(f[2]) < 60000}
    assert usable <= people


def test_apt_sources_name_the_suite(host: Any, profile: dict[str, Any]) -> None:
    sources = host.file("/etc/apt/sources.list.d/debian.sources").content_string
    assert f"Suites: {profile['suite']} {profile['suite']}-updates" in sources
    assert not host.file("/etc/apt/sources.list").exists


def test_tree_is_finalized(host: Any, booted: bool) -> None:
    if booted:
        return  # a running system has its own machine-id and host keys by now
    assert host.file("/etc/machine-id").content_string == ""
    assert host.run("ls /etc/ssh/ssh_host_* 2>/dev/null").stdout == ""
    assert host.run("ls /var/lib/apt/lists/ | grep _ || true").stdout == ""
    assert not host.file("/usr/sbin/policy-rc.d").exists
    assert host.file("/etc/hostname").content_string == "deelit\n"  # not the build host's name


def test_booted_system_is_healthy(host: Any, booted: bool, profile: dict[str, Any]) -> None:
    if not booted:
        return
    # bounded: a unit that never finishes (a first boot waiting at its dialog) fails here
    state = host.run("timeout 900 systemctl is-system-running --wait").stdout.strip()
    failed = host.run("systemctl --failed --no-legend --plain").stdout
    assert (state, failed) == ("running", "")
    pattern = re.escape(profile["hostname"]).replace(re.escape("{serial}"), "[a-z0-9]{1,6}")
    name = host.check_output("hostname")
    assert re.fullmatch(pattern, name)
    assert host.run(f"getent hosts {name}").rc == 0  # nss-myhostname: sudo needs it


def test_own_name_resolves_without_dns(host: Any) -> None:
    assert host.package("libnss-myhostname").is_installed
    hosts_line = [ln for ln in host.file("/etc/nsswitch.conf").content_string.splitlines()
                  if ln.startswith("hosts:")]
    assert hosts_line and "myhostname" in hosts_line[0]


def test_verify_access_only_in_a_vm_handed_a_key(host: Any, role_settings: Any,
                                                  booted: bool) -> None:
    """deelit verify's way in (roles/base): enabled in the image, running only where systemd
    imported the deelit.verify.ssh-key credential and found a VM; the SSH service itself stays
    off unless technician_ssh configured it."""
    if not role_settings("base")["base_verify_access"]:
        pytest.skip("this profile turns deelit verify's access off")
    unit = host.service("deelit-verify-access")
    assert unit.is_enabled
    assert host.file("/etc/systemd/system/ssh.service.d/deelit-base.conf").contains(
        "ConditionPathExists=/etc/ssh/sshd_config.d/50-deelit.conf")
    if not booted:
        return
    handed = host.run("test -s /run/credentials/@system/deelit.verify.ssh-key").rc == 0
    in_vm = host.run("systemd-detect-virt --vm --quiet").rc == 0
    assert unit.is_running == (handed and in_vm)
    # (images without iproute2 have no ss for testinfra's socket module: bash's /dev/tcp)
    answers = host.run("timeout 10 bash -c '</dev/tcp/127.0.0.1/2222'").rc == 0
    assert answers == (handed and in_vm)
