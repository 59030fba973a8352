"""Offline queue import: idempotent, malformed files reported and kept."""

from __future__ import annotations

import json
from pathlib import Path

from provisioner.registry.queue import import_queue
from provisioner.registry.store import Store


def _queue(folder: Path) -> Path:
    q = folder / "deelit-queue"
    q.mkdir()
    for i in range(3):
        (q / f"rec-{i}.json").write_text(json.dumps({
            "serial": "System Serial Number" if i == 2 else f"R90{i}ABCD",
            "baseboard_serial": "Default string", "uuid": f"aaaaaaaa-0000-0000-0000-00000000000{i}",
            "macs": [f"00:1a:2b:3c:4d:0{i}"], "maker": "LENOVO", "model": "ThinkPad T440",
            "grade": "B",
            "events": [{"type": "wiped", "details": {"certificate_sha256": "ab" * 32}},
                       {"type": "imaged", "build_id": "pupil-1"},
                       {"type": "verified"}]}))
    (q / "broken.json").write_text('{"serial": "X1", ')
    (q / "bad-key.json").write_text(json.dumps({"serial": "X1", "ram_bytes": "lots"}))
    (q / "no-identity.json").write_text(json.dumps({"serial": "N/A", "uuid": "--"}))
    (q / "illegal.json").write_text(json.dumps({"serial": "ILLEGAL1", "maker": "HP",
                                                "events": [{"type": "loaned"}]}))
    return q


def test_import_twice(store: Store, tmp_path: Path) -> None:
    q = _queue(tmp_path)
    first = import_queue(store, q, "usb-queue")
    assert len(first.created) == 4 and first.events_added == 9
    failed = {p.name: why for p, why in first.failed}
    assert set(failed) == {"broken.json", "bad-key.json", "no-identity.json", "illegal.json"}
    assert "not JSON" in failed["broken.json"] and "ram_bytes" in failed["bad-key.json"]
    assert "registered" in failed["illegal.json"]
    second = import_queue(store, q, "usb-queue")
    assert (second.created, second.events_added, second.events_known) == ([], 0, 9)
    assert store.count_devices() == 4
    assert all(p.exists() for p in (q / "broken.json", q / "rec-0.json"))  # nothing removed
    d = store.get_device(store.list_devices(serial="R900ABCD")[0].asset_tag)
    assert [e.type for e in d.events] == ["registered", "graded", "wiped", "imaged", "verified"]
    assert d.status == "verified" and d.events[-2].build_id == "pupil-1"
