"""Every refusal of issue 9 on a real object, through the real command, writing nothing.

Each test runs `deelit flash ... --yes` (so no question stands between the user and the
disk), expects exit 2 with the reason, and compares the device's checksum before and after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.flash import discovery, policy

pytestmark = pytest.mark.root

MiB = 1 << 20


def refused(h, image: Path, dev: Path, *flags: str) -> str:
    """Runs the flash, checks it was refused and wrote nothing; returns the reason."""
    before = h.digest(dev) if dev.exists() else None
    res = h.deelit("flash", str(image), str(dev), "--yes", "--json", *flags)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "nothing was written" in res.stderr
    after = h.digest(dev) if dev.exists() else None
    assert after == before
    [r] = json.loads(res.stdout)["refused"]
    return str(r["reason"])


def test_fixed_disk_needs_allow_fixed(h, image, loop, tmp_path: Path) -> None:
    dev = loop(h.patterned(tmp_path / "t.bin", 32 * MiB))
    assert "not removable" in refused(h, image.path, dev)
    # the same device is accepted with --allow-fixed: the refusal above was about that alone
    res = h.deelit("flash", str(image.path), str(dev), "--yes", "--allow-fixed", check=True)
    assert res.returncode == 0
    assert h.mapped_equal(image, dev) == []


def test_mounted_filesystem(h, image, loop, mount, tmp_path: Path) -> None:
    dev = loop(h.patterned(tmp_path / "t.bin", 32 * MiB))
    h.run("mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(dev))
    where = mount(str(dev), tmp_path / "mnt", "-o", "ro")  # ro: the fs itself writes nothing
    reason = refused(h, image.path, dev, "--allow-fixed")
    assert "mounted filesystem" in reason and str(where) in reason


def test_mounted_in_another_mount_namespace(h, image, loop, tmp_path: Path) -> None:
    """A mount invisible in our mountinfo is still caught (exclusive open) and located."""
    dev = loop(h.patterned(tmp_path / "t.bin", 32 * MiB))
    h.run("mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(dev))
    (tmp_path / "ns").mkdir()
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount -o ro {dev} {tmp_path / 'ns'} && echo ready && exec sleep 120"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert str(dev) not in Path("/proc/self/mounts").read_text()
        reason = refused(h, image.path, dev, "--allow-fixed")
        assert "mounted filesystem" in reason and f"pid {proc.pid}" in reason
    finally:
        proc.send_signal(signal.SIGKILL)  # the namespace, and its mount, go with it
        proc.wait()


def test_swap(h, image, loop, tmp_path: Path) -> None:
    dev = loop(h.patterned(tmp_path / "t.bin", 32 * MiB))
    h.run("mkswap", str(dev))
    h.run("swapon", "-p", "0", str(dev))
    try:
        assert "swap" in refused(h, image.path, dev, "--allow-fixed")
    finally:
        h.run("swapoff", str(dev))


def test_read_only_device(h, image, loop, tmp_path: Path) -> None:
    dev = loop(h.patterned(tmp_path / "t.bin", 32 * MiB), "--read-only")
    assert "read-only" in refused(h, image.path, dev, "--allow-fixed")


def test_too_small(h, image, loop, tmp_path: Path) -> None:
    dev = loop(h.patterned(tmp_path / "t.bin", 8 * MiB))
    assert "too small" in refused(h, image.path, dev, "--allow-fixed")


def test_partition_is_not_a_whole_disk(h, image, loop, tmp_path: Path) -> None:
    backing = h.patterned(tmp_path / "t.bin", 64 * MiB)
    h.run("sfdisk", "-q", str(backing), input="label: gpt\nsize=40MiB\n")
    dev = loop(backing, "--partscan")
    part = Path(f"{dev}p1")
    for i in range(50):  # devtmpfs adds the node shortly after the partition scan
        if part.exists():
            break
        if i == 10:  # the scan at attach time does not always happen here; ask again
            h.run("partx", "-a", str(dev))
        time.sleep(0.05)
    assert part.exists()
    assert "is a partition" in refused(h, image.path, part, "--allow-fixed")


def test_loop_over_the_source_image(h, image, loop) -> None:
    dev = loop(image.path)
    before = h.digest(image.path)
    assert "over the source image" in refused(h, image.path, dev, "--allow-fixed")
    assert h.digest(image.path) == before


def test_target_holding_the_source_image(h, image, loop, mount, tmp_path: Path) -> None:
    dev = loop(h.patterned(tmp_path / "t.bin", 64 * MiB))
    h.run("mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(dev))
    where = mount(str(dev), tmp_path / "mnt")
    inner = where / "pupil.img"
    inner.write_bytes(image.path.read_bytes())
    os.sync()
    res = h.deelit("flash", str(inner), str(dev), "--yes", "--allow-fixed", "--json")
    assert res.returncode == 2
    assert "holds the source image" in res.stdout
    assert inner.read_bytes() == image.path.read_bytes()


def test_running_system_disk(h, image) -> None:
    root = next((m for m in discovery.mounts() if m.mountpoint == "/"), None)
    if root is None or not root.source.startswith("/dev/"):
        pytest.skip(f"/ is not on a block device here ({root.source if root else '?'})")
    disks = discovery.system_disks()
    assert disks, "the disk holding / was not found"
    disk = Path(f"/dev/{sorted(disks)[0]}")
    try:
        with disk.open("rb") as f:
            head: bytes | None = f.read(MiB)
    except PermissionError:  # a device cgroup may forbid opening it at all (then: no write)
        head = None
    res = h.deelit("flash", str(image.path), str(disk), "--yes", "--allow-fixed", "--json")
    assert res.returncode == 2 and "running system" in res.stdout
    if head is not None:
        with disk.open("rb") as f:
            assert f.read(MiB) == head


def test_missing_device_is_not_created(h, image) -> None:
    missing = Path("/dev/sdzz9")
    assert not missing.exists()
    assert "does not exist" in refused(h, image.path, missing, "--allow-fixed")
    assert not missing.exists()


def test_plain_file_without_to_file(h, image, tmp_path: Path) -> None:
    f = h.patterned(tmp_path / "stick.img", 32 * MiB)
    assert "not a block device" in refused(h, image.path, f)


# --- removable: sysfs read through a root the test can point at a fake tree --------------


def fake_sysfs(root: Path, dev: Path, rel: str, removable: str) -> Path:
    """A sysfs tree describing the real device `dev`, with the given removable flag."""
    st = os.stat(dev)
    devno = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    real = Path("/sys/dev/block", devno).resolve()
    node = root / rel / real.name
    node.mkdir(parents=True)
    for name in ("dev", "size", "ro"):
        (node / name).write_text((real / name).read_text())
    (node / "removable").write_text(removable + "\n")
    (node / "holders").mkdir()
    (root / "dev" / "block").mkdir(parents=True)
    (root / "dev" / "block" / devno).symlink_to(node)
    return root


@pytest.mark.parametrize(("rel", "removable", "accepted", "transport"), [
    ("devices/virtual/block", "1", True, None),  # a card reader or a stick with the RMB bit
    ("devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0/block",
     "0", True, "usb"),  # a USB SSD that says it is fixed: still on a hot-plug bus
    ("devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block", "0", False,
     None),  # an internal SATA disk
])
def test_removable_flag_from_sysfs(image, loop, tmp_path: Path, rel: str, removable: str,
                                   accepted: bool, transport: str | None, h) -> None:
    dev = loop(h.patterned(tmp_path / "t.bin", 32 * MiB))
    sysfs = fake_sysfs(tmp_path / "sys", dev, rel, removable)
    kw = {"image_size": image.bmap.image_size, "source": image.path, "sysfs": sysfs}
    if accepted:
        [t] = policy.check([str(dev)], **kw)
        assert t.removable and t.transport == transport
    else:
        with pytest.raises(policy.TargetRefused, match="not removable"):
            policy.check([str(dev)], **kw)
        [t] = policy.check([str(dev)], allow_fixed=True, **kw)
        assert not t.removable
