"""Store operations on SQLite and PostgreSQL: identity, tags, transitions, append-only log."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, insert, inspect, text, update
from sqlalchemy.exc import DBAPIError

from provisioner.registry.errors import Conflict, Invalid, NotFound
from provisioner.registry.lifecycle import EventType
from provisioner.registry.models import Base, Device, Event
from provisioner.registry.schemas import DeviceIn, EventIn
from provisioner.registry.settings import Settings
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller


def dev(**kw: object) -> DeviceIn:
    base: dict[str, object] = {"serial": "PF0ABCDE", "baseboard_serial": "L1HF00000XX",
                               "uuid": "4c4c4544-0030-4a10-8048-c4c04f503732",
                               "macs": ["54:ee:75:00:00:01"], "maker": "LENOVO",
                               "model": "20B6005BUS"}
    base.update(kw)
    return DeviceIn.model_validate(base)


def test_register_is_idempotent_by_identity(store: Store, station: Caller) -> None:
    first = store.register(dev(), station)
    again = store.register(dev(model="20B6005BUS"), station)
    assert first.created and not again.created
    assert first.asset_tag == again.asset_tag == "DEELIT-MEC-000001"
    assert store.count_devices() == 1
    # a real change is recorded as an inventoried note, not as a new device
    changed = store.register(dev(ram_bytes=8 * 2**30), station)
    events = [e.type for e in store.get_device(changed.asset_tag).events]
    assert events == ["registered", "inventoried"]


def test_placeholder_serials_do_not_merge_devices(store: Store, station: Caller) -> None:
    a = store.register(dev(serial="To Be Filled By O.E.M.", baseboard_serial="Default string",
                           uuid="11111111-2222-3333-4444-555555555555"), station)
    b = store.register(dev(serial="To Be Filled By O.E.M.", baseboard_serial="Default string",
                           uuid="11111111-2222-3333-4444-666666666666"), station)
    c = store.register(dev(serial="", baseboard_serial="", uuid="03000200-0400-0500-0006-"
                           "000700080009", macs=["00:1a:2b:3c:4d:5e"]), station)
    assert len({a.asset_tag, b.asset_tag, c.asset_tag}) == 3
    assert (a.identity_source, c.identity_source) == ("uuid", "mac")
    assert a.serial_placeholder
    with pytest.raises(Invalid, match="no usable identity"):
        store.register(dev(serial="N/A", baseboard_serial="--", uuid="--", macs=[]), station)


def test_asset_tags_per_point_with_format_setting(settings: Settings, station: Caller) -> None:
    s = Store(settings.model_copy(update={"asset_tag_format": "DL/{point}/{number:04d}"}))
    try:
        tags = [s.register(dev(serial=f"SN{i:05d}", point=p), station).asset_tag
                for i, p in enumerate(["MEC", "MEC", "GNT", "MEC"])]
        assert tags == ["DL/MEC/0001", "DL/MEC/0002", "DL/GNT/0001", "DL/MEC/0003"]
        # the token's point is used when the body names none
        t = s.register(dev(serial="SN99999"), Caller("gent-pc", "GNT"))
        assert t.asset_tag == "DL/GNT/0002"
    finally:
        s.close()


def test_devices_are_never_deleted_and_events_never_rewritten(store: Store,
                                                              station: Caller) -> None:
    tag = store.register(dev(), station).asset_tag
    for stmt in (delete(Device), update(Event).values(type="wiped"), delete(Event)):
        with pytest.raises(DBAPIError), store.db.write() as s:
            s.execute(stmt)
    assert store.get_device(tag).events[0].type == "registered"


def test_transitions_are_enforced(store: Store, station: Caller) -> None:
    tag = store.register(dev(), station).asset_tag
    for kind in ("imaged", "verified", "ready", "loaned", "returned"):
        store.add_event(tag, EventIn(type=EventType(kind)), station)
    with pytest.raises(Conflict, match="wiped"):
        store.add_event(tag, EventIn(type=EventType.imaged), station)
    assert store.get_device(tag).status == "returned"
    store.add_event(tag, EventIn(type=EventType.wiped, technician="t17",
                                 details={"method": "nvme-sanitize-crypto",
                                          "certificate_sha256": "ab" * 32}), station)
    store.add_event(tag, EventIn(type=EventType.imaged, details={"build_id": "b-1"}), station)
    d = store.get_device(tag)
    assert (d.status, d.needs_wipe) == ("imaged", False)
    assert d.events[-1].build_id == "b-1" and d.events[-2].technician == "t17"
    with pytest.raises(NotFound):
        store.add_event("DEELIT-MEC-999999", EventIn(type=EventType.wiped), station)


def test_loaned_device_cannot_be_reinventoried(store: Store, station: Caller) -> None:
    tag = store.register(dev(), station).asset_tag
    for kind in ("imaged", "verified", "ready", "loaned"):
        store.add_event(tag, EventIn(type=EventType(kind)), station)
    assert not store.register(dev(), station).created  # unchanged retry: fine
    with pytest.raises(Conflict, match="loan"):
        store.register(dev(ram_bytes=4 * 2**30), station)


def test_event_uid_makes_retries_idempotent(store: Store, station: Caller) -> None:
    tag = store.register(dev(), station).asset_tag
    body = EventIn(type=EventType.wiped, uid="agent-0001-wipe")
    first, added = store.add_event(tag, body, station)
    again, added_again = store.add_event(tag, body, station)
    assert added and not added_again and first == again
    assert [e.type for e in store.get_device(tag).events].count("wiped") == 1


def test_graded_event_updates_grade_and_filters(store: Store, station: Caller) -> None:
    a = store.register(dev(grade="A"), station).asset_tag
    b = store.register(dev(serial="OTHER123", point="GNT"), station).asset_tag
    store.add_event(b, EventIn(type=EventType.graded, details={"grade": "C"}), station)
    with pytest.raises(Invalid):
        store.add_event(b, EventIn(type=EventType.graded, details={"grade": "excellent"}), station)
    assert store.get_device(b).grade == "C"
    assert [d.asset_tag for d in store.list_devices(point="GNT")] == [b]
    assert [d.asset_tag for d in store.list_devices(status="registered")] == [a, b]
    assert store.list_devices(batch=dt.date.today() - dt.timedelta(days=2)) == []
    listed = store.list_devices(batch=dt.date.today())
    assert listed[1].last_event is not None and listed[1].last_event.type == "graded"


def test_retired_is_final(store: Store, station: Caller) -> None:
    tag = store.register(dev(), station).asset_tag
    store.add_event(tag, EventIn(type=EventType.retired), station)
    with pytest.raises(Conflict, match="retired"):
        store.register(dev(), station)


def test_find_device_by_serial_maker_and_mac(store: Store, station: Caller) -> None:
    a = store.register(dev(), station).asset_tag
    b = store.register(dev(serial="PF0ABCDE", maker="Dell Inc.", macs=["00:1a:2b:3c:4d:5e"],
                           uuid=None), station).asset_tag
    oem = store.register(dev(serial="To Be Filled By O.E.M.", baseboard_serial=None, uuid=None,
                             macs=["00:1a:2b:00:00:07", "02:00:00:00:00:01"]), station).asset_tag

    def found(**kw: str | None) -> str | None:
        d = store.find_device(**kw)
        return d.asset_tag if d else None

    assert found(serial="PF0ABCDE", maker=" lenovo ") == a  # as the identity reads the maker
    assert found(serial="PF0ABCDE", maker="Dell Inc.") == b
    # two makers' machines share the serial: only a MAC tells them apart, never a guess
    assert found(serial="PF0ABCDE") is None
    assert found(serial="PF0ABCDE", mac="00-1A-2B-3C-4D-5E") == b
    assert found(serial="To Be Filled By O.E.M.", mac="00:1a:2b:00:00:07") == oem
    assert found(mac="02:00:00:00:00:01") == oem  # any NIC the inventory listed
    assert found(mac="00:1a:2b:00:00:0") is None  # whole MACs only
    assert found(mac="not a mac") is None and found() is None
    # a USB NIC lent from laptop to laptop names no one machine
    store.register(dev(serial="OTHER123", macs=["00:1a:2b:00:00:07"]), station)
    assert found(mac="00:1a:2b:00:00:07") is None


def test_find_device_by_mac_among_10000(sqlite_store: Store) -> None:
    now = dt.datetime.now(dt.UTC)
    rows = [{"asset_tag": f"DEELIT-MEC-{i:06d}", "identity_key": f"serial::sn{i}",
             "identity_source": "serial", "point": "MEC", "serial": f"SN{i}",
             "macs": [f"00:1a:2b:{i >> 16:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"],
             "disks": [], "status": "registered", "needs_wipe": False,
             "serial_placeholder": False, "batch_date": now.date(), "created_at": now,
             "updated_at": now} for i in range(1, 10_001)]
    with sqlite_store.db.write() as s:
        s.execute(insert(Device), rows)
    assert sqlite_store.count_devices() == 10_000
    found = sqlite_store.find_device(mac="00:1a:2b:00:26:f4")  # 9972: far past the first 1,000
    assert found is not None and found.asset_tag == "DEELIT-MEC-009972"
    assert sqlite_store.find_device(mac="00:1a:2b:00:ff:ff") is None


def test_builds(store: Store) -> None:
    manifest = {"build_id": "pupil-20260510", "profile": {"name": "pupil", "digest": "sha256:1"},
                "created": "2026-05-10", "artifacts": [{"name": "disk.img.zst", "size": 1,
                                                        "sha256": "0" * 64}]}
    out, added = store.add_build(manifest, "f" * 64)
    assert added and out.profile == "pupil"
    assert store.add_build(manifest, "f" * 64)[1] is False
    with pytest.raises(Conflict):
        store.add_build(manifest, "e" * 64)
    assert [b.build_id for b in store.list_builds()] == ["pupil-20260510"]


def test_tokens(store: Store) -> None:
    t1 = store.create_token("mec-pc1", point="MEC")
    t2 = store.create_token("gent-pc1")
    assert store.authenticate(t1) == Caller("mec-pc1", "MEC")
    assert store.revoke_tokens("gent-pc1") == 1
    assert store.authenticate(t2) is None and store.authenticate(t1) is not None
    assert store.authenticate("dlt_guess") is None
    listed = store.list_tokens()
    assert all(t1 not in repr(t) for t in listed)  # only hashes and prefixes are stored


def test_migrations_match_models(store: Store) -> None:
    with store.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    with store.db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"


def test_sqlite_uses_wal_and_acknowledges_only_durable_commits(sqlite_store: Store) -> None:
    for engine in (sqlite_store.db.engine, sqlite_store.db.read_engine):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            # 2 is FULL: a commit is on the disk before the agent hears "201"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    assert (sqlite_store.settings.data_dir / "registry.sqlite3").exists()


def test_schema_holds_no_personal_data(store: Store) -> None:
    forbidden = ("name", "email", "phone", "address", "family", "parent", "child", "person",
                 "birth", "borrower", "contact")
    insp = inspect(store.db.engine)
    columns = [c["name"] for t in insp.get_table_names() for c in insp.get_columns(t)]
    assert "serial" in columns  # the inspection works at all
    assert [c for c in columns if any(f in c for f in forbidden)] == []
