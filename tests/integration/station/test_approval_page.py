"""The station page's approval controls in Debian's Chromium: a waiting machine's card says
what it is; approve, refuse, approve all, and batch approval on and off each work from the
page. A screenshot is written beside the test's files and its path printed."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from provisioner.netboot.config import StationConfig
from provisioner.netboot.http import create_app
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.vm import free_port

from ..chromium import DevTools

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CARDS = "document.querySelectorAll('#waiting .card').length"



@pytest.fixture
def station(tmp_path: Path) -> Iterator[tuple[FastAPI, str, dict[str, str], Store]]:
    """The station's HTTP app on loopback: (app, base URL, agent auth header, store)."""
    port = free_port()
    cfg = StationConfig(interface="lo", server_ip="127.0.0.1", subnet="127.0.0.0", http_port=port,
                        data_dir=tmp_path / "data", run_dir=tmp_path / "run",
                        image_dir=tmp_path / "image", installer_dir=tmp_path / "installer")
    cfg.data_dir.mkdir()
    store = Store(Settings(data_dir=cfg.data_dir))
    agent = store.create_token("pxe-test", scope="boot")
    app = create_app(cfg, None, agent, store)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield app, cfg.http_base, {"Authorization": f"Bearer {agent}"}, store
    server.should_exit = True
    thread.join(10)
    store.close()


def test_a_volunteer_approves_refuses_and_arms_a_batch_on_the_page(
        tmp_path: Path, chromium: DevTools, station: tuple[FastAPI, str, dict[str, str], Store]) -> None:
    app, base, agent, store = station
    approvals = app.state.approvals
    for serial, maker, model, grade in (("5CG1234ABC", "HP", "EliteBook 840 G3", "B"),
                                        ("PF0ABCDE", "LENOVO", "ThinkPad T460", "A"),
                                        ("D8XD62J", "DELL", "Latitude E7470", "C")):
        httpx.post(f"{base}/station/progress", headers=agent, timeout=10, json={
            "key": serial, "serial": serial, "stage": "waiting", "maker": maker, "model": model,
            "grade": grade, "disks": "sda 256 GB"}).raise_for_status()
    token = store.create_token("pxe-test")
    chromium.page("Emulation.setDeviceMetricsOverride", width=800, height=1100,
                  deviceScaleFactor=1, mobile=False)
    chromium.page("Page.navigate", url=f"{base}/station#token={token}")
    chromium.wait_for(f"{CARDS} === 3")
    # the token went into an HttpOnly session cookie: not in the address, storage or scripts
    assert "token" not in chromium.js("location.href")
    assert chromium.js("localStorage.getItem('deelit-token')") is None
    assert chromium.js("document.cookie") == ""
    card = "document.querySelector('.card[data-key=\"PF0ABCDE\"]')"
    assert "LENOVO ThinkPad T460" in chromium.js(f"{card}.textContent")
    assert "kwaliteitA" in chromium.js(f"{card}.textContent")
    shot = base64.b64decode(chromium.page("Page.captureScreenshot", format="png")["data"])
    (tmp_path / "station-waiting.png").write_bytes(shot)
    print(f"station page screenshot: {tmp_path / 'station-waiting.png'}")

    chromium.js(f"{card}.querySelector('button.yes').click()")
    chromium.wait_for(f"{CARDS} === 2")
    assert approvals.verdict("PF0ABCDE") == "approved"
    chromium.js("document.querySelector('.card[data-key=\"D8XD62J\"] button.no').click()")
    chromium.wait_for(f"{CARDS} === 1")
    assert approvals.verdict("D8XD62J") == "refused"
    chromium.js("document.querySelector('#approve-all').click()")
    chromium.wait_for(f"{CARDS} === 0")
    assert approvals.verdict("5CG1234ABC") == "approved"
    assert store.find_device(serial="5CG1234ABC") is None  # approval records nothing itself

    assert "uit" in chromium.js("document.querySelector('#batch').textContent")
    chromium.js("document.querySelector('#count').value = '4'")
    chromium.js("document.querySelector('#arm button[type=submit]').click()")
    chromium.wait_for("document.querySelector('#batch').className === 'on'")
    banner = chromium.js("document.querySelector('#batch').textContent")
    assert "BATCH AAN" in banner and "nog 30 min" in banner and "nog 4 toestel" in banner
    assert approvals.status()["remaining"] == 4
    chromium.js("document.querySelector('#disarm').click()")
    chromium.wait_for("document.querySelector('#batch').className === 'off'")
    assert approvals.status()["armed"] is False
    # a wrong token gets no data: the page says the station refused
    chromium.page("Page.navigate", url="about:blank")  # a new load, not a hash change
    chromium.page("Page.navigate", url=f"{base}/station#token=dlt_wrong")
    chromium.wait_for("document.querySelector('#note').textContent.includes('HTTP 401')")
    assert chromium.js(CARDS) == 0
