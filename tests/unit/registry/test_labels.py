"""Label and certificate PDFs: page geometry, text, and the QR squares decoded back."""

from __future__ import annotations

import re

import pytest

from provisioner.errors import DeelitError
from provisioner.registry.labels import certificate_pdf, labels_pdf, qr_matrix
from provisioner.registry.lifecycle import EventType
from provisioner.registry.schemas import DeviceIn, EventIn
from provisioner.registry.store import Store
from provisioner.registry.tokens import Caller

MM = 72 / 25.4


def _devices(store: Store, station: Caller, n: int) -> list[str]:
    return [store.register(DeviceIn(serial=f"SN{i:06d}", maker="Dell Inc.",
                                    model="Latitude E7450", grade="B"), station).asset_tag
            for i in range(n)]


def _pages(pdf: bytes) -> list[str]:
    return re.findall(rb"/MediaBox \[([^\]]+)\]", pdf)  # type: ignore[return-value]


def _first_qr(pdf: bytes) -> list[list[bool]]:
    """Rebuilds the first label's QR matrix from the filled squares in the page content."""
    stream = pdf.split(b"stream", 2)[1].decode("latin-1")
    squares = [tuple(map(float, m)) for m in
               re.findall(r"([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+) re f", stream)]
    size = squares[0][2]
    first = [(x, y) for x, y, w, _ in squares if w == size and x < 40 * MM
             and y > 260 * MM]
    xs, ys = sorted({x for x, _ in first}), sorted({y for _, y in first})
    x0, ytop = xs[0], ys[-1]
    n = round((xs[-1] - x0) / size) + 1
    grid = [[False] * n for _ in range(n)]
    for x, y in first:
        grid[round((ytop - y) / size)][round((x - x0) / size)] = True
    return grid


def test_a4_sheet(sqlite_store: Store, station: Caller) -> None:
    tags = _devices(sqlite_store, station, 30)
    pdf = labels_pdf(sqlite_store.list_devices(), "a4")
    assert pdf.startswith(b"%PDF")
    boxes = _pages(pdf)
    assert len(boxes) == 2  # 24 labels per sheet
    assert [float(v) for v in boxes[0].split()][2:] == pytest.approx([595.2756, 841.8898])
    for tag in (tags[0], tags[23], tags[29]):
        assert f"({tag})".encode() in pdf
    assert b"(S/N SN000000)" in pdf
    assert _first_qr(pdf) == qr_matrix(tags[0])


def test_roll_62mm(sqlite_store: Store, station: Caller) -> None:
    _devices(sqlite_store, station, 3)
    boxes = _pages(labels_pdf(sqlite_store.list_devices(), "roll62"))
    assert len(boxes) == 3
    width, height = [float(v) for v in boxes[0].split()][2:]
    assert width == pytest.approx(62 * MM) and height == pytest.approx(29 * MM)


def test_wipe_certificate(sqlite_store: Store, station: Caller) -> None:
    tag = _devices(sqlite_store, station, 1)[0]
    with pytest.raises(DeelitError, match="no 'wiped' event"):
        certificate_pdf(sqlite_store.get_device(tag))
    sqlite_store.add_event(tag, EventIn(type=EventType.wiped, technician="t17", details={
        "method": "NIST 800-88 Purge: NVMe sanitize (crypto erase)", "tool": "nvme-cli 2.4",
        "verification": "sampled 1% of LBAs: all zero", "certificate_sha256": "c0ffee" * 10,
        "disk": {"maker": "Samsung", "model": "PM981", "serial": "S4DXNX0M", "kind": "nvme"}}),
        station)
    pdf = certificate_pdf(sqlite_store.get_device(tag))
    for text in (tag, r"NVMe sanitize \(crypto erase\)", "Samsung PM981 S4DXNX0M nvme", "t17",
                 "SN000000", "mec-pc1"):
        assert f"{text}".encode() in pdf, text
