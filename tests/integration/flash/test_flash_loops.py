"""Flashing real loop devices: several at once, bmaptool interplay, a failing stick, SIGKILL."""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
import time

import pytest
import zstandard

from provisioner.flash import readback
from provisioner.flash import source as src
from provisioner.flash.policy import Target
from provisioner.formats import bmap as bm

pytestmark = pytest.mark.root

MiB = 1 << 20


def test_three_targets_get_the_mapped_ranges_and_nothing_else(h, image, loop, tmp_path) -> None:
    devs = [loop(h.patterned(tmp_path / f"t{i}.bin", 32 * MiB, seed=str(i))) for i in range(3)]
    res = h.deelit("flash", str(image.path), *map(str, devs), "--yes", "--allow-fixed",
                   "--json", check=True)
    data = json.loads(res.stdout)
    assert data["ok"] and [t["verified"] for t in data["targets"]] == [True] * 3
    for i, dev in enumerate(devs):
        assert h.mapped_equal(image, dev) == []
        # unmapped blocks keep the stick's old content: only mapped data was written
        old = (tmp_path / f"t{i}.bin").open("rb")
        with dev.open("rb") as d:
            for off in (8 * MiB, 12 * MiB, 20 * MiB):
                d.seek(off)
                old.seek(off)
                assert d.read(4096) == old.read(4096)
        old.close()


def test_compressed_image_with_its_bmap(h, image, loop, tmp_path) -> None:
    zst = tmp_path / "pupil.img.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(image.path.read_bytes()))
    image.bmap.write(tmp_path / "pupil.bmap")
    devs = [loop(h.patterned(tmp_path / f"t{i}.bin", 32 * MiB)) for i in range(2)]
    h.deelit("flash", str(zst), *map(str, devs), "--yes", "--allow-fixed", check=True)
    for dev in devs:
        assert h.mapped_equal(image, dev) == []


def test_bmaptool_copies_with_deelits_bmap(h, image, loop, tmp_path) -> None:
    ours = tmp_path / "ours.bmap"
    h.deelit("bmap", "create", str(image.path), "-o", str(ours), check=True)
    dev = loop(h.patterned(tmp_path / "t.bin", 32 * MiB))
    h.run("bmaptool", "copy", "--bmap", str(ours), str(image.path), str(dev))
    assert h.mapped_equal(image, dev) == []
    # bmaptool checks each range's checksum: a wrong one in our map makes it fail
    text = ours.read_text()
    first = image.bmap.ranges[1].checksum
    bad = bm.load(ours)
    bad.ranges[1] = bm.Range(bad.ranges[1].first, bad.ranges[1].last, "0" * 64)
    bad.write(ours)
    assert first is not None and first in text
    res = subprocess.run(["bmaptool", "copy", "--bmap", str(ours), str(image.path), str(dev)],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "checksum mismatch" in res.stderr


def test_deelit_flashes_with_bmaptools_bmap(h, image, loop, tmp_path) -> None:
    theirs = tmp_path / "theirs.bmap"
    h.run("bmaptool", "create", "-o", str(theirs), str(image.path))
    dev = loop(h.patterned(tmp_path / "t.bin", 32 * MiB))
    res = h.deelit("flash", str(image.path), str(dev), "--bmap", str(theirs), "--yes",
                   "--allow-fixed", "--json", check=True)
    data = json.loads(res.stdout)
    assert data["bmap"] == str(theirs) and data["targets"][0]["verified"] is True
    assert h.mapped_equal(image, dev) == []


def test_a_failing_stick_does_not_stop_the_others(h, image, mount, loop, tmp_path) -> None:
    """A loop device over a sparse file on a 2 MiB tmpfs: writes past 2 MiB fail (ENOSPC/EIO)."""
    small = mount("tmpfs", tmp_path / "tiny", "-t", "tmpfs", "-o", "size=2m")
    with (small / "bad.bin").open("wb") as f:
        f.truncate(32 * MiB)
    bad = loop(small / "bad.bin")
    good = [loop(h.patterned(tmp_path / f"t{i}.bin", 32 * MiB)) for i in range(2)]
    res = h.deelit("flash", str(image.path), str(good[0]), str(bad), str(good[1]), "--yes",
                   "--allow-fixed", "--json")
    assert res.returncode == 1
    data = json.loads(res.stdout)
    by = {t["target"]: t for t in data["targets"]}
    assert not data["ok"]
    assert by[str(bad)]["ok"] is False and "failed" in by[str(bad)]["error"]
    for g in good:
        assert by[str(g)]["ok"] is True and by[str(g)]["verified"] is True
        assert h.mapped_equal(image, g) == []


@pytest.mark.slow
def test_sigkill_midway_leaves_a_failing_target_and_rerun_fixes_it(h, loop, tmp_path) -> None:
    size = 768 * MiB
    img = h.sparse_image(tmp_path / "big.img", size, [(0, MiB), (4 * MiB, 600 * MiB)])
    backing = tmp_path / "t.bin"
    with backing.open("wb") as f:
        f.truncate(size)
    dev = loop(backing)
    proc = subprocess.Popen([sys.executable, "-m", "provisioner.cli", "flash", str(img),
                             str(dev), "--yes", "--allow-fixed", "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # wait until the write has visibly started (a span past the head holds image data), kill
    probe = mmap.mmap(-1, 4096)
    with img.open("rb") as f:
        f.seek(4 * MiB)
        want = f.read(4096)
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            os.preadv(fd, [probe], 4 * MiB)
            if probe[:] == want:
                break
            time.sleep(0.002)
    finally:
        os.close(fd)
    assert proc.poll() is None, "the flash ended before it could be killed: use a bigger image"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    source = src.open_source(img)
    target = Target(path=dev, is_file=False, size=size)
    [state] = readback.verify(source, [target])
    assert state.verified_ok is False and state.mismatches
    assert state.mismatches[0][0] == 0  # the head is written last, so a cut stick is unusable
    res = h.deelit("flash", str(img), str(dev), "--verify-only", "--json")
    assert res.returncode == 1

    h.deelit("flash", str(img), str(dev), "--yes", "--allow-fixed", check=True)
    [state] = readback.verify(source, [target])
    assert state.ok and state.verified_ok is True
