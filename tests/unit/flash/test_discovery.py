"""Discovery without root: sysfs trees built in a folder, and mountinfo parsing."""

from __future__ import annotations

from pathlib import Path

from provisioner.flash import discovery


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
    assert discovery.disks_under((253, 0), sysfs) == {"sda"}
    assert discovery.disks_under((8, 2), sysfs) == {"sda"}
    assert discovery.disks_under((259, 0), sysfs) == {"nvme0n1"}
    assert discovery.disks_under((1, 1), sysfs) == set()


def test_mountinfo_parsing_unescapes_paths(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "36 35 98:0 / /mnt/my\\040stick rw,noatime master:1 - ext4 /dev/sdb1 rw\n"
        "37 35 0:45 / /home rw shared:2 - btrfs /dev/mapper/x rw\n")
    ms = discovery.mounts(info)
    assert ms[0] == discovery.Mount((98, 0), "/mnt/my stick", "/dev/sdb1")
    assert ms[1].devno == (0, 45) and ms[1].source == "/dev/mapper/x"
