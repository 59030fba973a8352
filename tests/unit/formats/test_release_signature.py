"""Signed build folders: ssh-keygen -Y sign/verify for real, over a small folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.errors import DeelitError
from provisioner.formats import release_signature as rs

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")

NO_PROMPT = {"stdin": subprocess.DEVNULL, "start_new_session": True, "check": True,
             "capture_output": True}


def keypair(folder: Path, name: str, comment: str, passphrase: str = "") -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment,
                    "-f", str(key)], **NO_PROMPT)  # type: ignore[call-overload]
    return key


@pytest.fixture
def keys(release_keys: Path, tmp_path: Path) -> Path:
    """partner and stranger (conftest.py's), in a folder a test may add keys to."""
    folder = tmp_path / "keys"
    shutil.copytree(release_keys, folder)
    return folder


@pytest.fixture
def build(tmp_path: Path) -> Path:
    """A build folder as `deelit build` leaves it: artifacts, manifest, SHA256SUMS."""
    out = tmp_path / "out" / "pupil"
    out.mkdir(parents=True)
    (out / "pupil.img.zst").write_bytes(os.urandom(3000))
    (out / "pupil.bmap").write_text("<bmap/>\n")
    (out / "manifest.json").write_text("{}\n")
    (out / "boot-password.txt").write_text("not listed\n")  # root's note: in no list
    subprocess.run("sha256sum manifest.json pupil.bmap pupil.img.zst > SHA256SUMS", shell=True,
                   cwd=out, check=True)
    return out


def refused(exc: pytest.ExceptionInfo[DeelitError]) -> str:
    assert exc.value.exit_code == 2
    return str(exc.value)


def test_sign_then_check_with_the_public_key(build: Path, keys: Path) -> None:
    sig = rs.sign(build, keys / "partner")
    assert sig == build / "SHA256SUMS.sig"
    text = sig.read_text()
    assert text.startswith("-----BEGIN SSH SIGNATURE-----")
    assert str(keys) not in text and "PRIVATE" not in text
    assert sig.stat().st_mode & 0o777 == 0o644
    assert not list(build.glob("*.partial"))
    who = rs.check(build, keys / "partner.pub", require=["pupil.img.zst", "pupil.bmap"])
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(keys / "partner.pub")],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    assert "partner@ci" in who and fingerprint in who and "3 listed files" in who
    assert rs.signature_key(sig) == ("ssh-ed25519", fingerprint)


def test_allowed_signers_file_names_the_principal(build: Path, keys: Path, tmp_path: Path) -> None:
    rs.sign(build, keys / "partner")
    allowed = tmp_path / "allowed_signers"
    pub = " ".join((keys / "partner.pub").read_text().split()[:2])
    other = " ".join((keys / "stranger.pub").read_text().split()[:2])
    allowed.write_text(f"# the network's partners\nother@deel-it {other}\n"
                       f'it-partner@deel-it,ci@deel-it namespaces="{rs.NAMESPACE}" {pub}\n')
    assert rs.check(build, allowed).split(": signed by ")[1].startswith("it-partner@deel-it (")
    # and the same check by hand, as the README shows it
    subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "ci@deel-it",
                    "-n", rs.NAMESPACE, "-s", "SHA256SUMS.sig"], stdin=(build / "SHA256SUMS").open(),
                   cwd=build, check=True, capture_output=True)


def test_a_changed_byte_in_a_listed_file_is_named(build: Path, keys: Path) -> None:
    rs.sign(build, keys / "partner")
    image = build / "pupil.img.zst"
    data = bytearray(image.read_bytes())
    data[1234] ^= 1
    image.write_bytes(bytes(data))
    with pytest.raises(DeelitError) as exc:
        rs.check(build, keys / "partner.pub")
    assert f"{image} was changed or damaged" in refused(exc)


def test_a_missing_listed_file_is_named(build: Path, keys: Path) -> None:
    rs.sign(build, keys / "partner")
    (build / "pupil.bmap").unlink()
    with pytest.raises(DeelitError) as exc:
        rs.check(build, keys / "partner.pub")
    assert f"{build / 'pupil.bmap'} is missing" in refused(exc)


def test_a_changed_list_does_not_match_its_signature(build: Path, keys: Path) -> None:
    rs.sign(build, keys / "partner")
    image = build / "pupil.img.zst"
    image.write_bytes(b"another image")
    # the attacker also rewrites the list: the signature no longer matches it
    subprocess.run("sha256sum manifest.json pupil.bmap pupil.img.zst > SHA256SUMS", shell=True,
                   cwd=build, check=True)
    with pytest.raises(DeelitError) as exc:
        rs.check(build, keys / "partner.pub")
    assert f"{build / 'SHA256SUMS'}: does not match its signature" in refused(exc)


def test_a_key_not_among_the_signers_is_refused(build: Path, keys: Path, tmp_path: Path) -> None:
    rs.sign(build, keys / "stranger")
    with pytest.raises(DeelitError) as exc:
        rs.check(build, keys / "partner.pub")
    message = refused(exc)
    assert f"{build / 'SHA256SUMS.sig'}: signed by ssh-ed25519 key SHA256:" in message
    assert f"not among the signers in {keys / 'partner.pub'}" in message
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("partner@deel-it " + (keys / "partner.pub").read_text())
    with pytest.raises(DeelitError) as exc:
        rs.check(build, allowed)
    assert "not among the signers" in refused(exc)


def test_a_signature_for_another_namespace_is_refused(build: Path, keys: Path) -> None:
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(keys / "partner"), "-n", "file",
                    "SHA256SUMS"], cwd=build, **NO_PROMPT)  # type: ignore[call-overload]
    with pytest.raises(DeelitError) as exc:
        rs.check(build, keys / "partner.pub")
    assert "does not match its signature" in refused(exc)


