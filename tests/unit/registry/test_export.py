"""Lend Engine TSV, CSV/JSON and ORDS exports."""

from __future__ import annotations

import csv
import io
import json

import pytest

from provisioner.errors import DeelitError
from provisioner.registry.export import (
    LENDENGINE_COLUMNS,
    LendEngineOptions,
    devices_csv,
    devices_json,
    lendengine_tsv,
    ords_csv,
)
from provisioner.registry.lifecycle import EventType
from provisioner.registry.schemas import DeviceIn, EventIn
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller


def _batch(store: Store, station: Caller) -> list[str]:
    tags = []
    for i, (serial, grade) in enumerate([("5CG1234ABC", "A"), ("To Be Filled By O.E.M.", "B"),
                                         ("PF1X\tY", "C")]):
        body = DeviceIn(serial=serial, uuid=f"11111111-2222-3333-4444-00000000000{i}",
                        maker="HP", model="EliteBook 840 G3", ram_bytes=8 * 2**30, grade=grade,
                        disks=[{"size_bytes": 256_060_514_304, "kind": "ssd"}])  # type: ignore[list-item]
        tag = store.register(body, station).asset_tag
        for kind in ("wiped", "imaged", "verified", "ready"):
            store.add_event(tag, EventIn(type=EventType(kind)), station)
        tags.append(tag)
    return tags


def test_lendengine_uses_only_allowed_columns(sqlite_store: Store, station: Caller) -> None:
    tags = _batch(sqlite_store, station)
    sqlite_store.register(DeviceIn(serial="NOTREADY1", maker="Dell"), station)  # not ready
    devices = sqlite_store.list_devices(status="ready")
    text = lendengine_tsv(devices, LendEngineOptions(conditions={"A": "Like new", "B": "Good",
                                                                 "C": "Fair"}, loan_period=365))
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    header, body = rows[0], rows[1:]
    assert set(header) <= set(LENDENGINE_COLUMNS) and "Code" in header
    assert "Condition" in header and "Loan period" in header
    assert len(body) == 3 and all(len(r) == len(header) for r in body)
    by_code = {r[header.index("Code")]: dict(zip(header, r, strict=True)) for r in body}
    assert sorted(by_code) == sorted(tags)
    first, second, third = (by_code[t] for t in tags)
    assert first["Serial"] == "5CG1234ABC" and first["Condition"] == "Like new"
    assert second["Serial"] == ""  # a placeholder is not a serial
    assert third["Serial"] == "PF1X Y"  # no tab may break the row
    assert first["Reservable"] == "yes" and first["Loan period"] == "365"
    assert "RAM 8 GB" in first["Short description"] and first["Brand"] == "HP"


def test_lendengine_without_conditions_leaves_the_column_out(sqlite_store: Store,
                                                             station: Caller) -> None:
    _batch(sqlite_store, station)
    header = lendengine_tsv(sqlite_store.list_devices(), LendEngineOptions()).splitlines()[0]
    assert header.split("\t")[0] == "Code" and "Condition" not in header
    with pytest.raises(DeelitError, match="grade 'B' has no Lend Engine condition"):
        lendengine_tsv(sqlite_store.list_devices(), LendEngineOptions(conditions={"A": "Good"}))


def test_csv_json_and_ords(sqlite_store: Store, station: Caller) -> None:
    tags = _batch(sqlite_store, station)
    devices = sqlite_store.list_devices()
    rows = list(csv.DictReader(io.StringIO(devices_csv(devices))))
    assert [r["asset_tag"] for r in rows] == tags and rows[0]["disk_bytes"] == "256060514304"
    assert [d["asset_tag"] for d in json.loads(devices_json(devices))] == tags
    sqlite_store.add_event(tags[0], EventIn(type=EventType.repaired,
                                            details={"problem": "keyboard replaced"}), station)
    sqlite_store.add_event(tags[1], EventIn(type=EventType.retired,
                                            details={"barrier": "Spare parts not available"}),
                           station)
    ords = list(csv.DictReader(io.StringIO(ords_csv(
        sqlite_store.events(types={"repaired", "retired"})))))
    assert [(r["repair_status"], r["country"], r["product_category"]) for r in ords] == [
        ("1", "BEL", "Laptop"), ("3", "BEL", "Laptop")]
    assert ords[1]["repair_barrier_if_end_of_life"] == "Spare parts not available"
    assert ords[0]["problem"] == "keyboard replaced" and ords[0]["brand"] == "HP"
