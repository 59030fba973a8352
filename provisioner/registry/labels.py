"""PDFs: QR asset labels (A4 sheet or 62 mm roll) and wipe certificates.

No personal data: a label carries asset tag, serial, model, grade and point; a certificate
names the technician by id only (NIST SP 800-88 Appendix G asks for a person; the id links
to one in the point's own records, not here).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import qrcode
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from provisioner.errors import DeelitError
from provisioner.formats.signed_certificate import SignedCertificate, attach
from provisioner.registry.schemas import DeviceOut, DeviceWithEvents, EventOut

Layout = Literal["a4", "roll62"]


@dataclass(frozen=True)
class Sheet:
    page: tuple[float, float]
    cols: int
    rows: int
    label: tuple[float, float]
    origin: tuple[float, float]  # lower-left corner of the bottom-left label
    gap: tuple[float, float]


# A4: 3 x 8 labels of 70 x 37 mm, no margins (the common 24-up sheet).
# roll62: Brother DK-22205 continuous 62 mm tape, one 62 x 29 mm label per page.
SHEETS: dict[str, Sheet] = {
    "a4": Sheet(A4, 3, 8, (70 * mm, 37 * mm), (0.0, (297 - 8 * 37) / 2 * mm), (0.0, 0.0)),
    "roll62": Sheet((62 * mm, 29 * mm), 1, 1, (62 * mm, 29 * mm), (0.0, 0.0), (0.0, 0.0)),
}


def qr_payload(d: DeviceOut) -> str:
    """What the QR encodes: the asset tag alone, which any phone scanner shows as text."""
    return d.asset_tag


def _qr(canvas: Canvas, text: str, x: float, y: float, size: float) -> None:
    # Drawn as vector squares (sharp on any printer, small PDF) from qrcode's matrix.
    matrix = qr_matrix(text)
    module = size / len(matrix)
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            if dark:
                canvas.rect(x + c * module, y + size - (r + 1) * module, module, module,
                            stroke=0, fill=1)


def _label(canvas: Canvas, d: DeviceOut, x: float, y: float, w: float, h: float) -> None:
    pad = 2 * mm
    qr = h - 2 * pad
    _qr(canvas, qr_payload(d), x + pad, y + pad, qr)
    tx = x + qr + 2 * pad
    canvas.setFont("Helvetica-Bold", 9)
    canvas.drawString(tx, y + h - pad - 9, d.asset_tag)
    canvas.setFont("Helvetica", 7)
    lines = [
        " ".join(p for p in (d.maker, d.model) if p)[:34],
        f"S/N {d.serial}" if d.serial and not d.serial_placeholder else "S/N -",
        f"grade {d.grade or '-'}   point {d.point}",
    ]
    for i, line in enumerate(lines):
        canvas.drawString(tx, y + h - pad - 20 - i * 9, line)


def labels_pdf(devices: Sequence[DeviceOut], layout: Layout = "a4") -> bytes:
    sheet = SHEETS[layout]
    buf = io.BytesIO()
    canvas = Canvas(buf, pagesize=sheet.page, pageCompression=0, invariant=1)
    canvas.setTitle("deelit asset labels")
    per_page = sheet.cols * sheet.rows
    for i, d in enumerate(devices):
        if i and i % per_page == 0:
            canvas.showPage()
        slot = i % per_page
        col, row = slot % sheet.cols, sheet.rows - 1 - slot // sheet.cols
        x = sheet.origin[0] + col * (sheet.label[0] + sheet.gap[0])
        y = sheet.origin[1] + row * (sheet.label[1] + sheet.gap[1])
        _label(canvas, d, x, y, *sheet.label)
    canvas.showPage()
    canvas.save()
    return buf.getvalue()


def qr_matrix(text: str) -> list[list[bool]]:
    """Dark modules of the QR code of `text`; error correction M survives a scuffed label."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=0)
    code.add_data(text)
    code.make(fit=True)
    return [list(map(bool, row)) for row in code.get_matrix()]


