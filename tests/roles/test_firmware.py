"""Role `firmware`: non-free-firmware enabled, firmware for common laptop hardware."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(scope="module")
def firmware(role_settings: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return role_settings("firmware")


def test_component_enabled(host: Any, firmware: dict[str, Any]) -> None:
    sources = host.file("/etc/apt/sources.list.d/debian.sources").content_string
    lines = [ln for ln in sources.splitlines() if ln.startswith("Components:")]
    assert lines and all(firmware["firmware_component"] in ln.split() for ln in lines)


def test_firmware_packages(host: Any, firmware: dict[str, Any]) -> None:
    wanted = firmware["firmware_packages"] + firmware["firmware_extra_packages"]
    if firmware["firmware_microcode"]:
        wanted += ["intel-microcode", "amd64-microcode"]
    assert [p for p in wanted if not host.package(p).is_installed] == []


@pytest.mark.parametrize("pattern", [
    "/lib/firmware/iwlwifi-*.ucode",        # Intel Wi-Fi
    "/lib/firmware/rtl_nic/rtl8168*.fw",    # Realtek Ethernet
    "/lib/firmware/rtw88/*.bin",            # Realtek Wi-Fi
    "/lib/firmware/ath10k/*/*/firmware*",   # Atheros Wi-Fi
    "/lib/firmware/brcm/brcmfmac*",         # Broadcom Wi-Fi
    "/lib/firmware/intel/sof*/*",           # SOF audio
    "/lib/firmware/amdgpu/*",               # AMD graphics
    "/lib/firmware/i915/*",                 # Intel graphics
])
def test_firmware_files_present(host: Any, firmware: dict[str, Any], pattern: str) -> None:
    found = host.run(f"ls -d {pattern} 2>/dev/null | head -1 | grep -c . || true").stdout.strip()
    assert found == "1", pattern
