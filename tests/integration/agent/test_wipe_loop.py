"""The overwrite wipe on real loop devices: pattern gone, certificate, refusals, interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.agent import overwrite
from provisioner.agent.blockdev import Safety, confirmation_token, identify
from provisioner.agent.wipe import WipeRequest, wipe
from provisioner.errors import DeelitError

pytestmark = pytest.mark.root
PATTERN = (b"DEEL-IT family photo \x00\x01\x02\x03 " * 20)[:512]  # one sector, easy to find


@pytest.fixture
def loop_disk(tmp_path, request):
    """A loop device over a pattern-filled file; detached by the finalizer whatever happens."""

    def make(size_mib: int = 32) -> str:
        backing = tmp_path / f"disk-{size_mib}.img"
        with backing.open("wb") as f:
            for _ in range(size_mib * 2048):
                f.write(PATTERN)
        dev = subprocess.run(
            ["losetup", "-f", "--show", str(backing)], check=True, capture_output=True, text=True
        ).stdout.strip()
        request.addfinalizer(lambda: subprocess.run(["losetup", "-d", dev], check=False))
        return dev

    return make


def pattern_count(dev: str) -> int:
    with open(dev, "rb", buffering=0) as f:
        fd = f.fileno()
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        data = f.read()
    return data.count(PATTERN)


def request(dev: str, cert_dir: Path, **kw) -> WipeRequest:
    token = confirmation_token(identify(dev))
    base = {
        "device": dev,
        "method": "overwrite",
        "confirm": token,
        "cert_dir": cert_dir,
        "organisation": "DEEL IT Gent",
        "technician_id": "tech-07",
    }
    return WipeRequest(**{**base, **kw})


def test_overwrite_wipes_the_pattern_and_certifies(loop_disk, tmp_path):
    dev = loop_disk(32)
    assert pattern_count(dev) == 32 * 2048
    result = wipe(request(dev, tmp_path / "certs", method="auto"))
    assert pattern_count(dev) == 0
    assert result.method == "overwrite" and result.nist_category == "Clear"
    cert_path = Path(result.certificate or "")
    raw = cert_path.read_bytes()
    import hashlib

    assert hashlib.sha256(raw).hexdigest() == result.certificate_sha256
    cert = json.loads(raw)
    assert cert["schema"] == "deelit-wipe-certificate/1"
    assert cert["organisation"] == "DEEL IT Gent" and cert["technician_id"] == "tech-07"
    assert cert["media"]["size_bytes"] == 32 * 2**20 and cert["media"]["type"] == "loop"
    assert cert["sanitization"]["method"] == "overwrite"
    assert cert["sanitization"]["nist_category"] == "Clear"
    ver = cert["verification"]
    assert ver["passed"] and ver["mismatches"] == 0 and ver["scope"] == "sample"
    assert ver["blocks_total"] == 32 * 2**20 // overwrite.BLOCK
    assert ver["percent_sampled"] >= 1.0 and ver["first_and_last_mib"]
    assert cert["hidden_areas"] == ["HPA/DCO: not applicable (loop device)"]
    assert [p.name for p in cert_path.parent.iterdir()] == [cert_path.name]  # no temp left


def test_full_verification_through_the_cli_and_one_flipped_byte(loop_disk, tmp_path):
    dev = loop_disk(16)
    args = ["agent", "wipe", dev, "--method", "overwrite", "--verify", "full", "--confirm",
            confirmation_token(identify(dev)), "--point", "p", "--technician", "t1",
            "--cert-dir", str(tmp_path / "c"), "--json"]
    done = run_cli(args, timeout=120)
    assert done.returncode == 0, done.stderr
    ver = json.loads(Path(json.loads(done.stdout)["certificate"]).read_text())["verification"]
    assert ver["scope"] == "full" and ver["passed"]
    assert ver["blocks_sampled"] == ver["blocks_total"] == 16 * 2**20 // overwrite.BLOCK
    assert pattern_count(dev) == 0
    # the same read-back on the block device, with one byte changed behind the wipe's back
    size = 16 * 2**20
    overwrite.write_pass(dev, size, seed=5)
    assert overwrite.verify_pass(dev, size, 5, full=True).passed
    at = 11 * 2**20 + 4321
    fd = os.open(dev, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, at)
        os.pwrite(fd, bytes([byte[0] ^ 0x80]), at)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert overwrite.verify_pass(dev, size, 5, full=True).mismatch_blocks == [at // overwrite.BLOCK]


def test_dry_run_shows_the_token_and_erases_nothing(loop_disk, tmp_path):
    dev = loop_disk(8)
    result = wipe(WipeRequest(device=dev, dry_run=True, cert_dir=tmp_path / "c"))
    assert result.token == confirmation_token(identify(dev)) and result.method == "overwrite"
    assert pattern_count(dev) == 8 * 2048 and not (tmp_path / "c").exists()


def test_refuses_without_or_with_a_wrong_token(loop_disk, tmp_path):
    dev = loop_disk(8)
    with pytest.raises(DeelitError, match="--dry-run"):
        wipe(request(dev, tmp_path, confirm=None))
    other = loop_disk(9)
    with pytest.raises(DeelitError, match="does not match"):
        wipe(request(dev, tmp_path, confirm=confirmation_token(identify(other))))
    assert pattern_count(dev) == 8 * 2048 and not list(tmp_path.glob("*.json"))


def test_refuses_the_boot_disk(loop_disk, tmp_path):
    """Pretend the loop device holds / via a fake mountinfo: the wipe must refuse it."""
    dev = loop_disk(8)
    st = os.stat(dev)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
        f"25 1 {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} / / rw,relatime - ext4 {dev} rw\n"
    )
    with pytest.raises(DeelitError, match="booted from"):
        wipe(request(dev, tmp_path / "c"), safety=Safety(mountinfo=mountinfo))
    assert pattern_count(dev) == 8 * 2048
    # the same check through the CLI: non-zero exit, message names the device
    proc = run_cli(
        [
            "agent",
            "wipe",
            dev,
            "--method",
            "overwrite",
            "--confirm",
            confirmation_token(identify(dev)),
            "--point",
            "p",
            "--technician",
            "t1",
            "--cert-dir",
            str(tmp_path / "c"),
            "--mountinfo",
            str(mountinfo),
        ]
    )
    assert proc.returncode != 0 and dev in proc.stderr and "booted from" in proc.stderr
    assert not (tmp_path / "c").exists()


def test_refuses_a_file(tmp_path):
    img = tmp_path / "plain.img"
    img.write_bytes(b"x" * 4096)
    with pytest.raises(DeelitError, match="not a block device"):
        wipe(WipeRequest(device=str(img), dry_run=True))


def run_cli(args: list[str], **kw) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from provisioner.cli import main; main()", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, **kw
    )


@pytest.mark.slow
def test_interrupted_wipe_leaves_no_certificate_and_a_rerun_completes(loop_disk, tmp_path):
    dev = loop_disk(256)
    size = 256 * 2**20
    certs = tmp_path / "certs"
    token = confirmation_token(identify(dev))
    args = [
        "agent",
        "wipe",
        dev,
        "--method",
        "overwrite",
        "--confirm",
        token,
        "--point",
        "p",
        "--technician",
        "t1",
        "--cert-dir",
        str(certs),
        "--json",
    ]
    cmd = [sys.executable, "-c", "from provisioner.cli import main; main()", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        written = 0
        while time.monotonic() < deadline and proc.poll() is None:
            io = Path(f"/proc/{proc.pid}/io").read_text()
            written = int(io.split("wchar:")[1].split()[0])
            if written >= size // 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the wipe finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert size // 3 <= written < size
    assert not certs.exists() or not any(certs.iterdir())
    remaining = pattern_count(dev)
    assert 0 < remaining < 256 * 2048  # half-wiped: pattern partly gone, not certified

    done = run_cli(args, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert Path(result["certificate"]).is_file() and result["verification"]["passed"]
    assert pattern_count(dev) == 0
