"""Target refusals that need no root: missing paths, files, character devices, duplicates.

Each test proves nothing was written or created. Refusals of block devices (mounted, swap,
read-only, fixed, too small, ...) are in tests/integration/flash with real loop devices.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from provisioner.flash import policy as pol


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "src.img"
    p.write_bytes(b"\x5a" * 65536)
    return p


def refusal(paths: list[str], image: Path, *, to_file: bool = False) -> list[pol.Refusal]:
    with pytest.raises(pol.TargetRefused) as exc:
        pol.check(paths, image_size=image.stat().st_size, source=image, to_file=to_file)
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
    with pytest.raises(pol.TargetRefused) as exc:
        pol.check(["/dev/null"], image_size=1, source=None, to_file=True)
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
    ts = pol.check([str(existing), str(tmp_path / "n.img")], image_size=10, source=image,
                  to_file=True)
    assert [t.is_file for t in ts] == [True, True]
    assert not (tmp_path / "n.img").exists()  # checking creates nothing
