"""The volunteer's cockpit on a station, in Debian's Chromium (Playwright): cards appear and
move as machines report, live (server-sent events, no reload); approve, refuse, approve all,
batch on and off, retry, search, a status change, the label and the certificate each work from
the page; a wrong or missing token gets the login view and no data; two volunteers changing
one device: one wins, the other sees why. Screenshots are written beside the test's files and
their paths printed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from provisioner.netboot.config import StationConfig
from provisioner.netboot.http import create_app
from provisioner.registry.lifecycle import EventType
from provisioner.registry.schemas import DeviceIn, EventIn
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller
from provisioner.vm import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
WAITING = "section.waiting .card"
Station = tuple[FastAPI, str, dict[str, str], Store]


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
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


def report(base: str, agent: dict[str, str], **row: Any) -> None:
    """What an agent posts about its machine."""
    httpx.post(f"{base}/station/progress", headers=agent, timeout=10, json=row).raise_for_status()


def ready_device(store: Store) -> str:
    """A laptop imaged earlier today: registered, wiped (with its certificate), ready."""
    who = Caller("pxe-test")
    tag = store.register(DeviceIn(serial="R90XK2LP", maker="LENOVO", model="ThinkPad T470",
                                  grade="A", ram_bytes=8 << 30), who).asset_tag
    store.add_event(tag, EventIn(type=EventType.wiped, details={
        "method": "nvme-sanitize", "result": "passed", "certificate_sha256": "ab" * 32}), who)
    for kind in (EventType.imaged, EventType.verified, EventType.ready):
        store.add_event(tag, EventIn(type=kind, build_id="pupil-1a2b3c4d5e6f"), who)
    return tag


def test_a_cafe_day_from_the_cockpit(tmp_path: Path, browser: Any, station: Station) -> None:
    app, base, agent, store = station
    approvals = app.state.approvals
    token = store.create_token("pxe-test")
    tag = ready_device(store)
    context = browser.new_context(viewport={"width": 1100, "height": 1300})
    page = context.new_page()

    # no token, or a wrong one: the login view and no data
    page.goto(f"{base}/")
    assert page.locator("form[action='/ui/login']").is_visible()
    assert page.locator(".card").count() == 0
    page.fill("#token", "dlt_wrong")
    page.click("form[action='/ui/login'] button")
    assert page.locator(".error").is_visible() and page.locator(".card").count() == 0
    page.goto(f"{base}/station#token=dlt_wrong")
    page.wait_for_selector("form[action='/ui/login']")
    assert page.locator(".card").count() == 0
    assert httpx.get(f"{base}/ui/board", timeout=10).status_code == 401

    # the address serve prints: the token becomes an HttpOnly cookie, out of the address
    page.goto(f"{base}/station#token={token}")
    page.wait_for_selector("#board")
    assert "token" not in page.url and page.evaluate("document.cookie") == ""
    page.evaluate("window.__sameDocument = true")
    for serial, maker, model, grade in (("5CG1234ABC", "HP", "EliteBook 840 G3", "B"),
                                        ("PF0ABCDE", "LENOVO", "ThinkPad T460", "A"),
                                        ("D8XD62J", "DELL", "Latitude E7470", "C")):
        report(base, agent, key=serial, serial=serial, stage="waiting", maker=maker,
               model=model, grade=grade, disks="sda 256 GB SSD", mac="00:00:5e:00:53:0a",
               ram="8 GiB", battery="71 %", reasons="battery: 71 % of its design capacity")
    page.wait_for_function(f"document.querySelectorAll('{WAITING}').length === 3")
    report(base, agent, key="00:00:5e:00:53:21", serial="To Be Filled By O.E.M.",
           mac="00:00:5e:00:53:21", stage="install", percent=40.0, maker="ACER",
           model="TravelMate P214", grade="B")
    report(base, agent, key="CND7051XYZ", serial="CND7051XYZ", stage="failed", maker="HP",
           model="ProBook 650 G2", message="/dev/sda: ATA security is frozen; suspend")
    report(base, agent, key="R90XK2LP", serial="R90XK2LP", stage="done", asset_tag=tag,
           maker="LENOVO", model="ThinkPad T470", grade="A", message=f"{tag}: ready")
    lenovo = page.locator(".card[data-key='PF0ABCDE']").text_content()
    for fact in ("LENOVO ThinkPad T460", "8 GiB", "71 %", "71 % of its design capacity"):
        assert fact in lenovo, fact
    failed = page.locator(".card[data-key='CND7051XYZ']")
    failed.wait_for()
    assert "ATA-beveiliging bevroren" in failed.locator(".advice").text_content()
    wiping = page.locator(".card[data-key='00:00:5e:00:53:21']")
    assert "geen echt serienummer" in wiping.text_content()
    assert wiping.locator("progress").get_attribute("value") == "40.0"
    counts = page.text_content(".counts")
    assert "1 klaar" in " ".join(counts.split()) and "3 wacht" in " ".join(counts.split())
    assert page.evaluate("window.__sameDocument") is True  # all of it live, no reload
    shot = tmp_path / "cockpit-board.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"cockpit board screenshot: {shot}")

    # act on the waiting ones
    # by keyboard: the approve button takes the focus and Enter presses it
    page.focus(".card[data-key='PF0ABCDE'] button.approve")
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelectorAll('{WAITING}').length === 2")
    assert approvals.verdict("PF0ABCDE") == "approved"
    page.click(".card[data-key='D8XD62J'] button.refuse")
    page.wait_for_function(f"document.querySelectorAll('{WAITING}').length === 1")
    assert approvals.verdict("D8XD62J") == "refused"
    page.click("#approve-all")
    page.wait_for_function(f"document.querySelectorAll('{WAITING}').length === 0")
    assert approvals.verdict("5CG1234ABC") == "approved"
    assert store.find_device(serial="5CG1234ABC") is None  # approval records nothing itself

    # a batch, on and off; a live update while the volunteer types keeps what is typed
    page.fill("input[name=count]", "4")
    report(base, agent, key="PF0LATE1", serial="PF0LATE1", stage="inventory")
    page.wait_for_selector(".card[data-key='PF0LATE1']")
    assert page.input_value("input[name=count]") == "4"
    page.click("#arm")
    page.wait_for_selector("section.batch.on")
    banner = " ".join(page.text_content("section.batch").split())
    assert "BATCH AAN" in banner and "nog 30 min" in banner and "nog 4 toestel" in banner
    assert approvals.status()["remaining"] == 4
    page.click("#disarm")
    page.wait_for_selector("section.batch.off")
    assert approvals.status()["armed"] is False

    # retry the failed one: approved again, for its next network boot
    page.click(".card[data-key='CND7051XYZ'] button.retry")
    page.wait_for_selector(".card[data-key='CND7051XYZ'].stage-approved")
    assert approvals.verdict("CND7051XYZ") == "approved"

    # its label and its certificate, with the page's cookie
    done = page.locator(".card[data-key='R90XK2LP']")
    for link in ("a.label", "a.certificate"):
        href = done.locator(link).get_attribute("href")
        pdf = context.request.get(f"{base}{href}")
        assert pdf.status == 200 and pdf.body().startswith(b"%PDF"), href
    assert context.request.get(f"{base}/api/v1/labels.pdf").body().startswith(b"%PDF")

    # find it, open it, lend it out
    page.fill("#q", "r90xk2lp".upper())
    page.press("#q", "Enter")
    page.wait_for_selector(f"article.device[data-asset-tag='{tag}']")
    assert "ThinkPad T470" in page.text_content(".facts")
    assert page.locator("table.history tbody tr").count() == len(store.get_device(tag).events)
    other = context.new_page()  # a second volunteer opens the same device
    other.goto(page.url)
    page.check("input[name=status][value=loaned]")
    page.fill("#technician", "tech-07")
    page.click(".status-form button")
    page.wait_for_selector("#status.loaned")
    history = page.text_content("table.history tbody tr:first-child")
    assert "uitgeleend" in history and "tech-07" in history
    # the second volunteer still sees "ready" and also records "loaned": refused, and told why
    other.check("input[name=status][value=loaned]")
    other.fill("#technician", "tech-09")
    other.click(".status-form button")
    other.wait_for_selector(".error")
    assert "changed it meanwhile" in other.text_content(".error")
    assert other.locator("#status.loaned").count() == 1  # they see the state as it is now
    assert [e.type for e in store.get_device(tag).events].count("loaned") == 1
    # a change the lifecycle refuses: the reason on the page, nothing recorded
    other.check("input[name=status][value=repaired]")
    other.fill("#technician", "tech-09")
    other.click(".status-form button")
    other.wait_for_selector(".error")
    assert store.get_device(tag).status == "loaned"
    page.check("input[name=status][value=returned]")
    page.fill("#technician", "tech-07")
    page.click(".status-form button")
    page.wait_for_selector("#status.returned")
    assert store.get_device(tag).needs_wipe  # wiped at its next network boot
    shot = tmp_path / "cockpit-device.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"cockpit device page screenshot: {shot}")

    # not found, and English
    page.fill("#q", "NOPE-0000")
    page.click("form.search button")
    page.wait_for_selector(".notfound")
    page.click("nav.lang a")
    page.wait_for_selector(".notfound")
    assert "Nothing found for" in page.text_content(".notfound")
    page.goto(f"{base}/")
    assert page.locator("#board").is_visible() and "Today" in page.text_content(".day")
    context.close()
