"""The station page in headless Chromium (Debian's `chromium`), driven over the DevTools pipe.

Shows today's batch, updates live when a device registers or moves on (no reload), and fits
a phone's width. A screenshot is written next to the test's temporary files and its path
printed (pytest -rA or -s shows it).
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from provisioner.lab.postgres import RegistryServer
from provisioner.registry.schemas import DeviceIn
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller

from ..chromium import DevTools

ROWS = "document.querySelectorAll('#devices tbody tr').length"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_station_page_live_on_a_phone(tmp_path: Path, chromium: DevTools) -> None:
    store = Store(Settings(data_dir=tmp_path))
    station = Caller("mec-pc1")
    for serial in ("5CG1234ABC", "PF0ABCDE", "D8XD62J"):
        store.register(DeviceIn(serial=serial, maker="HP", model="EliteBook 840 G3",
                                grade="B"), station)
    token = store.create_token("mec-pc1")
    store.close()
    server = RegistryServer(tmp_path).start()
    try:
        chromium.page("Emulation.setDeviceMetricsOverride", width=390, height=844,
                      deviceScaleFactor=2, mobile=True)
        chromium.page("Page.navigate", url=f"{server.base}/#token={token}")
        chromium.wait_for(f"{ROWS} === 3")
        chromium.js("window.__sameDocument = true")
        assert chromium.js("getComputedStyle(document.querySelector('#login')).display") == "none"
        assert "token=" not in chromium.js("location.href")  # token moved out of the URL
        assert chromium.js("document.querySelector('#summary').textContent").startswith("3 ")

        h = {"Authorization": f"Bearer {token}"}
        new = httpx.post(f"{server.base}/api/v1/devices", headers=h, timeout=10,
                         json={"serial": "X2735244G", "maker": "TOSHIBA",
                               "model": "Satellite 2410"}).json()["asset_tag"]
        httpx.post(f"{server.base}/api/v1/devices/DEELIT-MEC-000001/events", headers=h,
                   timeout=10, json={"type": "wiped"}).raise_for_status()
        chromium.wait_for(f"{ROWS} === 4", timeout=15)
        chromium.wait_for("document.querySelector('tr[data-tag=\"DEELIT-MEC-000001\"] "
                          ".stage').textContent === 'wiped'", timeout=15)
        assert chromium.js("window.__sameDocument") is True  # updated in place, not reloaded
        assert new in chromium.js("document.querySelector('#devices').textContent")
        shot = base64.b64decode(chromium.page("Page.captureScreenshot", format="png")["data"])
        assert shot.startswith(b"\x89PNG")
        path = tmp_path / "station-page.png"
        path.write_bytes(shot)
        print(f"station page screenshot: {path}")
        assert chromium.js("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    finally:
        server.stop()
