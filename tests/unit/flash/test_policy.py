"""Target refusals that need no root: missing paths, files, character devices, duplicates.

Each test proves nothing was written or created. Refusals of block devices (mounted, swap,
read-only, fixed, too small, ...) are in tests/integration/flash with real loop devices.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from provisioner.flash import policy as tg


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "src.img"
    p.write_bytes(b"\x5a" * 65536)
    return p


def refusal(paths: list[str], image: Path, *, to_file: bool = False) -> list[tg.Refusal]:
    with pytest.raises(tg.TargetRefused) as exc:
        tg.check(paths, image_size=image.stat().st_size, source=image, to_file=to_file)
    assert exc.value.exit_code == 2
    return exc.value.refusals


def test_missing_device_path_is_refused_and_not_created(image: Path) -> None:
    missing = "/dev/deelit-test-no-such-stick"
    for to_file in (False, True):  # --to-file must not create a file under /dev either
        [r] = refusal([missing], image, to_file=to_file)
        assert "does not exist" in r.reason
        assert not Path(missing).exists()


def test_missing_file_without_to_file_is_refused_and_not_created(image: Path,
                                                                tmp_path: Path) -> None:
    target = tmp_path / "new.img"
    [r] = refusal([str(target)], image)
    assert "does not exist" in r.reason
    assert not target.exists()


def test_plain_file_is_refused_without_to_file(image: Path, tmp_path: Path) -> None:
    target = tmp_path / "old.img"
    target.write_bytes(b"keep me" * 1000)
    before = digest(target)
    [r] = refusal([str(target)], image)
    assert "not a block device" in r.reason and "--to-file" in r.reason
    assert digest(target) == before


def test_character_device_is_refused() -> None:
    with pytest.raises(tg.TargetRefused) as exc:
        tg.check(["/dev/null"], image_size=1, source=None, to_file=True)
    assert "not a block device" in exc.value.refusals[0].reason


def test_source_image_itself_is_refused_as_file_target(image: Path) -> None:
    before = digest(image)
    [r] = refusal([str(image)], image, to_file=True)
    assert "source image itself" in r.reason
    assert digest(image) == before


def test_new_file_in_missing_folder_is_refused(image: Path, tmp_path: Path) -> None:
    [r] = refusal([str(tmp_path / "nope" / "x.img")], image, to_file=True)
    assert "neither does its folder" in r.reason
    assert not (tmp_path / "nope").exists()


def test_same_target_twice_is_refused(image: Path, tmp_path: Path) -> None:
    a = tmp_path / "a.img"
    a.write_bytes(b"a")
    link = tmp_path / "link.img"
    link.symlink_to(a)
    rs = refusal([str(a), str(link)], image, to_file=True)
    assert [r.path for r in rs] == [str(link)] and "same target" in rs[0].reason
    assert a.read_bytes() == b"a"


def test_one_bad_target_refuses_all_and_lists_every_reason(image: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.img"
    good.write_bytes(b"g" * 10)
    rs = refusal([str(good), "/dev/null", str(tmp_path / "missing")], image)
    assert len(rs) == 3  # good.img is refused too: it is a plain file without --to-file
    assert good.read_bytes() == b"g" * 10


def test_accepted_file_targets(image: Path, tmp_path: Path) -> None:
    existing = tmp_path / "e.img"
    existing.write_bytes(b"x")
    ts = tg.check([str(existing), str(tmp_path / "n.img")], image_size=10, source=image,
                  to_file=True)
    assert [t.is_file for t in ts] == [True, True]
    assert not (tmp_path / "n.img").exists()  # checking creates nothing


def fake_node(sysfs: Path, rel: str, dev: str, **files: str) -> Path:
    node = sysfs / rel
    node.mkdir(parents=True)
    (node / "dev").write_text(dev + "\n")
    for name, text in files.items():
        (node / name).write_text(text)
    (sysfs / "dev" / "block").mkdir(parents=True, exist_ok=True)
    (sysfs / "dev" / "block" / dev).symlink_to(node)
    return node


def test_disks_under_follows_partitions_and_device_mapper(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    sda = fake_node(sysfs, "devices/pci0/ata1/block/sda", "8:0", size="100")
    fake_node(sysfs, "devices/pci0/ata1/block/sda/sda2", "8:2", partition="2")
    fake_node(sysfs, "devices/pci0/nvme/block/nvme0n1", "259:0", size="100")
    dm = fake_node(sysfs, "devices/virtual/block/dm-0", "253:0")
    (dm / "slaves").mkdir()
    (dm / "slaves" / "sda2").symlink_to(sda / "sda2")
    assert tg._disks_under((253, 0), sysfs) == {"sda"}
    assert tg._disks_under((8, 2), sysfs) == {"sda"}
    assert tg._disks_under((259, 0), sysfs) == {"nvme0n1"}
    assert tg._disks_under((1, 1), sysfs) == set()


def test_mountinfo_parsing_unescapes_paths(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "36 35 98:0 / /mnt/my\\040stick rw,noatime master:1 - ext4 /dev/sdb1 rw\n"
        "37 35 0:45 / /home rw shared:2 - btrfs /dev/mapper/x rw\n")
    ms = tg.mounts(info)
    assert ms[0] == tg.Mount((98, 0), "/mnt/my stick", "/dev/sdb1")
    assert ms[1].devno == (0, 45) and ms[1].source == "/dev/mapper/x"