def certificate_pdf(device: DeviceWithEvents, organisation: str = "DEEL IT") -> bytes:
    """A NIST SP 800-88 Appendix G style certificate for each `wiped` event of the device;
    each certificate the station countersigned is attached whole, for `deelit certificate
    verify`."""
    wipes = [e for e in device.events if e.type == "wiped"]
    if not wipes:
        raise DeelitError(f"{device.asset_tag} has no 'wiped' event; nothing to certify")
    buf = io.BytesIO()
    canvas = Canvas(buf, pagesize=A4, pageCompression=0, invariant=1)
    canvas.setTitle(f"wipe certificate {device.asset_tag}")
    signed = []
    for e in wipes:
        envelope = e.details.get("signed_certificate")
        if isinstance(envelope, dict):
            signed.append(SignedCertificate.model_validate(envelope))
            rows = _signed_rows(device, signed[-1])
        else:
            rows = _recorded_rows(device, e, organisation)
        y = A4[1] - 25 * mm
        canvas.setFont("Helvetica-Bold", 16)
        canvas.drawString(20 * mm, y, "Certificate of Sanitization (NIST SP 800-88)")
        for label, value in rows:
            y -= 8 * mm
            canvas.setFont("Helvetica-Bold", 10)
            canvas.drawString(20 * mm, y, label)
            canvas.setFont("Helvetica", 10)
            canvas.drawString(65 * mm, y, value[:90])
        canvas.showPage()
    canvas.save()
    return attach(buf.getvalue(), signed) if signed else buf.getvalue()


def _recorded_rows(device: DeviceWithEvents, e: EventOut, organisation: str
                   ) -> list[tuple[str, str]]:
    """A wipe recorded without its certificate (by hand, or before certificates travelled)."""
    return [
        ("Organisation", organisation),
        ("Asset tag", device.asset_tag),
        ("Computer", " ".join(p for p in (device.maker, device.model) if p) or "-"),
        ("Computer serial", device.serial or "-"),
        ("Media", _media(e.details)),
        ("Method", str(e.details.get("method", "-"))),
        ("Tool", str(e.details.get("tool", "-"))),
        ("Verification", str(e.details.get("verification", "-"))),
        ("Certificate SHA-256", str(e.details.get("certificate_sha256", "-"))),
        ("Date", e.at.isoformat(timespec="seconds")),
        ("Station", e.station),
        ("Technician id", e.technician or "-"),
        ("Destination", str(e.details.get("destination", "reuse (DEEL IT loan)"))),
        ("Signature", "none: recorded without its certificate"),
    ]


def _signed_rows(device: DeviceWithEvents, signed: SignedCertificate) -> list[tuple[str, str]]:
    """What the agent's own certificate says, and who countersigned it."""
    cert = json.loads(signed.certificate)
    media, san = cert.get("media", {}), cert.get("sanitization", {})
    ver, c = cert.get("verification", {}), signed.countersignature

    def join(*parts: object, sep: str = " ") -> str:
        return sep.join(str(p) for p in parts if p not in (None, "")) or "-"

    real = media.get("size_real_bytes") or media.get("size_bytes")
    apparent = media.get("size_apparent_bytes") or media.get("size_bytes")
    hidden = cert.get("hidden_area") or {}
    seconds, rate = cert.get("duration_s"), cert.get("throughput_bytes_per_s")
    return [
        ("Organisation", str(cert.get("organisation", "-"))),
        ("Asset tag", device.asset_tag),
        ("Computer", join(device.maker, device.model, device.serial)),
        ("Media", join(media.get("maker"), media.get("model"), media.get("serial"),
                       media.get("media_type") or media.get("type"))),
        ("Size", join(f"{real / 1e9:.1f} GB real" if real else None,
                      f"{apparent / 1e9:.1f} GB apparent" if apparent else None, sep=", ")),
        ("Hidden areas", join(hidden.get("status"), hidden.get("detail"), sep=": ") if hidden
         else "; ".join(map(str, cert.get("hidden_areas", []))) or "-"),
        ("Method", join(san.get("nist_category"), san.get("method"))),
        ("Technique", str(san.get("technique", "-"))),
        ("Tool", join(san.get("tool"), san.get("tool_version"))),
        ("Verification", join(ver.get("scope"), "passed" if ver.get("passed") else "FAILED",
                              f"({ver.get('mismatches', '?')} mismatches)")),
        ("Result", str(cert.get("result", "-"))),
        ("Errors", "; ".join(map(str, cert.get("errors", []))) or "none"),
        ("Started", str(cert.get("started_at", "-"))),
        ("Finished", str(cert.get("finished_at", "-"))),
        ("Duration", join(f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else None,
                          f"{rate / 1e6:.0f} MB/s" if isinstance(rate, (int, float)) else None,
                          sep=", ")),
        ("Technician id", str(cert.get("technician_id", "-"))),
        ("Certificate id", str(cert.get("certificate_id", "-"))),
        ("Certificate SHA-256", c.certificate_sha256),
        ("Countersigned", f"{c.signed_at}, station of point {c.point}"),
        ("Station key", c.key_id),
        ("Check it", "deelit certificate verify THIS.pdf (the certificate is attached)"),
    ]


def _media(details: dict[str, object]) -> str:
    disk = details.get("disk")
    if isinstance(disk, dict):
        return " ".join(str(disk.get(k, "")) for k in ("maker", "model", "serial", "kind")).strip()
    return str(details.get("media", "-"))
