"""Role `support_tools`: security upgrades, remote help only after consent, an on-request
tunnel only when configured, deelit-diag, and the "Hulp nodig?" launcher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(scope="module")
def st(role_settings: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return role_settings("support_tools")


def test_unattended_security_upgrades(host: Any, st: dict[str, Any]) -> None:
    on = st["support_tools_unattended_upgrades"]
    assert host.package("unattended-upgrades").is_installed == on
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert f'APT::Periodic::Unattended-Upgrade "{int(on)}";' in periodic
    assert host.service("apt-daily-upgrade.timer").is_enabled
    # Debian's default origins: the security archive is among them
    assert "-security" in host.file("/etc/apt/apt.conf.d/50unattended-upgrades").content_string


def test_point_contact_details(host: Any, st: dict[str, Any]) -> None:
    values = host.run(". /etc/deelit/point.conf && printf '%s\\n' \"$POINT_NAME\" \"$POINT_PHONE\"").stdout
    assert values.splitlines() == [st["support_tools_point_name"], st["support_tools_point_phone"]]
    launcher = host.file("/usr/share/applications/deelit-hulp-nodig.desktop").content_string
    assert "Name=Hulp nodig?" in launcher
    link = host.file(f"{st['support_tools_skel_desktop']}/deelit-hulp-nodig.desktop")
    assert link.linked_to == "/usr/share/applications/deelit-hulp-nodig.desktop"


def test_remote_help_asks_before_sharing(host: Any, st: dict[str, Any]) -> None:
    script = host.file("/usr/local/bin/deelit-hulp-op-afstand")
    assert script.mode == 0o755
    assert host.run("bash -n /usr/local/bin/deelit-hulp-op-afstand").rc == 0
    text = script.content_string
    # consent first: the question comes before x11vnc or the tunnel is started
    assert text.index("zenity --question") < text.index("x11vnc -display") < text.index("systemctl start")
    assert "-localhost" in text
    assert host.package("x11vnc").is_installed == st["support_tools_remote_help"]


def test_dialogs_draw_without_a_gpu(host: Any) -> None:
    """zenity 4 (GTK 4) crashed with its default GPU renderer in a VM without a GL driver;
    the dialogs use the cairo renderer. Booted, the question is drawn and answered in
    tests/integration/pupil (remote help)."""
    for script in ("/usr/local/bin/deelit-hulp-op-afstand", "/usr/local/bin/deelit-hulp-nodig"):
        assert "export GSK_RENDERER=cairo" in host.file(script).content_string, script


def test_tunnel_only_when_configured(host: Any, st: dict[str, Any]) -> None:
    configured = bool(st["support_tools_tunnel_host"])
    assert host.file("/etc/systemd/system/deelit-support-tunnel.service").exists == configured
    assert host.file("/etc/polkit-1/rules.d/50-deelit-support-tunnel.rules").exists == configured
    assert host.file("/etc/deelit/support").exists == configured
    assert host.file("/usr/local/sbin/deelit-support-key").exists == configured


def test_tunnel_pins_the_servers_host_key(host: Any, st: dict[str, Any]) -> None:
    if not st["support_tools_tunnel_host"]:
        pytest.skip("this profile sets no support tunnel")
    unit = host.file("/etc/systemd/system/deelit-support-tunnel.service").content_string
    assert "StrictHostKeyChecking=yes" in unit and "accept-new" not in unit
    assert "UserKnownHostsFile=/etc/deelit/support/known_hosts" in unit
    pinned = host.file("/etc/deelit/support/known_hosts").content_string.split()
    assert pinned[1:] == st["support_tools_tunnel_host_key"].split()[:2]


def test_each_laptop_makes_its_own_tunnel_key(host: Any, st: dict[str, Any], booted: bool) -> None:
    """No key in the image (so none on a stick, in the manifest or the cache): each laptop
    makes its own at first boot, readable by the tunnel's account only."""
    if not st["support_tools_tunnel_host"]:
        pytest.skip("this profile sets no support tunnel")
    key = host.file("/etc/deelit/support/id_tunnel")
    if not booted:
        assert not key.exists, "the image carries a tunnel key: every laptop would share it"
        assert host.service("deelit-support-key").is_enabled
        return
    host.run("timeout 300 systemctl is-system-running --wait")
    assert key.exists and key.mode == 0o600 and key.user == "deelit-support"
    shown = host.run("/usr/local/sbin/deelit-support-key")
    assert shown.rc == 0 and shown.stdout.startswith("ssh-ed25519 ")
    assert host.file("/etc/deelit/support/id_tunnel.pub").content_string.strip() in shown.stdout


def test_nothing_listens_for_remote_help_unasked(host: Any, booted: bool) -> None:
    if booted:
        assert not host.socket("tcp://5900").is_listening


def test_diag_is_there_and_never_reads_homes(host: Any) -> None:
    diag = host.file("/usr/local/sbin/deelit-diag")
    assert diag.mode == 0o755
    assert host.run("bash -n /usr/local/sbin/deelit-diag").rc == 0
    code = "\n".join(ln for ln in diag.content_string.splitlines() if not ln.lstrip().startswith("#"))
    for private in ("/home", "/root", ".mozilla", "HOME"):
        assert private not in code
