"""agent/report.py against a real registry: register, retry with backoff, queue, never lose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.agent.health import DeviceGrade
from provisioner.agent.inventory import from_dmidecode_file
from provisioner.agent.report import Record, Reporter, device_body
from provisioner.errors import DeelitError
from provisioner.lab.postgres import free_port
from provisioner.registry.queue import import_queue
from provisioner.registry.schemas import DeviceIn, QueuedRecord
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store

from .conftest import LiveRegistry, make_registry

BUILD = "ci-20260101-0123abcd"
CERT = "ab" * 32


def record(serial: str = "PF2XYZ01", run_id: str = "run0000000001") -> Record:
    device = {"serial": serial, "macs": ["52:54:00:12:34:56"], "maker": "LENOVO",
              "model": "20L5", "grade": "B", "ram_bytes": 8 << 30}
    rec = Record(run_id=run_id, device=device, events=[])
    rec.add("inventoried", agent="deelit")
    rec.add("graded", grade="B", reasons=["battery: 71% of design"])
    rec.add("wiped", certificate_sha256=CERT, method="overwrite", nist_category="Clear")
    rec.add("imaged", build_id=BUILD, device="/dev/vda")
    rec.add("verified", build_id=BUILD)
    rec.add("ready", build_id=BUILD)
    return rec


def quiet(_: float) -> None:
    pass


def test_record_matches_the_registry_schemas(hardware_fixtures: Path) -> None:
    dumps = sorted(p for p in (hardware_fixtures / "dmidecode").rglob("*") if p.is_file())
    assert dumps, "no dmidecode fixture"
    inv = from_dmidecode_file(dumps[0])
    body = device_body(inv, DeviceGrade(grade="reject", reasons=[]), "MEC")
    DeviceIn.model_validate(body)  # the POST body the registry accepts (extra keys forbidden)
    assert body["grade"] == "R" and body["point"] == "MEC"
    rec = Record(run_id="r" * 12, device=body, events=[])
    rec.add("graded", grade="R")
    QueuedRecord.model_validate(rec.queued())  # what `deelit registry import` reads


def test_delivers_device_with_events_and_is_idempotent(registry: LiveRegistry) -> None:
    rep = Reporter(registry.base, registry.token, None, sleep=quiet)
    out = rep.deliver(record())
    assert out.registered and out.status == "ready"
    dev = registry.store.get_device(str(out.asset_tag))
    assert dev.status == "ready" and dev.grade == "B"
    ours = [e.type for e in dev.events if e.uid.startswith("run0000000001-")]
    assert ours == ["inventoried", "graded", "wiped", "imaged", "verified", "ready"]
    assert dev.events[0].type == "registered"
    wiped = next(e for e in dev.events if e.type == "wiped")
    assert wiped.details["certificate_sha256"] == CERT
    assert {e.build_id for e in dev.events if e.type in ("imaged", "verified", "ready")} == {BUILD}
    again = rep.deliver(record())  # a retry after a lost answer: nothing stored twice
    assert again.asset_tag == out.asset_tag
    assert len(registry.store.get_device(str(out.asset_tag)).events) == len(dev.events)


def test_retries_with_backoff_until_the_registry_is_back(tmp_path: Path) -> None:
    port = free_port()
    reg = make_registry(tmp_path / "reg", port)
    delays: list[float] = []

    def sleep(d: float) -> None:
        delays.append(d)
        if len(delays) == 3:
            reg.start()  # the station comes back while the agent waits

    try:
        out = Reporter(reg.base, reg.token, None, attempts=3, first_delay=1, sleep=sleep).deliver(record())
    finally:
        reg.stop()
        reg.store.close()
    assert out.registered
    assert delays == [1, 2, 4]  # doubling; without a stick it goes on past `attempts`


def test_unreachable_registry_queues_on_the_stick_and_import_registers(tmp_path: Path) -> None:
    queue = tmp_path / "stick" / "deelit" / "queue"
    dead = f"http://127.0.0.1:{free_port()}"
    delays: list[float] = []
    out = Reporter(dead, "tok", queue, attempts=4, first_delay=0.5, sleep=delays.append).deliver(record())
    assert not out.registered and out.queued_at is not None and out.queued_at.parent == queue
    assert delays == [0.5, 1, 2]
    assert [p.name for p in queue.iterdir()] == [out.queued_at.name]  # no temp file left
    QueuedRecord.model_validate(json.loads(out.queued_at.read_text()))
    store = Store(Settings(data_dir=tmp_path / "central"))
    try:
        first = import_queue(store, queue, "import-test")
        assert not first.failed and len(first.created) == 1 and first.events_added == 6
        dev = store.get_device(first.created[0])
        assert dev.status == "ready"
        assert next(e for e in dev.events if e.type == "wiped").details["certificate_sha256"] == CERT
        second = import_queue(store, queue, "import-test")
        assert second.events_added == 0 and second.events_known == 6
    finally:
        store.close()


def test_queued_then_sent_later_is_not_doubled(tmp_path: Path, registry: LiveRegistry) -> None:
    """The same run's record both queued and delivered: uids keep the registry single."""
    queue = tmp_path / "q"
    rec = record(run_id="runsameid0001")
    Reporter(f"http://127.0.0.1:{free_port()}", "t", queue, attempts=1, sleep=quiet).deliver(rec)
    out = Reporter(registry.base, registry.token, None, sleep=quiet).deliver(rec)
    n = len(registry.store.get_device(str(out.asset_tag)).events)
    report = import_queue(registry.store, queue, "import")
    assert report.events_added == 0 and len(registry.store.get_device(str(out.asset_tag)).events) == n


def test_refusal_keeps_the_record_and_says_why(tmp_path: Path, registry: LiveRegistry) -> None:
    rec = record()
    rec.events = [e for e in rec.events if e["type"] != "wiped"]
    rec.events.insert(0, {"type": "imaged", "uid": "run0-bogus-order", "details": {}})
    rec.events[0]["type"] = "loaned"  # illegal straight after registration: HTTP 409
    queue = tmp_path / "q"
    with pytest.raises(DeelitError, match=r"HTTP 409.*kept in"):
        Reporter(registry.base, registry.token, queue, sleep=quiet).deliver(rec)
    assert len(list(queue.glob("*.json"))) == 1


def test_no_stick_and_no_registry_is_an_error_not_a_silent_drop(tmp_path: Path) -> None:
    with pytest.raises(DeelitError, match="not registered and no stick"):
        Reporter(f"http://127.0.0.1:{free_port()}", "t", None, attempts=2, sleep=quiet).deliver(
            record(), forever_without_queue=False)


def test_early_registration_then_full_record_stores_each_event_once(registry: LiveRegistry) -> None:
    full = record(run_id="runearly00001")
    early = Record(run_id=full.run_id, device=full.device, events=full.events[:2])
    rep = Reporter(registry.base, registry.token, None, sleep=quiet)
    first = rep.try_once(early)
    assert first is not None and registry.store.get_device(str(first.asset_tag)).status == "registered"
    out = rep.deliver(full)
    dev = registry.store.get_device(str(out.asset_tag))
    ours = [e.type for e in dev.events if e.uid.startswith("runearly00001-")]
    assert ours == ["inventoried", "graded", "wiped", "imaged", "verified", "ready"]
    assert Reporter(f"http://127.0.0.1:{free_port()}", "t", None).try_once(full) is None
