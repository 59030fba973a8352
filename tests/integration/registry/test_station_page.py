"""The station page in headless Chromium (Debian's `chromium`), driven over the DevTools pipe.

Shows today's batch, updates live when a device registers or moves on (no reload), and fits
a phone's width. A screenshot is written next to the test's temporary files and its path
printed (pytest -rA or -s shows it).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from provisioner.lab.postgres import RegistryServer
from provisioner.registry.schemas import DeviceIn
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller


class DevTools:
    """Minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, chromium: str, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # bash (dash takes one-digit fds only) puts the pipe ends on the fds Chromium expects.
        script = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}'
        self.proc = subprocess.Popen(
            ["bash", "-c", script, chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL,
            stderr=open(profile.parent / "chromium.log", "wb"))  # noqa: SIM115
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, timeout: float = 30,
             **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return dict(reply.get("result", {}))
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, session=self.session, **params)

    def js(self, expression: str) -> Any:
        return self.page("Runtime.evaluate", expression=expression,
                         returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"page never satisfied: {expression}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); the station "
                    "page test needs it")
    tools = DevTools(binary, tmp_path / "chromium-profile")
    yield tools
    tools.close()


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
