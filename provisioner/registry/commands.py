"""`deelit registry ...`: serve, tokens, devices, events, builds, import, exports, labels."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from provisioner.errors import DeelitError
from provisioner.registry.access import TokenScope

if TYPE_CHECKING:  # the heavy imports wait until a registry command runs
    from provisioner.registry.schemas import DeviceOut
    from provisioner.registry.settings import Settings
    from provisioner.registry.store import Store

registry_app = typer.Typer(help="Device registry: serve the API, tokens, exports, labels.",
                           no_args_is_help=True)
token_app = typer.Typer(help="Per-station bearer tokens (scope station or agent, optional expiry).",
                        no_args_is_help=True)
registry_app.add_typer(token_app, name="token")
out = Console()

DataOpt = Annotated[Path | None, typer.Option("--data", help="data folder (default: "
                                              "$DEELIT_DATA or ~/.local/share/deelit)")]
DbOpt = Annotated[str | None, typer.Option("--db", help="database URL, e.g. "
                                           "postgresql://user@host/deelit (default: SQLite "
                                           "in the data folder)", envvar="DEELIT_DB")]


def register(app: typer.Typer) -> None:
    """Adds `deelit registry` to the main app."""
    app.add_typer(registry_app, name="registry")


def _settings(data: Path | None, db: str | None, **extra: object) -> Settings:
    from provisioner.registry.settings import Settings

    values: dict[str, object] = {k: v for k, v in extra.items() if v is not None}
    if data is not None:
        values["data_dir"] = data
    if db is not None:
        values["db_url"] = db
    if fmt := os.environ.get("DEELIT_ASSET_TAG_FORMAT"):
        values.setdefault("asset_tag_format", fmt)
    if point := os.environ.get("DEELIT_POINT"):
        values.setdefault("default_point", point)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise DeelitError(f"registry setting {first['loc'][0]}: {first['msg']}") from exc


def _store(data: Path | None, db: str | None) -> Store:
    from provisioner.registry.store import Store

    return Store(_settings(data, db))


@registry_app.command()
def serve(
    data: DataOpt = None,
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8470,
    point: Annotated[str | None, typer.Option(help="point code for new asset tags, "
                                              "e.g. MEC", envvar="DEELIT_POINT")] = None,
    tag_format: Annotated[str | None, typer.Option(help="asset tag format, default "
                                                   "DEELIT-{point}-{number:06d}",
                                                   envvar="DEELIT_ASSET_TAG_FORMAT")] = None,
) -> None:
    """Run the HTTP API and the station page (uvicorn)."""
    import uvicorn

    from provisioner.registry.api import create_app

    settings = _settings(data, db, default_point=point, asset_tag_format=tag_format)
    app = create_app(settings)
    out.print(f"registry on http://{host}:{port}/  (database: {settings.url.split('@')[-1]})")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@token_app.command("create")
def token_create(
    station: Annotated[str, typer.Argument(help="station name, e.g. mechelen-pc1")],
    point: Annotated[str | None, typer.Option(help="point code its devices get")] = None,
    note: Annotated[str | None, typer.Option(help="free note (no personal data)")] = None,
    scope: Annotated[TokenScope, typer.Option(
        help="station: everything (the default); agent: only register devices and post intake "
             "events, for tokens that leave the station (boot scripts, sticks)")]
    = TokenScope.station,
    expires_in: Annotated[str | None, typer.Option(
        "--expires-in", help="lifetime, e.g. 24h, 7d, 2w (default: until revoked)")] = None,
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Create a token for STATION; the token alone is printed on the last line."""
    from provisioner.registry.access import parse_duration

    _check_name(station)
    lifetime = parse_duration(expires_in) if expires_in is not None else None
    token = _store(data, db).create_token(station, point=point, note=note, scope=scope,
                                          expires_in=lifetime)
    until = f", valid for {lifetime}" if lifetime else ""
    out.print(f"{scope} token for station {station}{until} (shown once; store it on the "
              "station):", highlight=False)
    print(token)


