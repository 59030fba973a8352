"""Role `branding`: the project's artwork in XFCE and the greeter, and the Dutch welcome page."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

SVG = "{http://www.w3.org/2000/svg}svg"


@pytest.fixture
def bvars(role_vars: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if "branding" not in role_vars:
        pytest.skip("profile has no branding role")
    return {"branding_dir": "/usr/share/deelit/branding", "branding_point_name": "DEEL IT",
            "branding_welcome_autostart": True, **role_vars["branding"]}


def test_artwork_is_svg_and_xfce_default_is_ours(host: Any, bvars: dict[str, Any]) -> None:
    folder = bvars["branding_dir"]
    for name in ("wallpaper.svg", "greeter.svg"):
        root = ET.fromstring(host.file(f"{folder}/{name}").content_string)
        assert root.tag == SVG and root.get("viewBox") == "0 0 1920 1080", name
    assert host.package("librsvg2-common").is_installed
    default = host.file("/usr/share/backgrounds/xfce/xfce-x.svg")
    assert default.is_symlink and default.linked_to == f"{folder}/wallpaper.svg"
    diversions = host.check_output("dpkg-divert --list /usr/share/backgrounds/xfce/xfce-x.svg")
    assert "xfce-x.svg.debian" in diversions
    assert host.file("/usr/share/backgrounds/xfce/xfce-x.svg.debian").exists  # Debian's, kept


def test_greeter_background(host: Any, bvars: dict[str, Any]) -> None:
    conf = host.file("/etc/lightdm/lightdm-gtk-greeter.conf").content_string
    section = conf.split("[greeter]", 1)[1]
    assert f"background={bvars['branding_dir']}/greeter.svg" in section.splitlines()


def test_welcome_page_is_dutch_and_opens_once(host: Any, bvars: dict[str, Any]) -> None:
    page = host.file(f"{bvars['branding_dir']}/welkom.html").content_string
    assert '<html lang="nl-BE">' in page and "Welkom bij je DEEL IT-laptop" in page
    assert bvars["branding_point_name"] in page and "Hulp nodig?" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from outside
    opener = host.file("/usr/local/bin/deelit-welkom")
    assert opener.mode == 0o755 and "welkom-gezien" in opener.content_string
    autostart = host.file("/etc/xdg/autostart/deelit-welkom.desktop")
    assert autostart.exists == bool(bvars["branding_welcome_autostart"])
    if autostart.exists:
        assert "Exec=/usr/local/bin/deelit-welkom --once" in autostart.content_string
    assert host.file("/usr/share/applications/deelit-welkom.desktop").exists
