"""agent/install.py on real loop devices: mapped ranges only, verified, safe refusals."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import FileResponse

from provisioner.agent.blockdev import Safety
from provisioner.agent.install import HEAD, FileSource, HttpSource, choose_target, install
from provisioner.errors import DeelitError
from provisioner.formats import bmap as bm
from provisioner.lab.postgres import free_port

pytestmark = [pytest.mark.root]
MiB = 1 << 20
PATTERN = b"\xaa" * 4096


def make_image(folder: Path) -> tuple[Path, Path]:
    """A 48 MiB GPT image: table, a data island at 3 MiB, one at 40 MiB, holes between."""
    raw = folder / "t.img"
    with raw.open("wb") as f:
        f.truncate(48 * MiB)
    subprocess.run(["sfdisk", "--quiet", str(raw)], input="label: gpt\n,40M\n,\n", text=True,
                   check=True)
    with raw.open("r+b") as f:
        f.seek(3 * MiB)
        f.write(b"island-one" * 100_000)
        f.seek(40 * MiB)
        f.write(b"island-two" * 1000)
    block_map = bm.create(raw)
    block_map.write(folder / "t.bmap")
    return raw, folder / "t.bmap"


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    made: list[str] = []

    def attach(size: int) -> str:
        backing = tmp_path / f"disk{len(made)}.raw"
        backing.write_bytes(PATTERN * (size // 4096))  # old data everywhere
        dev = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True,
                             text=True, check=True).stdout.strip()
        made.append(dev)
        return dev

    yield attach
    for dev in made:
        subprocess.run(["losetup", "-d", dev], check=False)


def read(dev: str, offset: int, n: int) -> bytes:
    with open(dev, "rb") as f:
        f.seek(offset)
        return f.read(n)


def check_installed(dev: str, raw: Path, bmap_path: Path, relocated: bool = False) -> None:
    block_map = bm.load(bmap_path)
    image = raw.read_bytes()
    for r in block_map.ranges:
        # Moving the backup GPT rewrites the protective MBR (LBA 0) and primary header (LBA 1).
        a = max(r.first * 4096, 1024 if relocated else 0)
        b = min((r.last + 1) * 4096, len(image))
        assert read(dev, a, b - a) == image[a:b]
    assert read(dev, 20 * MiB, 4096) == PATTERN  # a hole of the image: never written
    assert subprocess.run(["sfdisk", "--verify", dev], capture_output=True).returncode == 0


def test_zst_from_the_stick_onto_a_larger_disk(tmp_path: Path, loop) -> None:  # type: ignore[no-untyped-def]
    raw, bmap_path = make_image(tmp_path)
    subprocess.run(["zstd", "-q", "-k", str(raw)], check=True)
    dev = loop(64 * MiB)
    seen: list[tuple[int, int]] = []
    result = install(FileSource(raw.with_suffix(".img.zst"), bmap_path), dev,
                     progress=lambda d, t: seen.append((d, t)))
    check_installed(dev, raw, bmap_path, relocated=True)
    assert result.verified and result.gpt_relocated and result.disk_size == 64 * MiB
    assert result.bytes_written == bm.load(bmap_path).mapped_blocks * 4096
    assert seen[-1][0] == seen[-1][1] and result.bytes_written < 8 * MiB
    table = json.loads(subprocess.run(["sfdisk", "--json", dev], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert table["lastlba"] > 48 * MiB // 512  # backup GPT moved to the disk's end


class _Ranges:
    """The station's way of serving the raw image, counting what the agent asks for."""

    def __init__(self, folder: Path) -> None:
        self.requests: list[str] = []
        app = FastAPI()

        @app.get("/image/{name}")
        def image(name: str, request: __import__("fastapi").Request) -> FileResponse:
            self.requests.append(request.headers.get("range", "whole"))
            return FileResponse(folder / {"disk.img": "t.img", "disk.bmap": "t.bmap"}[name])

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Ranges:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_http_ranges_fetch_only_mapped_blocks(tmp_path: Path, loop) -> None:  # type: ignore[no-untyped-def]
    raw, bmap_path = make_image(tmp_path)
    dev = loop(48 * MiB)  # exactly the image's size is enough
    with _Ranges(tmp_path) as srv:
        result = install(HttpSource(f"http://127.0.0.1:{srv.port}"), dev)
    check_installed(dev, raw, bmap_path)
    assert not result.gpt_relocated
    ranges = [r for r in srv.requests if r != "whole"]
    fetched = sum(int(b) - int(a) + 1 for a, b in (r.removeprefix("bytes=").split("-") for r in ranges))
    assert fetched == result.bytes_written < raw.stat().st_size // 4


def test_refuses_a_smaller_disk_and_leaves_it_untouched(tmp_path: Path, loop) -> None:  # type: ignore[no-untyped-def]
    raw, bmap_path = make_image(tmp_path)
    dev = loop(32 * MiB)
    with pytest.raises(DeelitError, match="smaller than the image"):
        install(FileSource(raw, bmap_path), dev)
    assert read(dev, 0, 4096) == PATTERN


def test_refuses_the_boot_medium(tmp_path: Path, loop) -> None:  # type: ignore[no-untyped-def]
    raw, bmap_path = make_image(tmp_path)
    dev = loop(64 * MiB)
    rdev = Path(dev).stat().st_rdev
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"22 1 {__import__('os').major(rdev)}:{__import__('os').minor(rdev)} / "
                         "/run/live/medium ro - ext4 " + dev + " ro\n")
    with pytest.raises(DeelitError, match="refusing"):
        install(FileSource(raw, bmap_path), dev, safety=Safety(mountinfo=mountinfo))
    assert read(dev, 0, 4096) == PATTERN


def test_corrupt_source_stops_before_the_partition_table(tmp_path: Path, loop) -> None:  # type: ignore[no-untyped-def]
    raw, bmap_path = make_image(tmp_path)
    with raw.open("r+b") as f:  # a bit flip in the island at 40 MiB
        f.seek(40 * MiB + 5)
        f.write(b"X")
    dev = loop(64 * MiB)
    with pytest.raises(DeelitError, match="arrived corrupted"):
        install(FileSource(raw, bmap_path), dev)
    assert read(dev, 0, HEAD) == bytes(HEAD)  # old table gone, new one never written: boots nothing
    assert subprocess.run(["sfdisk", "--verify", dev], capture_output=True).returncode != 0 or \
        b"EFI PART" not in read(dev, 512, 512)


def test_choose_target_never_guesses() -> None:
    disks = [
        {"name": "sda", "path": "/dev/sda", "size": 10**9, "tran": "usb", "rm": True, "type": "disk"},
        {"name": "nvme0n1", "path": "/dev/nvme0n1", "size": 256 * 10**9, "tran": "nvme", "rm": False, "type": "disk"},
        {"name": "loop0", "path": "/dev/loop0", "size": 10**12, "tran": None, "rm": False, "type": "loop"},
    ]
    assert choose_target(disks, 4 * 10**9, set()) == "/dev/nvme0n1"
    with pytest.raises(DeelitError, match="boot medium"):
        choose_target(disks, 4 * 10**9, {"nvme0n1"})
    two = [*disks, {"name": "sdb", "path": "/dev/sdb", "size": 500 * 10**9, "tran": "sata", "rm": False, "type": "disk"}]
    with pytest.raises(DeelitError, match="several internal disks"):
        choose_target(two, 4 * 10**9, set())
    with pytest.raises(DeelitError, match="smaller than the image"):
        choose_target(disks, 300 * 10**9, set())
