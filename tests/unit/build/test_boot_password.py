"""The disk's GRUB password (provisioner/build/artifacts/boot_password.py)."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest

from provisioner.build.artifacts import boot_password as bp
from provisioner.errors import DeelitError


def test_hash_is_what_grub_checks() -> None:
    """GRUB's password_pbkdf2 recomputes PBKDF2-HMAC-SHA512 over the salt: do the same here."""
    made = bp.grub_hash("bcdefghijk", salt=bytes(range(64)))
    _, _, algo, rounds, salt, digest = made.split(".")
    assert algo == "sha512" and rounds == "10000"
    again = hashlib.pbkdf2_hmac("sha512", b"bcdefghijk", bytes.fromhex(salt), 10000, 64)
    assert digest == again.hex().upper() and bp.HASH_RE.match(made)


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v grub-mkpasswd-pbkdf2"],
                                   capture_output=True).returncode != 0,
                    reason="grub-mkpasswd-pbkdf2 (grub-common) is not on this machine")
def test_format_matches_grub_mkpasswd_pbkdf2() -> None:
    out = subprocess.run(["grub-mkpasswd-pbkdf2"], input="x\nx\n", capture_output=True, text=True,
                         check=True).stdout
    theirs = out.split("is ")[-1].strip()
    assert bp.HASH_RE.match(theirs)
    assert len(theirs.split(".")[4]) == len(bp.grub_hash("x").split(".")[4])


def test_made_password_types_the_same_on_qwerty_and_azerty() -> None:
    words = {bp.new_password() for _ in range(50)}
    assert len(words) == 50
    for word in words:
        assert len(word) == bp.LENGTH and not set(word) & set("aqzwm0123456789-")


def test_profile_password_is_made_once_and_kept_root_only(tmp_path: Path) -> None:
    first = bp.resolve("pupil", None, tmp_path / "secrets")
    again = bp.resolve("pupil", None, tmp_path / "secrets")
    other = bp.resolve("ci", None, tmp_path / "secrets")
    assert first == again and first.password and other.password != first.password
    kept = tmp_path / "secrets" / "pupil.boot-password"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert first.password in kept.read_text()


def test_points_hash_file_is_used_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "grub.hash"
    good.write_text(bp.grub_hash("x") + "\n")
    chosen = bp.resolve("pupil", str(good), tmp_path / "secrets")
    assert chosen.password is None and chosen.hash == good.read_text().strip()
    assert not (tmp_path / "secrets").exists()
    bad = tmp_path / "plain.txt"
    bad.write_text("hunter2\n")
    with pytest.raises(DeelitError, match=r"not a GRUB PBKDF2 hash.*grub-mkpasswd-pbkdf2") as err:
        bp.resolve("pupil", str(bad), tmp_path / "secrets")
    assert str(bad) in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(DeelitError, match="cannot read"):
        bp.resolve("pupil", str(tmp_path / "missing"), tmp_path / "secrets")


def test_damaged_kept_password_is_named(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pupil.boot-password").write_text("garbage\n")
    with pytest.raises(DeelitError, match=r"pupil\.boot-password: damaged"):
        bp.resolve("pupil", None, tmp_path / "secrets")
