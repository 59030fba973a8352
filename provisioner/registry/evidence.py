"""Wipe certificates kept whole: a `wiped` event that brings its certificate's text is
countersigned by this station (formats/signed_certificate.py) and stored with the event."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioner.formats import signed_certificate
from provisioner.registry.access import TokenScope
from provisioner.registry.errors import Invalid
from provisioner.registry.tokens import Caller


def keep_certificate(details: dict[str, Any], *, asset_tag: str, caller: Caller,
                     key: Callable[[], Ed25519PrivateKey], point: str) -> dict[str, Any]:
    """The event's details with `certificate` (the file's text) replaced by the signed
    envelope; `result` taken from the certificate when the event does not say it."""
    text = details.pop("certificate", None)
    if text is None:
        return details  # recorded by hand: no certificate to keep
    if not isinstance(text, str):
        raise Invalid("details.certificate must be the certificate file's text")
    try:
        cert = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid(f"details.certificate is not JSON: {exc.msg}") from exc
    digest = hashlib.sha256(text.encode()).hexdigest()
    if details.setdefault("certificate_sha256", digest) != digest:
        raise Invalid("details.certificate_sha256 is not the SHA-256 of details.certificate")
    if isinstance(cert, dict):
        details.setdefault("result", cert.get("result", "passed"))
    how = _how(caller)
    signed = signed_certificate.countersign(text, key(), point=point, how=how,
                                            asset_tag=asset_tag)
    details["signed_certificate"] = signed.dump()
    return details


def _how(caller: Caller) -> str:
    if caller.channel:
        return caller.channel
    if caller.scope is TokenScope.machine:
        return f"received from the laptop over its own machine token ({caller.machine})"
    if caller.scope is TokenScope.station:
        return f"recorded with station {caller.station}'s own token"
    return f"received from a laptop over station {caller.station}'s {caller.scope} token"
