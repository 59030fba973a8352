"""Role `school_apps`: school software in Dutch, web apps as launchers and bookmarks, eID."""

from __future__ import annotations

import configparser
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def apps(role_settings: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return role_settings("school_apps")


def test_packages_follow_the_point(host: Any, apps: dict[str, Any]) -> None:
    wanted = set(apps["school_apps_packages"] + apps["school_apps_extra_packages"])
    removed = set(apps["school_apps_remove_packages"])
    assert [p for p in sorted(wanted - removed) if not host.package(p).is_installed] == []
    assert [p for p in sorted(removed) if host.package(p).is_installed] == []


def test_dutch_office_and_browser(host: Any) -> None:
    assert host.run("ls /usr/lib/libreoffice/program/resource/nl/LC_MESSAGES/*.mo | head -1").rc == 0
    assert host.run("ls -d /usr/share/libreoffice/help/nl/* | head -1").rc == 0
    assert host.run("ls /usr/lib/firefox-esr/browser/extensions/langpack-nl@*.xpi").rc == 0


def test_the_programs_are_there(host: Any) -> None:
    for command in ("lowriter", "localc", "loimpress", "firefox-esr", "gcompris-qt", "tuxpaint",
                    "tuxmath", "tuxtype", "thonny", "vlc", "laby"):
        # games live in /usr/games, which a desktop session's PATH has
        assert host.run(f"PATH=/usr/bin:/usr/games command -v {command}").rc == 0, command


def test_web_apps_in_menu_and_on_new_desktops(host: Any, apps: dict[str, Any]) -> None:
    for app in apps["school_apps_web_apps"]:
        launcher = host.file(f"/usr/share/applications/deelit-web-{app['id']}.desktop")
        assert f"Exec=x-www-browser {app['url']}" in launcher.content_string
        link = host.file(f"{apps['school_apps_skel_desktop']}/deelit-web-{app['id']}.desktop")
        assert link.is_symlink and link.linked_to == launcher.path
    assert host.file("/etc/alternatives/x-www-browser").linked_to.endswith("firefox-esr")


def test_web_apps_on_the_bookmarks_toolbar(host: Any, apps: dict[str, Any]) -> None:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(host.file(apps["school_apps_firefox_distribution"]).content_string)
    assert ini["Global"]["id"] and ini["Global"]["version"]  # Firefox ignores the file without them
    toolbar = ini["BookmarksToolbar"]
    found = {(toolbar[f"item.{n}.title"], toolbar[f"item.{n}.link"])
             for n in range(1, len(apps["school_apps_web_apps"]) + 1)}
    assert found == {(a["name"], a["url"]) for a in apps["school_apps_web_apps"]}
    # Firefox ESR looks for it in its distribution folder (a link to this one)
    assert host.file("/usr/lib/firefox-esr/distribution").linked_to == str(Path(apps["school_apps_firefox_distribution"]).parent)


def test_smart_cards_and_eid(host: Any, apps: dict[str, Any], booted: bool) -> None:
    assert host.service("pcscd.socket").is_enabled
    assert host.file("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so").exists
    drivers = host.check_output("opensc-tool --list-drivers").split()
    assert "belpic" in drivers  # OpenSC's driver for the Belgian eID
    if booted:
        assert host.socket("unix:///run/pcscd/pcscd.comm").is_listening
