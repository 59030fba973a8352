"""`deelit sign OUT_DIR --key KEY`: the IT partner signs a build folder's SHA256SUMS with an
OpenSSH key (formats/release_signature.py), so a point can tell their build from a copy that
was changed on the way (`deelit serve` and `deelit flash` with --signers / DEELIT_SIGNERS)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from provisioner.formats import release_signature as rs


def register(app: typer.Typer) -> None:
    """Adds `deelit sign` to the main app."""
    app.command("sign")(sign)


def sign(
    out_dir: Annotated[Path, typer.Argument(
        help="build folder (manifest.json, SHA256SUMS and the artifacts), e.g. out/pupil")],
    key: Annotated[Path, typer.Option(
        "--key", help="OpenSSH private key (ssh-keygen -t ed25519), or its .pub when the key "
        "is in ssh-agent")],
) -> None:
    """Sign the build folder's SHA256SUMS (after checking every listed file): SHA256SUMS.sig.

    Points check it with your public key: deelit serve/flash --signers KEY.pub (or
    DEELIT_SIGNERS), or by hand with ssh-keygen -Y verify -n deelit-release."""
    from rich.console import Console

    sig = rs.sign(out_dir, key)
    key_type, fingerprint = rs.signature_key(sig)
    Console(stderr=True, soft_wrap=True).print(
        f"signed {out_dir / rs.SUMS}: {sig} ({key_type} key {fingerprint}). Points accept it "
        f"with your public key: --signers FILE or {rs.SIGNERS_ENV}=FILE", highlight=False)
