"""The station's countersignature over a wipe certificate: made, checked, and refused when
one byte of the certificate or of the signature's own fields changed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from reportlab.pdfgen.canvas import Canvas

from provisioner.errors import DeelitError
from provisioner.formats import signed_certificate as sc

CERT = json.dumps({"schema": "deelit-wipe-certificate/1", "result": "passed",
                   "media": {"serial": "S4DXNX0M", "size_bytes": 256060514304}}, indent=2) + "\n"


def _signed(tmp_path: Path) -> sc.SignedCertificate:
    key = sc.load_or_make_key(tmp_path / "station")
    return sc.countersign(CERT, key, point="MEC", how="test", asset_tag="DEELIT-MEC-000001")


def test_key_is_made_once_root_only_and_its_id_is_opensshs(tmp_path: Path) -> None:
    key = sc.load_or_make_key(tmp_path)
    path = tmp_path / sc.KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    again = sc.load_or_make_key(tmp_path)
    line = sc.public_line(key.public_key())
    assert sc.public_line(again.public_key()) == line  # never replaced
    (tmp_path / "k.pub").write_text(line + "\n")
    shown = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")],
                           capture_output=True, text=True, check=True).stdout
    assert shown.split()[1] == sc.key_id(line)
    os.chmod(path, 0o644)
    with pytest.raises(DeelitError, match="readable by others"):
        sc.load_or_make_key(tmp_path)


def test_intact_certificate_checks(tmp_path: Path) -> None:
    signed = _signed(tmp_path)
    c = sc.check(signed, trusted=[signed.countersignature.public_key])
    assert (c.asset_tag, c.point, c.how) == ("DEELIT-MEC-000001", "MEC", "test")
    # the envelope survives JSON and back (what the registry stores)
    assert sc.check(sc.parse(json.dumps(signed.dump()).encode(), "x.json")[0]) == c


@pytest.mark.parametrize("change", ["certificate", "signed_at", "asset_tag", "how", "signature"])
def test_a_changed_byte_fails(tmp_path: Path, change: str) -> None:
    raw = _signed(tmp_path).dump()
    if change == "certificate":
        raw["certificate"] = raw["certificate"].replace("256060514304", "256060514305")
    elif change == "signature":
        sig = bytearray(raw["countersignature"]["signature"].encode())
        sig[5] = ord("A") if sig[5] != ord("A") else ord("B")
        raw["countersignature"]["signature"] = sig.decode()
    else:
        raw["countersignature"][change] += "1"
    with pytest.raises(DeelitError, match="changed"):
        sc.check(sc.SignedCertificate.model_validate(raw))


def test_a_key_not_trusted_is_refused(tmp_path: Path) -> None:
    signed = _signed(tmp_path)
    other = sc.public_line(sc.load_or_make_key(tmp_path / "other").public_key())
    with pytest.raises(DeelitError, match="not among the trusted"):
        sc.check(signed, trusted=[other])


def test_a_key_swapped_for_the_signers_own_is_refused(tmp_path: Path) -> None:
    """Someone who re-signs with their own key must also put their key in: the id then is
    theirs, and --trust refuses it; a key id left pointing at the station fails outright."""
    raw = _signed(tmp_path).dump()
    raw["countersignature"]["public_key"] = sc.public_line(
        sc.load_or_make_key(tmp_path / "other").public_key())
    with pytest.raises(DeelitError, match="not the fingerprint"):
        sc.check(sc.SignedCertificate.model_validate(raw))


def test_the_pdf_carries_it_and_gives_it_back(tmp_path: Path) -> None:
    pdf = tmp_path / "c.pdf"
    canvas = Canvas(str(pdf))
    canvas.drawString(100, 700, "Certificate of Sanitization")
    canvas.save()
    signed = _signed(tmp_path)
    with_cert = sc.attach(pdf.read_bytes(), [signed])
    [back] = sc.parse(with_cert, "c.pdf")
    assert sc.check(back) == signed.countersignature
    with pytest.raises(DeelitError, match="carries no signed certificate"):
        sc.parse(pdf.read_bytes(), "c.pdf")
    with pytest.raises(DeelitError, match="neither a PDF nor JSON"):
        sc.parse(b"\x00\x01garbage", "g.bin")
    with pytest.raises(DeelitError, match="not a signed wipe certificate"):
        sc.parse(json.dumps({"schema": "other"}).encode(), "o.json")