def test_a_missing_signature_is_refused(build: Path, keys: Path) -> None:
    with pytest.raises(DeelitError) as exc:
        rs.check(build, keys / "partner.pub")
    assert f"{build / 'SHA256SUMS.sig'}: missing, so this build is not signed" in refused(exc)
    (build / "SHA256SUMS.sig").write_text("-----BEGIN SSH SIGNATURE-----\nAAAA\n")
    with pytest.raises(DeelitError) as exc:
        rs.check(build, keys / "partner.pub")
    assert "damaged, not an OpenSSH signature" in refused(exc)


def test_files_the_signature_does_not_cover_are_refused(build: Path, keys: Path) -> None:
    rs.sign(build, keys / "partner")
    (build / "other.img.zst").write_bytes(b"slipped in")
    with pytest.raises(DeelitError) as exc:
        rs.check(build, keys / "partner.pub", require=["other.img.zst"])
    assert f"{build / 'other.img.zst'}: not listed in" in refused(exc)


def test_signers_that_hold_no_key_are_refused(build: Path, keys: Path, tmp_path: Path) -> None:
    rs.sign(build, keys / "partner")
    empty = tmp_path / "signers"
    empty.write_text("# nobody yet\n")
    with pytest.raises(DeelitError) as exc:
        rs.check(build, empty)
    assert f"{empty}: holds no key" in refused(exc)
    with pytest.raises(DeelitError) as exc:
        rs.check(build, tmp_path / "absent.pub")
    assert f"{tmp_path / 'absent.pub'}: cannot read the trusted signers" in refused(exc)


def test_a_passphrase_key_fails_at_once_without_a_prompt(build: Path, keys: Path) -> None:
    key = keypair(keys, "locked", "partner@ci", passphrase="correct horse")
    started = time.monotonic()
    with pytest.raises(DeelitError) as exc:
        rs.sign(build, key)
    assert time.monotonic() - started < 20
    message = str(exc.value)
    assert "protected by a passphrase" in message and "ssh-agent" in message
    assert str(key) not in message  # the key's path stays out of every output
    assert not (build / "SHA256SUMS.sig").exists()


def test_the_cli_never_waits_on_a_passphrase_even_on_a_terminal(build: Path, keys: Path,
                                                                tmp_path: Path) -> None:
    """`deelit sign` run by a person at a terminal: ssh-keygen would ask on /dev/tty."""
    if shutil.which("script") is None:
        pytest.skip("needs util-linux script for a terminal")
    key = keypair(keys, "locked", "partner@ci", passphrase="correct horse")
    command = f"{sys.executable} -m provisioner.cli sign {build} --key {key}"
    log = tmp_path / "terminal.log"
    with log.open("w") as output, subprocess.Popen(
            ["script", "-qec", command, "/dev/null"], stdin=subprocess.PIPE, stdout=output,
            stderr=subprocess.STDOUT) as proc:
        try:  # stdin stays open and silent: a prompt would wait for ever
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("deelit sign waited on a prompt")
    assert proc.returncode == 1 and "protected by a passphrase" in log.read_text()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[dict[str, str]]:
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        yield {"SSH_AUTH_SOCK": str(sock)}
    finally:
        proc.terminate()
        proc.wait()


def test_a_passphrase_key_signs_through_ssh_agent(build: Path, keys: Path, tmp_path: Path,
                                                  agent: dict[str, str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    key = keypair(keys, "locked", "partner@ci", passphrase="correct horse")
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho 'correct horse'\n")
    askpass.chmod(0o700)
    subprocess.run(["ssh-add", str(key)], env={**os.environ, **agent, "SSH_ASKPASS": str(askpass),
                                               "SSH_ASKPASS_REQUIRE": "force"}, **NO_PROMPT)  # type: ignore[call-overload]
    monkeypatch.setenv("SSH_AUTH_SOCK", agent["SSH_AUTH_SOCK"])
    rs.sign(build, key.with_name("locked.pub"))
    assert "partner@ci" in rs.check(build, key.with_name("locked.pub"))


def test_a_public_key_needs_an_agent_that_holds_it(build: Path, keys: Path,
                                                  agent: dict[str, str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(DeelitError, match="SSH_AUTH_SOCK is not set"):
        rs.sign(build, keys / "partner.pub")
    monkeypatch.setenv("SSH_AUTH_SOCK", agent["SSH_AUTH_SOCK"])  # an agent holding no key
    with pytest.raises(DeelitError) as exc:
        rs.sign(build, keys / "partner.pub")
    assert "ssh-agent does not hold the private half" in str(exc.value)
    assert str(keys) not in str(exc.value)
    assert not (build / "SHA256SUMS.sig").exists()


def test_sign_refuses_a_folder_without_its_list(tmp_path: Path, keys: Path) -> None:
    with pytest.raises(DeelitError) as exc:
        rs.sign(tmp_path, keys / "partner")
    assert f"{tmp_path}: no SHA256SUMS in it" in str(exc.value)
    assert "deelit build" in str(exc.value)


def test_sign_refuses_a_folder_that_no_longer_matches_its_list(build: Path, keys: Path) -> None:
    (build / "manifest.json").write_text('{"changed": true}\n')
    with pytest.raises(DeelitError) as exc:
        rs.sign(build, keys / "partner")
    assert f"{build / 'manifest.json'} was changed or damaged" in str(exc.value)
    assert not (build / "SHA256SUMS.sig").exists()


def test_signing_again_replaces_the_signature(build: Path, keys: Path) -> None:
    rs.sign(build, keys / "stranger")
    rs.sign(build, keys / "partner")
    assert "partner@ci" in rs.check(build, keys / "partner.pub")
