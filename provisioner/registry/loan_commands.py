"""`deelit registry export|sync|label|certificate`: what leaves the registry for the loan
systems (Lend Engine, Snipe-IT, CSV/JSON, ORDS) and the PDFs (QR labels, wipe certificates)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from provisioner.errors import DeelitError
from provisioner.registry.cli_common import DataOpt, DbOpt, day, out
from provisioner.registry.cli_common import store as _store

if TYPE_CHECKING:
    from provisioner.registry.schemas import DeviceOut


def register(registry_app: typer.Typer) -> None:
    """Adds export, sync, label and certificate to `deelit registry`."""
    for command in (export, sync, label, certificate):
        registry_app.command()(command)


def _write(text: str | bytes, output: Path | None) -> None:
    if output is None:
        if isinstance(text, bytes):
            raise DeelitError("PDF output needs --output FILE")
        print(text, end="")
        return
    try:
        output.write_bytes(text if isinstance(text, bytes) else text.encode())
    except OSError as exc:
        raise DeelitError(f"{output}: cannot write: {exc.strerror}") from exc
    out.print(f"wrote {output}", highlight=False)


def _conditions(items: list[str] | None) -> dict[str, str]:
    mapping = {}
    for item in items or []:
        grade, sep, name = item.partition("=")
        if not sep or not grade or not name:
            raise DeelitError(f"--condition {item!r}: write GRADE=NAME, e.g. A='Like new'")
        mapping[grade] = name
    return mapping


Status = Annotated[str | None, typer.Option(help="only devices with this status "
                                            "(lendengine: default 'ready')")]
Point = Annotated[str | None, typer.Option(help="only this point")]
Batch = Annotated[str | None, typer.Option(help="registration day YYYY-MM-DD or 'today'")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="file (default: stdout)")]


def export(
    fmt: Annotated[str, typer.Option("--format", "-f",
                                     help="lendengine | csv | json | ords | snipeit")],
    status: Status = None,
    point: Point = None,
    batch: Batch = None,
    output: Output = None,
    condition: Annotated[list[str] | None, typer.Option(
        help="Lend Engine condition per grade, GRADE=NAME (repeatable)")] = None,
    category: Annotated[str, typer.Option(help="Lend Engine category")] = "Laptop",
    loan_period: Annotated[int | None, typer.Option(help="Lend Engine loan period (days)")]
    = None,
    url: Annotated[str | None, typer.Option(help="Snipe-IT base URL")] = None,
    token_file: Annotated[Path | None, typer.Option(help="file holding the Snipe-IT API key "
                                                    "(or $SNIPEIT_TOKEN)")] = None,
    model_id: Annotated[int | None, typer.Option(help="Snipe-IT model id")] = None,
    status_id: Annotated[int | None, typer.Option(help="Snipe-IT status label id")] = None,
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Export devices for a loan system (Lend Engine TSV, Snipe-IT REST) or as CSV/JSON/ORDS."""
    from provisioner.registry import export as ex

    store = _store(data, db)
    if fmt == "ords":
        _write(ex.ords_csv(store.events(types={"repaired", "retired"})), output)
        return
    if fmt == "lendengine" and status is None:
        status = "ready"
    devices = store.list_devices(status=status, point=point, batch=day(batch), limit=10**6)
    if fmt == "lendengine":
        opts = ex.LendEngineOptions(category=category, conditions=_conditions(condition),
                                    loan_period=loan_period)
        _write(ex.lendengine_tsv(devices, opts), output)
    elif fmt == "csv":
        _write(ex.devices_csv(devices), output)
    elif fmt == "json":
        _write(ex.devices_json(devices), output)
    elif fmt == "snipeit":
        _snipeit(devices, url, token_file, model_id, status_id)
    else:
        raise DeelitError(f"--format {fmt!r}: use lendengine, csv, json, ords or snipeit")


def _snipeit(devices: Sequence[DeviceOut], url: str | None, token_file: Path | None,
             model_id: int | None, status_id: int | None) -> None:
    from provisioner.registry.export import sync_snipeit

    if not url or model_id is None or status_id is None:
        raise DeelitError("Snipe-IT needs --url, --model-id and --status-id (ids of a model and "
                          "a status label that exist in Snipe-IT)")
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise DeelitError(f"--token-file {token_file}: {exc.strerror}") from exc
    else:
        token = os.environ.get("SNIPEIT_TOKEN", "")
    if not token:
        raise DeelitError("no Snipe-IT API key: pass --token-file FILE or set SNIPEIT_TOKEN")
    report = sync_snipeit(devices, url=url, token=token, model_id=model_id, status_id=status_id)
    out.print(f"Snipe-IT: {len(report.created)} created, {len(report.present)} already there")
    for tag, why in report.failed:
        out.print(f"[red]refused[/] {tag}: {why}", highlight=False)
    if report.failed:
        raise DeelitError(f"Snipe-IT refused {len(report.failed)} asset(s); see above")


def sync(
    target: Annotated[str, typer.Argument(help="snipeit")],
    status: Status = None,
    point: Point = None,
    url: Annotated[str | None, typer.Option(help="Snipe-IT base URL")] = None,
    token_file: Annotated[Path | None, typer.Option(help="file holding the API key")] = None,
    model_id: Annotated[int | None, typer.Option(help="Snipe-IT model id")] = None,
    status_id: Annotated[int | None, typer.Option(help="Snipe-IT status label id")] = None,
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Create in Snipe-IT the devices it does not have yet (same as export --format snipeit)."""
    if target != "snipeit":
        raise DeelitError(f"sync {target!r}: only 'snipeit' is supported")
    devices = _store(data, db).list_devices(status=status, point=point, limit=10**6)
    _snipeit(devices, url, token_file, model_id, status_id)


def label(
    asset_tags: Annotated[list[str] | None, typer.Argument(help="asset tags (default: the "
                                                            "filters below)")] = None,
    layout: Annotated[str, typer.Option(help="a4 (3x8 sheet) or roll62 (62 mm printer)")]
    = "a4",
    status: Status = None,
    point: Point = None,
    batch: Batch = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="PDF file")] = Path("labels.pdf"),
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Print QR asset labels to a PDF."""
    from provisioner.registry.labels import SHEETS, labels_pdf

    if layout not in SHEETS:
        raise DeelitError(f"--layout {layout!r}: use {' or '.join(SHEETS)}")
    store = _store(data, db)
    devices: Sequence[DeviceOut]
    if asset_tags:
        devices = [store.get_device(tag) for tag in asset_tags]
    else:
        devices = store.list_devices(status=status, point=point, batch=day(batch), limit=10**6)
    if not devices:
        raise DeelitError("no devices match; nothing to label")
    _write(labels_pdf(devices, layout), output)  # type: ignore[arg-type]


def certificate(
    asset_tag: str,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="PDF file")] = None,
    organisation: Annotated[str, typer.Option(help="organisation on the certificate")]
    = "DEEL IT",
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Write the wipe certificate(s) of a device as PDF."""
    from provisioner.registry.labels import certificate_pdf

    pdf = certificate_pdf(_store(data, db).get_device(asset_tag), organisation)
    _write(pdf, output or Path(f"{asset_tag}-wipe-certificate.pdf"))
