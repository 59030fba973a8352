"""`deelit certificate verify|station-key`: check a wipe certificate offline, and show the
key this station countersigns certificates with (formats/signed_certificate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from provisioner.errors import DeelitError
from provisioner.registry.cli_common import DataOpt, out, settings

certificate_app = typer.Typer(no_args_is_help=True,
                              help="Check wipe certificates; show the station's signing key.")


def register(app: typer.Typer) -> None:
    """Adds `deelit certificate` to the main app."""
    app.add_typer(certificate_app, name="certificate")


def _trusted(paths: list[Path]) -> list[str]:
    """Public key lines from files (a `station-key` export, or OpenSSH allowed keys)."""
    keys = []
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise DeelitError(f"--trust {path}: {exc.strerror}", exit_code=2) from exc
        found = [line.strip() for line in lines if line.strip().startswith("ssh-ed25519 ")]
        if not found:
            raise DeelitError(f"--trust {path}: no `ssh-ed25519 …` line; give the file that "
                              "`deelit certificate station-key` wrote at the point", exit_code=2)
        keys += found
    return keys


@certificate_app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="certificate: its PDF, or the signed JSON")],
    trust: Annotated[list[Path] | None, typer.Option(
        "--trust", help="only accept these station keys (files with `ssh-ed25519 …` lines); "
                        "repeatable")] = None,
) -> None:
    """Check the station's signature over a wipe certificate, offline. Exit 0: intact;
    1: changed, unsigned or signed by a key not trusted; 2: not a certificate file."""
    from provisioner.formats import signed_certificate as sc

    try:
        data = file.read_bytes()
    except OSError as exc:
        raise DeelitError(f"{file}: {exc.strerror}", exit_code=2) from exc
    try:
        found = sc.parse(data, str(file))
    except DeelitError as exc:
        raise DeelitError(str(exc), exit_code=2) from exc
    trusted = _trusted(trust) if trust else None
    for signed in found:
        try:
            c = sc.check(signed, trusted)
        except DeelitError as exc:
            raise DeelitError(f"{file}: {exc}", exit_code=1) from exc
        out.print(f"{file}: intact. Asset {c.asset_tag}, certificate sha256 "
                  f"{c.certificate_sha256[:16]}…, countersigned {c.signed_at} by station key "
                  f"{c.key_id} (point {c.point}), {c.how}.", highlight=False, soft_wrap=True)
    if trusted is None:
        out.print("No --trust given: compare the key id with the point's station key "
                  "(`deelit certificate station-key` there).", highlight=False)


@certificate_app.command("station-key")
def station_key(
    data: DataOpt = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="also write the public key to this file (for --trust)")] = None,
) -> None:
    """Print the public key this station countersigns wipe certificates with (made on first
    use, in the data folder, readable by root only)."""
    from provisioner.formats import signed_certificate as sc

    key = sc.load_or_make_key(settings(data, None).data_dir)
    line = sc.public_line(key.public_key())
    if output is not None:
        output.write_text(line + " deelit-station\n")
    out.print(f"{line} deelit-station\n{sc.key_id(line)}", highlight=False, soft_wrap=True)
