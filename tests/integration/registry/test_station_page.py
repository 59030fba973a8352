"""The cockpit of a point without a station (`deelit registry serve`) in Debian's Chromium
(Playwright): today's devices, updated live by the server's event stream when a device
registers or moves on (no reload), on a phone's width. The screenshot's path is printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from provisioner.lab.postgres import RegistryServer
from provisioner.registry.schemas import DeviceIn
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller

ROWS = "table.devices tbody tr"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_registry_cockpit_live_on_a_phone(tmp_path: Path, browser: Any) -> None:
    store = Store(Settings(data_dir=tmp_path))
    station = Caller("mec-pc1")
    for serial in ("5CG1234ABC", "PF0ABCDE", "D8XD62J"):
        store.register(DeviceIn(serial=serial, maker="HP", model="EliteBook 840 G3",
                                grade="B"), station)
    token = store.create_token("mec-pc1")
    store.close()
    server = RegistryServer(tmp_path).start()
    try:
        page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                is_mobile=True)
        page.goto(f"{server.base}/#token={token}")
        page.wait_for_function(f"document.querySelectorAll('{ROWS}').length === 3")
        assert "token=" not in page.url  # traded for the session cookie
        page.evaluate("window.__sameDocument = true")
        h = {"Authorization": f"Bearer {token}"}
        new = httpx.post(f"{server.base}/api/v1/devices", headers=h, timeout=10,
                         json={"serial": "X2735244G", "maker": "TOSHIBA",
                               "model": "Satellite 2410"}).json()["asset_tag"]
        httpx.post(f"{server.base}/api/v1/devices/DEELIT-MEC-000001/events", headers=h,
                   timeout=10, json={"type": "wiped"}).raise_for_status()
        page.wait_for_function(f"document.querySelectorAll('{ROWS}').length === 4",
                               timeout=15000)
        page.wait_for_function("document.querySelector('tr[data-tag=\"DEELIT-MEC-000001\"] "
                               ".status').textContent === 'gewist'", timeout=15000)
        assert page.evaluate("window.__sameDocument") is True  # updated in place, not reloaded
        assert new in page.text_content("table.devices")
        path = tmp_path / "registry-page.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"registry cockpit screenshot: {path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    finally:
        server.stop()
