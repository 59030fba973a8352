"""The flash commands as a user runs them (file targets; block devices are in integration)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from provisioner.errors import DeelitError
from provisioner.flash.commands import register
from provisioner.formats import bmap as bm
from provisioner.formats import release_signature as rs

B = bm.BLOCK_SIZE


@pytest.fixture
def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "pupil.img"
    with p.open("wb") as f:
        f.truncate(4 << 20)
        f.seek(B)
        f.write(b"\xab" * (3 * B))
    return p


def test_json_result_for_scripts(app: typer.Typer, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.img"
    res = CliRunner().invoke(app, ["flash", str(image), str(out), "--to-file", "--yes", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ok"] and data["verified"] and data["mapped_bytes"] == 3 * B
    [t] = data["targets"]
    assert t["target"] == str(out) and t["verified"] is True and t["bytes_written"] == 3 * B
    assert out.read_bytes() == image.read_bytes()


def test_declining_the_question_writes_nothing(app: typer.Typer, image: Path,
                                               tmp_path: Path) -> None:
    out = tmp_path / "o.img"
    out.write_bytes(b"keep")
    res = CliRunner().invoke(app, ["flash", str(image), str(out), "--to-file"], input="n\n")
    assert res.exit_code != 0
    assert isinstance(res.exception, DeelitError) and "nothing was written" in str(res.exception)
    assert "o.img" in res.output  # the target was shown before asking
    assert out.read_bytes() == b"keep"


def test_no_verify_says_not_verified(app: typer.Typer, image: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["flash", str(image), str(tmp_path / "o.img"), "--to-file",
                                   "--yes", "--no-verify"])
    assert res.exit_code == 0, res.output
    assert "the targets were not read back; they are not verified" in res.stdout


def test_refusal_in_json_names_each_target(app: typer.Typer, image: Path,
                                           tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["flash", str(image), str(tmp_path / "missing"), "--json"])
    assert isinstance(res.exception, DeelitError) and res.exception.exit_code == 2
    data = json.loads(res.stdout)
    assert data["refused"][0]["reason"].startswith("does not exist")
    assert not (tmp_path / "missing").exists()


def test_verify_only_fails_on_a_different_target(app: typer.Typer, image: Path,
                                                 tmp_path: Path) -> None:
    other = tmp_path / "other.img"
    other.write_bytes(bytes(4 << 20))
    res = CliRunner().invoke(app, ["flash", str(image), str(other), "--verify-only", "--json"])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["targets"][0]["mismatched_ranges"] == ["1-3"]
    assert other.read_bytes() == bytes(4 << 20)  # verify-only never writes


def test_bmap_create_writes_name_bmap_beside_the_image(app: typer.Typer, image: Path) -> None:
    res = CliRunner().invoke(app, ["bmap", "create", str(image)])
    assert res.exit_code == 0, res.output
    m = bm.load(image.with_name("pupil.bmap"))
    assert [(r.first, r.last) for r in m.ranges] == [(1, 3)]


def test_bmap_create_refuses_compressed_images(app: typer.Typer, tmp_path: Path) -> None:
    z = tmp_path / "x.img.zst"
    z.write_bytes(b"x")
    res = CliRunner().invoke(app, ["bmap", "create", str(z)])
    assert isinstance(res.exception, DeelitError) and "raw image" in str(res.exception)


def test_json_run_starts_without_loading_rich(image: Path, tmp_path: Path) -> None:
    """Scripts and the benchmark use --json: nothing is drawn, so rich is not imported (it is a
    noticeable part of the start-up time on a busy machine)."""
    out = tmp_path / "o.img"
    code = ("import runpy, sys\n"
            "sys.argv = ['deelit', 'flash', sys.argv[1], sys.argv[2], '--to-file', '--yes',"
            " '--json']\n"
            "try:\n"
            "    runpy.run_module('provisioner.cli', run_name='__main__')\n"
            "finally:\n"
            "    loaded = sorted(m for m in sys.modules if m == 'rich' or m.startswith('rich.'))\n"
            "    print('RICH', loaded, file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code, str(image), str(out)],
                         capture_output=True, text=True, cwd=Path(__file__).parents[3])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ok"]
    assert "RICH []" in res.stderr, res.stderr


# -- a point that accepts only signed builds (--signers / DEELIT_SIGNERS) --------------------

@pytest.fixture
def build(image: Path, tmp_path: Path) -> Path:
    """The image in a build folder as `deelit build` leaves it: image, map, SHA256SUMS."""
    folder = tmp_path / "out"
    folder.mkdir()
    image.rename(folder / image.name)
    bm.create(folder / image.name).write(folder / "pupil.bmap")
    subprocess.run("sha256sum pupil.img pupil.bmap > SHA256SUMS", shell=True, cwd=folder,
                   check=True)
    return folder


@pytest.fixture
def kept(tmp_path: Path) -> Path:
    """A target file that must come out of a refusal untouched."""
    target = tmp_path / "stick.img"
    target.write_bytes(b"keep")
    return target


def flash_signed(app: typer.Typer, build: Path, kept: Path, signers: Path,
                 *extra: str) -> Result:
    return CliRunner().invoke(app, ["flash", str(build / "pupil.img"), str(kept), "--to-file",
                                    "--yes", "--signers", str(signers), *extra])


def refusal(res: Result, kept: Path) -> str:
    assert isinstance(res.exception, DeelitError) and res.exception.exit_code == 2, res.output
    assert kept.read_bytes() == b"keep"  # nothing was written
    return str(res.exception)


def test_signed_build_is_written(app: typer.Typer, build: Path, kept: Path,
                                 release_keys: Path) -> None:
    rs.sign(build, release_keys / "partner")
    res = flash_signed(app, build, kept, release_keys / "partner.pub")
    assert res.exit_code == 0, res.output
    assert "signed by partner@ci" in res.output
    assert kept.read_bytes() == (build / "pupil.img").read_bytes()


def test_unsigned_build_is_refused_before_writing(app: typer.Typer, build: Path, kept: Path,
                                                  release_keys: Path) -> None:
    message = refusal(flash_signed(app, build, kept, release_keys / "partner.pub"), kept)
    assert f"{build / 'SHA256SUMS.sig'}: missing, so this build is not signed" in message


def test_image_without_a_build_folder_is_refused(app: typer.Typer, image: Path, kept: Path,
                                                 release_keys: Path) -> None:
    res = CliRunner().invoke(app, ["flash", str(image), str(kept), "--to-file", "--yes"],
                             env={"DEELIT_SIGNERS": str(release_keys / "partner.pub")})
    assert f"{image.parent}: no SHA256SUMS in it" in refusal(res, kept)


def test_image_changed_after_signing_is_refused(app: typer.Typer, build: Path, kept: Path,
                                                release_keys: Path) -> None:
    rs.sign(build, release_keys / "partner")
    with (build / "pupil.img").open("r+b") as f:
        f.seek(B + 7)
        f.write(b"\x00")
    message = refusal(flash_signed(app, build, kept, release_keys / "partner.pub"), kept)
    assert f"{build / 'pupil.img'} was changed or damaged" in message


def test_build_signed_by_another_key_is_refused(app: typer.Typer, build: Path, kept: Path,
                                                release_keys: Path) -> None:
    rs.sign(build, release_keys / "stranger")
    res = CliRunner().invoke(app, ["flash", str(build / "pupil.img"), str(kept), "--to-file",
                                   "--yes", "--json"],
                             env={"DEELIT_SIGNERS": str(release_keys / "partner.pub")})
    assert "not among the signers" in refusal(res, kept)


def test_image_or_map_outside_the_signed_list_is_refused(app: typer.Typer, build: Path,
                                                         kept: Path, release_keys: Path,
                                                         tmp_path: Path) -> None:
    rs.sign(build, release_keys / "partner")
    slipped = build / "other.img"
    slipped.write_bytes((build / "pupil.img").read_bytes())
    res = CliRunner().invoke(app, ["flash", str(slipped), str(kept), "--to-file", "--yes",
                                   "--signers", str(release_keys / "partner.pub")])
    assert f"{slipped}: not listed in {build / 'SHA256SUMS'}" in refusal(res, kept)
    elsewhere = tmp_path / "elsewhere.bmap"
    elsewhere.write_bytes((build / "pupil.bmap").read_bytes())
    message = refusal(flash_signed(app, build, kept, release_keys / "partner.pub",
                                   "--bmap", str(elsewhere)), kept)
    assert f"--bmap {elsewhere}: not in the signed build folder" in message
