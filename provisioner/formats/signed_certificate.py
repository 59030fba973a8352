"""A wipe certificate countersigned by the station that recorded it, checkable offline.

The agent's certificate (agent/certificate.py) reaches the station over the laptop's own
machine token, or from a stick's queue at `deelit registry import`: what binds it to the
machine is that channel, and the station's Ed25519 signature records it. The signed text is
the certificate's exact bytes (by their SHA-256) plus who countersigned, when and how, so one
changed byte in either fails `deelit certificate verify`. The envelope is plain JSON; the
PDF from `deelit registry certificate` carries it as an attached file.

The key is printed in OpenSSH's format (`ssh-ed25519 AAAA…`), its id is OpenSSH's SHA256
fingerprint: a point can compare both with what `ssh-keygen -l -f` shows.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, Field, ValidationError

from provisioner.errors import DeelitError

SCHEMA = "deelit-signed-wipe-certificate/1"
_DOMAIN = b"deelit-wipe-certificate-countersignature/1\0"  # never valid for another message
KEY_FILE = "station-key.pem"
ATTACHMENT_PREFIX = "deelit-wipe-certificate-"


class Countersignature(BaseModel):
    key_id: str  # SHA256:… as ssh-keygen -l prints it
    public_key: str  # ssh-ed25519 AAAA…
    point: str
    signed_at: str
    how: str  # received from the laptop over its machine token | imported from a stick's queue
    asset_tag: str
    certificate_sha256: str
    signature: str = ""  # base64 Ed25519 over _DOMAIN + the canonical JSON of the rest


class SignedCertificate(BaseModel):
    schema_: str = Field(default=SCHEMA, alias="schema")
    certificate: str  # the agent's certificate file, byte for byte (UTF-8 JSON text)
    countersignature: Countersignature

    model_config = {"populate_by_name": True}

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


# -- the station's key ---------------------------------------------------------------------

def public_line(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode()


def key_id(public_key: str) -> str:
    """OpenSSH's fingerprint of an `ssh-ed25519 AAAA…` line."""
    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (IndexError, ValueError) as exc:
        raise DeelitError(f"{public_key[:40]!r} is not an OpenSSH public key line") from exc
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def load_or_make_key(data_dir: Path) -> Ed25519PrivateKey:
    """The station's key: made on first use, readable by root only, never replaced."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # two processes starting at once: the first key wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        raise DeelitError(f"{path} is readable by others: `chmod 600 {path}` (the station's "
                          "signing key), then start again")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise DeelitError(f"{path} holds no Ed25519 key; move it away and a new one is made")
    return key


# -- signing and checking ------------------------------------------------------------------

def _message(c: Countersignature) -> bytes:
    body = c.model_dump(exclude={"signature"})
    return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def countersign(certificate_text: str, key: Ed25519PrivateKey, *, point: str, how: str,
                asset_tag: str, at: datetime | None = None) -> SignedCertificate:
    public = public_line(key.public_key())
    c = Countersignature(
        key_id=key_id(public), public_key=public, point=point, how=how, asset_tag=asset_tag,
        signed_at=(at or datetime.now(UTC)).isoformat(timespec="seconds"),
        certificate_sha256=hashlib.sha256(certificate_text.encode()).hexdigest())
    c.signature = base64.b64encode(key.sign(_message(c))).decode()
    return SignedCertificate(certificate=certificate_text, countersignature=c)


def check(signed: SignedCertificate, trusted: list[str] | None = None) -> Countersignature:
    """Raises DeelitError unless the certificate and its countersignature are intact (and,
    with `trusted`, made by one of those station keys)."""
    c = signed.countersignature
    if hashlib.sha256(signed.certificate.encode()).hexdigest() != c.certificate_sha256:
        raise DeelitError("the certificate's text was changed after the station signed it "
                          "(its SHA-256 is not the one signed)")
    if key_id(c.public_key) != c.key_id:
        raise DeelitError(f"key id {c.key_id} is not the fingerprint of the key beside it")
    try:
        blob = base64.b64decode(c.public_key.split()[1])
        public = serialization.load_ssh_public_key(b"ssh-ed25519 " + base64.b64encode(blob))
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError("not Ed25519")
        public.verify(base64.b64decode(c.signature, validate=True), _message(c))
    except (InvalidSignature, ValueError) as exc:
        raise DeelitError("the station's signature does not match: the certificate or its "
                          "countersignature was changed, or it was never signed") from exc
    if trusted is not None and c.key_id not in {key_id(k) for k in trusted}:
        raise DeelitError(f"signed by station key {c.key_id}, which is not among the trusted "
                          "keys given: ask the point for its station's public key")
    return c


def parse(data: bytes, source: str) -> list[SignedCertificate]:
    """The signed certificates in a JSON envelope or in a PDF's attached files."""
    texts = _pdf_attachments(data, source) if data.startswith(b"%PDF-") else [data]
    out = []
    for text in texts:
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
                raise DeelitError(f"{source}: not a signed wipe certificate (schema {SCHEMA})")
            out.append(SignedCertificate.model_validate(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DeelitError(f"{source}: neither a PDF nor JSON ({exc})") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise DeelitError(f"{source}: key {where}: {first['msg']}") from exc
    return out


def _pdf_attachments(data: bytes, source: str) -> list[bytes]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        attached = PdfReader(io.BytesIO(data)).attachments
    except (PdfReadError, ValueError) as exc:
        raise DeelitError(f"{source}: unreadable PDF ({exc})") from exc
    texts = [blob for name, blobs in sorted(attached.items())
             if name.startswith(ATTACHMENT_PREFIX) for blob in blobs]
    if not texts:
        raise DeelitError(f"{source}: this PDF carries no signed certificate (made by hand, or "
                          "before certificates were signed)")
    return texts


def attach(pdf: bytes, signed: list[SignedCertificate]) -> bytes:
    """The PDF with each signed certificate as an attached JSON file."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    for n, s in enumerate(signed, 1):
        writer.add_attachment(f"{ATTACHMENT_PREFIX}{n}.json",
                              json.dumps(s.dump(), indent=2).encode())
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
