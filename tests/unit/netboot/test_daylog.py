"""dnsmasq's log: a file a day, aged out after a week, each day capped, private to root."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from provisioner.netboot.daylog import DayLog


def test_a_file_a_day_kept_a_week(tmp_path: Path) -> None:
    day = [dt.date(2026, 12, 1)]
    log = DayLog(tmp_path / "dnsmasq.log", keep_days=7, today=lambda: day[0])
    for n in range(12):
        day[0] = dt.date(2026, 12, 1) + dt.timedelta(days=n)
        log.write(f"DHCPDISCOVER 52:54:00:00:00:{n:02x} on {day[0]}\n".encode())
        # the file's time is what a restart reads the day from
        stamp = time.mktime(day[0].timetuple()) + 3600
        os.utime(tmp_path / "dnsmasq.log", (stamp, stamp))
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["dnsmasq.log"] + [f"dnsmasq.log.2026-12-{d:02d}" for d in range(5, 12)]
    assert (tmp_path / "dnsmasq.log").read_text() == "DHCPDISCOVER 52:54:00:00:00:0b on 2026-12-12\n"
    assert (tmp_path / "dnsmasq.log").stat().st_mode & 0o777 == 0o600


def test_a_restart_on_another_day_rotates_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "dnsmasq.log"
    path.write_text("from last month\n")
    old = time.mktime(dt.date(2026, 11, 2).timetuple())
    os.utime(path, (old, old))
    DayLog(path, today=lambda: dt.date(2026, 11, 5)).copy_from([b"today\n"])
    assert path.read_text() == "today\n"
    assert (tmp_path / "dnsmasq.log.2026-11-02").read_text() == "from last month\n"
    written = time.mktime(dt.date(2026, 11, 5).timetuple())
    os.utime(path, (written, written))
    DayLog(path, today=lambda: dt.date(2026, 11, 9)).copy_from([b"four days on\n"])
    written = time.mktime(dt.date(2026, 11, 9).timetuple())  # as if written that day
    os.utime(path, (written, written))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dnsmasq.log", "dnsmasq.log.2026-11-02",
                                                          "dnsmasq.log.2026-11-05"]
    DayLog(path, today=lambda: dt.date(2026, 12, 5)).copy_from([b"a month on\n"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dnsmasq.log"]  # all older than a week


def test_a_flood_is_capped_per_day(tmp_path: Path) -> None:
    path = tmp_path / "dnsmasq.log"
    day = [dt.date(2026, 12, 5)]
    log = DayLog(path, max_day_bytes=1000, today=lambda: day[0])
    for _ in range(500):
        log.write(b"x" * 99 + b"\n")
    text = path.read_text()
    assert text.count("x" * 99) == 10 and text.endswith("further lines are dropped\n")
    day[0] = dt.date(2026, 12, 6)
    log.write(b"next day\n")
    log.close()
    assert path.read_text() == "next day\n"
