"""deelit stick prepare/queue on an image file: files in and the queue out with debugfs, no mount."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from provisioner.build.manifest import artifact_record
from provisioner.errors import DeelitError
from provisioner.netboot import usb

MiB = 1 << 20


def stick_file(path: Path) -> Path:
    """A stick-shaped image: GPT, ESP-like first partition, ext4 root of the installer's type."""
    with path.open("wb") as f:
        f.truncate(96 * MiB)
    subprocess.run(["sfdisk", "--quiet", str(path)], check=True, text=True,
                   input=f"label: gpt\nstart=2048,size=8M,type=U\nstart=18432,type={usb.ROOT_TYPE}\n")
    subprocess.run(["mkfs.ext4", "-q", "-E", f"offset={18432 * 512}", str(path), "70000k"], check=True)
    return path


def build_folder(image: Path, stem: str, manifest_data: dict[str, Any]) -> Path:
    """A build folder with a (fake) disk image and map that its manifest describes."""
    image.mkdir()
    (image / f"{stem}.img.zst").write_bytes(b"zstd-frames" * 1000)
    (image / f"{stem}.bmap").write_text("<bmap/>")
    artifacts = [asdict(artifact_record(image / f"{stem}{ext}", kind))
                 for ext, kind in ((".img.zst", "disk-image"), (".bmap", "bmap"))]
    (image / "manifest.json").write_text(json.dumps(manifest_data | {"artifacts": artifacts}))
    return image


def test_prepare_then_read_queue(tmp_path: Path, manifest_data: dict[str, Any]) -> None:
    stick = stick_file(tmp_path / "stick.raw")
    image = build_folder(tmp_path / "ci", "ci", manifest_data)
    usb.prepare(stick, image, action="wipe-install", point="MEC")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["debugfs", "-R", f"rdump /deelit {out}", f"{stick}?offset={usb.root_offset(stick)}"],
                   check=True, capture_output=True)
    assert (out / "deelit" / "image" / "ci.img.zst").read_bytes() == (image / "ci.img.zst").read_bytes()
    assert json.loads((out / "deelit" / "station.json").read_text()) == {"action": "wipe-install",
                                                                          "point": "MEC"}
    assert usb.read_queue(stick, tmp_path / "q") == []  # empty queue folder, no error
    record = tmp_path / "rec.json"
    record.write_text('{"serial": "X1"}')
    subprocess.run(["debugfs", "-w", "-R", f"write {record} /deelit/queue/rec.json",
                    f"{stick}?offset={usb.root_offset(stick)}"], check=True, capture_output=True)
    got = usb.read_queue(stick, tmp_path / "q2")
    assert [p.name for p in got] == ["rec.json"] and got[0].read_text() == '{"serial": "X1"}'
    # a stick for a batch says so in station.json: the agent then asks no question
    batch = stick_file(tmp_path / "batch.raw")
    usb.prepare(batch, image, batch=True)
    said = subprocess.run(["debugfs", "-R", "cat /deelit/station.json",
                           f"{batch}?offset={usb.root_offset(batch)}"], check=True,
                          capture_output=True, text=True).stdout
    assert json.loads(said) == {"action": "wipe-install", "batch": True}


def test_refuses_what_is_not_an_installer_stick(tmp_path: Path) -> None:
    blank = tmp_path / "blank.raw"
    blank.write_bytes(bytes(4 * MiB))
    with pytest.raises(DeelitError, match=r"no partition table|not a deelit installer stick"):
        usb.prepare(blank, tmp_path)
    stick = stick_file(tmp_path / "stick.raw")
    with pytest.raises(DeelitError, match=r"needs NAME\.img\.zst"):
        usb.prepare(stick, tmp_path / "nothing-built")


def test_a_damaged_image_is_refused_before_the_stick_is_written(tmp_path: Path,
                                                                manifest_data: dict[str, Any]) -> None:
    stick = stick_file(tmp_path / "stick.raw")
    image = build_folder(tmp_path / "pupil", "pupil", manifest_data)
    (image / "pupil.img.zst").write_bytes(b"zstd-frameZ" * 1000)  # same size, one byte changed
    before = stick.read_bytes()
    with pytest.raises(DeelitError, match=r"pupil.img.zst: its SHA-256 is not the one in manifest.json"):
        usb.prepare(stick, image)
    assert stick.read_bytes() == before  # nothing half-written


def test_a_point_with_signers_gets_only_signed_images_on_its_sticks(
        tmp_path: Path, manifest_data: dict[str, Any], release_keys: Path) -> None:
    """`deelit stick prepare --signers` (or DEELIT_SIGNERS): an unsigned build is refused
    before the stick is touched; the partner's signed one goes on."""
    from typer.testing import CliRunner

    from provisioner.cli import make_app
    from provisioner.formats import release_signature as rs

    stick = stick_file(tmp_path / "stick.raw")
    image = build_folder(tmp_path / "pupil", "pupil", manifest_data)
    subprocess.run("sha256sum manifest.json pupil.bmap pupil.img.zst > SHA256SUMS", shell=True,
                   cwd=image, check=True)
    before = stick.read_bytes()

    def prepare() -> Any:
        return CliRunner().invoke(make_app("stick"), ["stick", "prepare", str(stick), "--image",
                                                      str(image)],
                                  env={"DEELIT_SIGNERS": str(release_keys / "partner.pub")})

    refused = prepare()
    assert isinstance(refused.exception, DeelitError) and refused.exception.exit_code == 2
    assert "SHA256SUMS.sig" in str(refused.exception) and stick.read_bytes() == before
    rs.sign(image, release_keys / "partner")
    done = prepare()
    assert done.exit_code == 0, done.output
    assert "signed by partner@ci" in done.output and stick.read_bytes() != before
