"""The station's approval rule: a machine new to the registry waits, with nothing recorded,
until a volunteer approves it (one, all waiting, or an armed batch that ends by itself)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from provisioner.cli import make_app
from provisioner.errors import DeelitError
from provisioner.netboot import station_client
from provisioner.netboot.approvals import Approvals, parse_duration
from provisioner.netboot.config import StationConfig
from provisioner.netboot.http import create_app
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.vm import free_port


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def cfg(tmp_path: Path) -> StationConfig:
    (tmp_path / "data").mkdir()
    return StationConfig(interface="br-lan", server_ip="127.0.0.1", subnet="127.0.0.0",
                         data_dir=tmp_path / "data", run_dir=tmp_path / "run",
                         image_dir=tmp_path / "image", installer_dir=tmp_path / "installer")


@pytest.fixture
def store(cfg: StationConfig) -> Iterator[Store]:
    s = Store(Settings(data_dir=cfg.data_dir))
    yield s
    s.close()


def test_durations_and_counts() -> None:
    assert parse_duration("30m") == dt.timedelta(minutes=30)
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)
    assert parse_duration(" 90S ") == dt.timedelta(seconds=90)
    for bad in ("", "30", "m", "30x", "1h30", "13h", "0m", "-5m"):
        with pytest.raises(DeelitError, match="approval time"):
            parse_duration(bad)
    with pytest.raises(DeelitError, match="between 1 and 500"):
        Approvals().arm(count=0)
    with pytest.raises(DeelitError, match=r"a time .* a number"):
        Approvals().arm()


def test_one_machine_refused_then_approved_by_serial_or_mac() -> None:
    a = Approvals()
    assert a.verdict("PF0ABCD", "52:54:00:00:00:01") == "waiting"
    a.refuse("pf0abcd")  # as typed off a sticker: case does not matter
    assert a.verdict("PF0ABCD", None) == "refused"
    a.approve("52:54:00:00:00:01", "PF0ABCD")
    assert a.verdict(None, "52:54:00:00:00:01") == "approved"
    assert a.verdict("PF0ABCD", None) == "approved"
    assert a.verdict("OTHER", "52:54:00:00:00:02") == "waiting"
    assert a.verdict(None, None) == "waiting"


def test_a_batch_approves_the_next_n_and_ends_by_itself() -> None:
    clock = Clock()
    a = Approvals(clock)
    a.arm(count=2)
    assert a.status() == {"armed": True, "until": None, "seconds_left": None, "remaining": 2}
    assert a.verdict("A1", None) == "approved"
    assert a.verdict("A1", None) == "approved"  # asked again (iPXE, then the agent): counted once
    assert a.verdict("A2", None) == "approved"
    assert a.verdict("A3", None) == "waiting"
    assert a.status()["armed"] is False
    a.arm(span=dt.timedelta(minutes=30))
    clock.now += dt.timedelta(minutes=10)
    assert a.status()["seconds_left"] == 20 * 60
    assert a.verdict("B1", None) == "approved"
    clock.now += dt.timedelta(minutes=21)
    assert a.verdict("B2", None) == "waiting" and a.status()["armed"] is False
    a.arm(span=dt.timedelta(hours=1), count=1)
    a.refuse("C1")
    assert a.verdict("C1", None) == "refused"  # a refusal stands through a batch
    a.disarm()
    assert a.verdict("C2", None) == "waiting"


def test_station_lists_waiting_machines_and_acts_on_them(cfg: StationConfig, store: Store) -> None:
    agent = {"Authorization": f"Bearer {store.create_token('pxe-test', scope='boot')}"}
    station = {"Authorization": f"Bearer {store.create_token('pxe-test')}"}
    client = TestClient(create_app(cfg, None, agent["Authorization"][7:], store))
    for serial, mac in (("PF0AAAA", "52:54:00:00:00:0a"), ("PF0BBBB", "52:54:00:00:00:0b"),
                        ("To Be Filled By O.E.M.", "52:54:00:00:00:0c")):
        script = client.get("/boot.ipxe", params={"serial": serial, "mac": mac}).text
        assert "deelit.action=wait" in script
        key = mac if serial.startswith("To Be") else serial
        # what the agent posts once it has graded the machine
        assert client.post("/station/progress", headers=agent, json={
            "key": key, "stage": "waiting", "mac": mac, "maker": "LENOVO", "model": "20AN",
            "grade": "B", "disks": "nvme0n1 256 GB"}).status_code == 204
    waiting = client.get("/station/approvals", headers=station).json()
    assert sorted(waiting["waiting"]) == ["52:54:00:00:00:0c", "PF0AAAA", "PF0BBBB"]
    assert waiting["batch"]["armed"] is False
    row = next(m for m in client.get("/station/machines", headers=station).json()
               if m["key"] == "PF0AAAA")
    assert (row["maker"], row["model"], row["grade"], row["disks"]) == (
        "LENOVO", "20AN", "B", "nvme0n1 256 GB")
    assert store.find_device(serial="PF0AAAA") is None  # nothing recorded while it waits

    def action(serial: str | None, mac: str | None = None) -> str:
        params = {k: v for k, v in (("serial", serial), ("mac", mac)) if v}
        return str(client.get("/station/action", params=params, headers=agent).json()["action"])

    assert client.post("/station/refuse", json={"key": "pf0bbbb"}, headers=station).json() == {
        "refused": ["PF0BBBB"]}
    assert action("PF0BBBB") == "local"
    assert client.post("/station/refuse", json={"key": "NOPE"}, headers=station).status_code == 404
    assert client.post("/station/approve", json={"all_waiting": True},
                       headers=station).json() == {"approved": ["PF0AAAA", "52:54:00:00:00:0c"]}
    assert action("PF0AAAA") == "wipe-install"
    assert action("To Be Filled By O.E.M.", "52:54:00:00:00:0c") == "wipe-install"
    assert action("PF0BBBB") == "local"  # refused: not in "all waiting" any more
    # a serial typed off a sticker before the laptop is even switched on
    assert client.post("/station/approve", json={"key": "PF0DDDD"},
                       headers=station).json() == {"approved": ["PF0DDDD"]}
    assert action("PF0DDDD") == "wipe-install"
    for bad in ({}, {"key": "X", "all_waiting": True}, {"key": ""}, {"key": "x" * 129}):
        assert client.post("/station/approve", json=bad, headers=station).status_code == 422, bad
    # a batch: the next one is approved as it boots, the one after waits
    assert client.put("/station/batch", json={"count": 1}, headers=station).json()["remaining"] == 1
    assert "deelit.action=wipe-install" in client.get("/boot.ipxe", params={"serial": "PF0EEEE"}).text
    assert action("PF0EEEE") == "wipe-install"
    assert action("PF0FFFF") == "wait"
    assert client.put("/station/batch", json={}, headers=station).status_code == 422
    assert client.put("/station/batch", json={"minutes": 30}, headers=station).json()["armed"]
    assert client.delete("/station/batch", headers=station).json()["armed"] is False
    assert action("PF0GGGG") == "wait"



def test_deelit_station_commands_act_on_the_running_station(cfg: StationConfig, store: Store) -> None:
    port = free_port()
    cfg = cfg.model_copy(update={"http_port": port})
    agent = store.create_token("pxe-test", scope="boot")
    app = create_app(cfg, None, agent, store)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    cli, data = make_app("station"), ["--data", str(cfg.data_dir)]
    try:
        missing = CliRunner().invoke(cli, ["station", "approve", "PF0AAAA", *data])
        assert missing.exit_code != 0 and "station-url: missing" in str(missing.exception)
        while not server.started:
            time.sleep(0.05)
        (cfg.data_dir / station_client.URL_FILE).write_text(cfg.http_base + "\n")
        (cfg.data_dir / station_client.TOKEN_FILE).write_text(store.create_token("pxe-test") + "\n")
        client = TestClient(app)
        client.post("/station/progress", headers={"Authorization": f"Bearer {agent}"}, json={
            "key": "PF0AAAA", "stage": "waiting", "maker": "HP", "model": "840 G3", "grade": "A"})
        listed = CliRunner().invoke(cli, ["station", "waiting", *data])
        assert listed.exit_code == 0 and "PF0AAAA\tHP 840 G3\tgrade A" in listed.stdout
        done = CliRunner().invoke(cli, ["station", "approve", "PF0AAAA", *data])
        assert done.exit_code == 0, done.output
        assert app.state.approvals.verdict("PF0AAAA") == "approved"
        both = CliRunner().invoke(cli, ["station", "approve", "PF0AAAA", "--all", *data])
        assert both.exit_code != 0 and "not both" in str(both.exception)
        armed = CliRunner().invoke(cli, ["station", "batch", "--for", "30m", "--next", "3", *data])
        assert armed.exit_code == 0 and "30 min left, 3 machine(s) left" in armed.output
        bad = CliRunner().invoke(cli, ["station", "batch", "--for", "3 days", *data])
        assert bad.exit_code != 0 and "30m" in str(bad.exception)
        off = CliRunner().invoke(cli, ["station", "batch", "--off", *data])
        assert off.exit_code == 0 and app.state.approvals.status()["armed"] is False
        (cfg.data_dir / station_client.TOKEN_FILE).write_text(agent + "\n")
        refused = CliRunner().invoke(cli, ["station", "approve", "PF0BBBB", *data])
        assert refused.exit_code != 0 and "403" in str(refused.exception)
    finally:
        server.should_exit = True
        thread.join(10)


def test_approve_by_asset_tag_beside_another_pxe_server(cfg: StationConfig, store: Store) -> None:
    """Beside another PXE server the station acts only on machines approved here: a returned
    laptop is approved by its asset tag (its serial and MACs from the registry)."""
    from provisioner.registry.lifecycle import EventType
    from provisioner.registry.schemas import DeviceIn, EventIn
    from provisioner.registry.tokens import Caller

    boot = {"Authorization": f"Bearer {store.create_token('pxe-test', scope='boot')}"}
    station = {"Authorization": f"Bearer {store.create_token('pxe-test')}"}
    who = Caller("pxe-test")
    tag = store.register(DeviceIn(serial="To Be Filled By O.E.M.", macs=["00:00:5e:00:53:07"]),
                         who).asset_tag
    for kind in ("wiped", "imaged", "verified", "ready", "loaned", "returned"):
        store.add_event(tag, EventIn(type=EventType(kind)), who)
    client = TestClient(create_app(cfg.model_copy(update={"only_approved": True}), None,
                                   boot["Authorization"][7:], store))

    def action() -> str:
        return str(client.get("/station/action", headers=boot, params={
            "serial": "To Be Filled By O.E.M.", "mac": "00:00:5E:00:53:07"}).json()["action"])

    assert action() == "local"  # returned, but not approved here
    assert client.post("/station/approve", json={"key": tag}, headers=station).json() == {
        "approved": [tag]}
    assert action() == "wipe-install"
