"""The station desk: what the JSON routes and the cockpit both do to the board."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.netboot.approvals import Approvals
from provisioner.netboot.board import Board, StationDesk
from provisioner.netboot.credentials import MachineCredentials
from provisioner.registry.errors import NotFound
from provisioner.registry.lifecycle import EventType
from provisioner.registry.schemas import EventIn
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[StationDesk]:
    store = Store(Settings(data_dir=tmp_path))
    yield StationDesk(Board(), Approvals(), MachineCredentials(store, "st"), store, "wipe-install")
    store.close()


def test_refuse_leaves_a_machine_at_work_alone(desk: StationDesk) -> None:
    desk.board.update("A1", stage="waiting", serial="A1")
    desk.board.update("B2", stage="wipe", serial="B2", percent=30.0)
    assert desk.refuse("a1") == ["A1"] and desk.approvals.verdict("A1") == "refused"
    assert desk.refuse("B2") == []  # already wiping: a second volunteer's click changes nothing
    assert desk.board.find("B2").stage == "wipe"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        desk.refuse("NOPE")


def test_retry_only_a_failed_machine_once(desk: StationDesk) -> None:
    desk.board.update("C3", stage="failed", serial="C3", message="x: ATA security is frozen")
    [row] = desk.machines()
    assert row["advice"]["nl"].startswith("ATA-beveiliging bevroren")
    issued = desk.credentials.issue("C3")
    assert issued is not None and desk.credentials.issue("C3") is None
    assert desk.retry("C3") is True
    assert desk.approvals.verdict("C3") == "approved"
    assert desk.credentials.issue("C3") is not None  # a new one for its next boot
    assert desk.retry("C3") is False  # the second volunteer: it is approved already


def test_counts_version_and_placeholders(desk: StationDesk) -> None:
    v = desk.version
    desk.board.update("00:00:5e:00:53:01", stage="waiting", serial="To Be Filled By O.E.M.")
    desk.board.update("D4", stage="done", action="wipe-install", asset_tag="DEELIT-MEC-000001")
    desk.board.update("E5", stage="done", action="local")  # booted its disk: not "ready"
    desk.board.update("F6", stage="install", grade="reject")
    assert desk.counts() == {"ready": 1, "busy": 1, "waiting": 1, "failed": 0, "rejected": 1}
    assert desk.version == v + 4
    desk.arm(30, None)
    assert desk.version == v + 5 and desk.batch()["armed"]
    flagged = {r["key"]: r["serial_placeholder"] for r in desk.machines()}
    assert flagged["00:00:5e:00:53:01"] is True and flagged["D4"] is False
    assert desk.board.find("deelit-mec-000001").key == "D4"  # type: ignore[union-attr]


def test_a_finished_machine_keeps_its_card_when_it_boots_its_disk(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from provisioner.netboot.config import StationConfig
    from provisioner.netboot.http import create_app
    from provisioner.registry.schemas import DeviceIn
    from provisioner.registry.tokens import Caller

    (tmp_path / "data").mkdir()
    cfg = StationConfig(interface="br-lan", server_ip="127.0.0.1", subnet="127.0.0.0",
                        data_dir=tmp_path / "data", run_dir=tmp_path / "run",
                        image_dir=tmp_path / "image", installer_dir=tmp_path / "installer")
    store = Store(Settings(data_dir=cfg.data_dir))
    tag = store.register(DeviceIn(serial="PF0READY", maker="LENOVO"), Caller("st")).asset_tag
    for kind in ("wiped", "imaged", "verified", "ready"):
        store.add_event(tag, EventIn(type=EventType(kind)), Caller("st"))
    app = create_app(cfg, None, store.create_token("st", scope="boot"), store)
    client = TestClient(app)
    app.state.board.update("PF0READY", stage="done", asset_tag=tag, message=f"{tag}: ready")
    assert "deelit.action" not in client.get("/boot.ipxe", params={"serial": "PF0READY"}).text
    row = app.state.board.find("PF0READY")
    assert row.stage == "done" and "ready" in row.message  # type: ignore[union-attr]
    client.get("/boot.ipxe", params={"serial": "PF0OTHER"})  # a new one still starts at pxe
    assert app.state.board.find("PF0OTHER").stage == "pxe"  # type: ignore[union-attr]
    store.close()
