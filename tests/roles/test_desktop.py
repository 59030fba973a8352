"""Role `desktop`: XFCE + LightDM, Belgian AZERTY in X and the greeter, Dutch greeter and
spelling, printing and scanning; boots to the graphical target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(scope="module")
def desktop(role_settings: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return role_settings("desktop")


def test_desktop_packages(host: Any, desktop: dict[str, Any]) -> None:
    wanted = desktop["desktop_common_packages"] + desktop["desktop_sessions"][desktop["desktop_environment"]]["packages"]
    wanted += desktop["desktop_printing_packages"] if desktop["desktop_printing"] else []
    wanted += desktop["desktop_scanning_packages"] if desktop["desktop_scanning"] else []
    missing = [p for p in wanted if not host.package(p).is_installed]
    assert missing == []


def test_belgian_azerty_in_console_x_and_greeter(host: Any, profile: dict[str, Any]) -> None:
    assert f'XKBLAYOUT="{profile["keyboard"]}"' in host.file("/etc/default/keyboard").content_string
    xorg = host.file("/etc/X11/xorg.conf.d/00-keyboard.conf").content_string
    assert f'Option "XkbLayout" "{profile["keyboard"]}"' in xorg
    # the layout really exists in the X keyboard database the greeter uses
    assert host.file(f"/usr/share/X11/xkb/symbols/{profile['keyboard']}").exists


def test_lightdm_greets_in_dutch_and_starts_the_session(host: Any, profile: dict[str, Any],
                                                       desktop: dict[str, Any]) -> None:
    conf = host.file("/etc/lightdm/lightdm.conf.d/50-deelit.conf").content_string
    session = desktop["desktop_sessions"][desktop["desktop_environment"]]["session"]
    assert "greeter-session=lightdm-gtk-greeter" in conf
    assert f"user-session={session}" in conf
    assert host.file(f"/usr/share/xsessions/{session}.desktop").exists
    assert host.file("/usr/share/xgreeters/lightdm-gtk-greeter.desktop").exists
    dropin = host.file("/etc/systemd/system/lightdm.service.d/deelit-locale.conf").content_string
    assert f"LANG={profile['locale']}" in dropin
    assert host.file("/usr/share/locale/nl/LC_MESSAGES/lightdm-gtk-greeter.mo").exists


def test_boots_to_the_graphical_greeter(host: Any) -> None:
    assert host.file("/etc/systemd/system/display-manager.service").linked_to.endswith("/lightdm.service")
    assert host.file("/etc/systemd/system/default.target").linked_to.endswith("/graphical.target")
    assert host.service("NetworkManager").is_enabled


def test_dutch_spelling_and_hyphenation(host: Any) -> None:
    assert host.file("/usr/share/hunspell/nl.dic").exists
    assert host.file("/usr/share/hyphen/hyph_nl_NL.dic").exists


def test_printing_and_scanning(host: Any, desktop: dict[str, Any], booted: bool) -> None:
    if desktop["desktop_printing"]:
        assert host.service("cups").is_enabled
        if booted:
            assert host.run("lpstat -r").stdout.strip() == "scheduler is running"
    if desktop["desktop_scanning"]:
        backends = host.file("/etc/sane.d/dll.d/airscan").content_string
        assert "airscan" in backends


def test_greeter_runs_when_booted(host: Any, booted: bool) -> None:
    if not booted:
        return
    assert host.service("lightdm").is_running
    assert host.run("pgrep -x Xorg || pgrep -f /usr/lib/xorg/Xorg").rc == 0


def test_hostname_stays_the_serial_one_and_resolves(host: Any, booted: bool) -> None:
    conf = host.file("/etc/NetworkManager/conf.d/50-deelit-hostname.conf").content_string
    assert "hostname-mode=none" in conf
    assert "myhostname" in host.file("/etc/nsswitch.conf").content_string
    if booted:  # the base role's name from the serial, not /etc/hostname's, and it resolves
        name = host.check_output("hostname")
        assert name.startswith("deelit-"), name
        assert host.run(f"getent hosts {name}").rc == 0