def _check_name(station: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", station):
        raise DeelitError(f"station name {station!r}: use 1-64 letters, digits, '.', '_' or '-'")


@token_app.command("list")
def token_list(data: DataOpt = None, db: DbOpt = None) -> None:
    """List tokens (prefix only; tokens themselves are not stored). Times in UTC."""
    now = dt.datetime.now(dt.UTC)
    table = Table("station", "scope", "point", "prefix", "created", "expires", "revoked", "note")
    for t in _store(data, db).list_tokens():
        expires = ""
        if t.expires_at is not None:
            expires = f"{t.expires_at:%Y-%m-%d %H:%M}" + (" expired" if t.expires_at <= now
                                                          else "")
        table.add_row(t.station, t.scope.value, t.point or "", t.prefix,
                      f"{t.created_at:%Y-%m-%d %H:%M}", expires,
                      f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "", t.note or "")
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    station: str,
    prefix: Annotated[str | None, typer.Option(help="revoke only the token with this prefix")]
    = None,
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Revoke STATION's tokens (all live ones, or one by --prefix)."""
    n = _store(data, db).revoke_tokens(station, prefix=prefix)
    if n == 0:
        raise DeelitError(f"station {station!r} has no live token"
                          + (f" starting with {prefix!r}" if prefix else "")
                          + "; see `deelit registry token list`")
    out.print(f"revoked {n} token(s) of {station}")


@registry_app.command("list")
def list_devices(
    status: Annotated[str | None, typer.Option(help="only this status")] = None,
    point: Annotated[str | None, typer.Option(help="only this point")] = None,
    batch: Annotated[str | None, typer.Option(help="registration day YYYY-MM-DD or 'today'")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """List devices."""
    devices = _store(data, db).list_devices(status=status, point=point, batch=_day(batch),
                                            limit=10**6)
    if as_json:
        print(json.dumps([d.model_dump(mode="json") for d in devices], indent=1))
        return
    table = Table("asset tag", "status", "grade", "maker", "model", "serial", "identity")
    for d in devices:
        table.add_row(d.asset_tag, d.status, d.grade or "", d.maker or "", d.model or "",
                      d.serial if not d.serial_placeholder else f"({d.serial or 'none'})",
                      d.identity_source)
    out.print(table)


def _day(text: str | None) -> dt.date | None:
    if text is None:
        return None
    if text == "today":
        return dt.date.today()
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise DeelitError(f"--batch {text!r}: give a date as YYYY-MM-DD or 'today'") from exc


@registry_app.command()
def show(asset_tag: str, data: DataOpt = None, db: DbOpt = None) -> None:
    """Show one device with its events, as JSON."""
    print(_store(data, db).get_device(asset_tag).model_dump_json(indent=1))


@registry_app.command()
def events(
    asset_tag: str,
    add: Annotated[str | None, typer.Option(help="append an event of this type")] = None,
    technician: Annotated[str | None, typer.Option(help="technician id (not a name)")] = None,
    detail: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable")] = None,
    station: Annotated[str, typer.Option(help="station recorded with the event")] = "cli",
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Print a device's events, or append one with --add TYPE."""
    from provisioner.registry.schemas import EventIn
    from provisioner.registry.store import Caller

    store = _store(data, db)
    if add:
        details = {}
        for item in detail or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise DeelitError(f"--detail {item!r}: write KEY=VALUE")
            details[key] = value
        try:
            body = EventIn(type=add, technician=technician, details=details)  # type: ignore[arg-type]
        except ValidationError as exc:
            first = exc.errors()[0]
            raise DeelitError(f"event {first['loc'][0]}: {first['msg']}") from exc
        event, _ = store.add_event(asset_tag, body, Caller(station))
        out.print(f"{asset_tag}: {event.type} recorded")
        return
    table = Table("when", "event", "station", "technician", "details")
    for e in store.get_device(asset_tag).events:
        table.add_row(f"{e.at:%Y-%m-%d %H:%M}", e.type, e.station, e.technician or "",
                      json.dumps(e.details, sort_keys=True))
    out.print(table)


@registry_app.command("import")
def import_cmd(
    queue: Annotated[Path, typer.Argument(help="queue folder (or one JSON file) from the stick")],
    station: Annotated[str, typer.Option(help="station recorded with the events")] = "usb-queue",
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Import records queued offline; malformed files are reported and left in place."""
    from provisioner.registry.queue import import_queue

    report = import_queue(_store(data, db), queue, station)
    out.print(f"devices: {len(report.created)} new, {len(report.updated)} known; "
              f"events: {report.events_added} added, {report.events_known} already there")
    for path, why in report.failed:
        out.print(f"[red]not imported[/] {path}: {why}", highlight=False)
    if report.failed:
        raise DeelitError(f"{len(report.failed)} queued file(s) not imported (kept in place); "
                          "fix them and import again")


@registry_app.command("add-build")
def add_build(manifest: Path, data: DataOpt = None, db: DbOpt = None) -> None:
    """Record a build from its manifest.json."""
    from provisioner.registry.builds import add_build as record

    build, added = record(_store(data, db), manifest)
    out.print(f"build {build.build_id} ({build.profile}) "
              + ("recorded" if added else "was already recorded"))


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


@registry_app.command()
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
    devices = store.list_devices(status=status, point=point, batch=_day(batch), limit=10**6)
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


@registry_app.command()
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


@registry_app.command()
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
        devices = store.list_devices(status=status, point=point, batch=_day(batch), limit=10**6)
    if not devices:
        raise DeelitError("no devices match; nothing to label")
    _write(labels_pdf(devices, layout), output)  # type: ignore[arg-type]


@registry_app.command()
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
