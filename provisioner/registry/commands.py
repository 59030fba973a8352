"""`deelit registry ...`: serve, tokens, devices, events, builds, import; the group that
loan_commands.py adds export, sync, label and certificate to."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from provisioner.errors import DeelitError
from provisioner.registry import loan_commands
from provisioner.registry.access import TokenScope
from provisioner.registry.cli_common import DataOpt, DbOpt, day, out
from provisioner.registry.cli_common import settings as _settings
from provisioner.registry.cli_common import store as _store

registry_app = typer.Typer(help="Device registry: serve the API, tokens, exports, labels.",
                           no_args_is_help=True)
token_app = typer.Typer(help="Per-station bearer tokens (scope station or agent, optional expiry).",
                        no_args_is_help=True)
registry_app.add_typer(token_app, name="token")
def register(app: typer.Typer) -> None:
    """Adds `deelit registry` to the main app."""
    app.add_typer(registry_app, name="registry")


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
    """Run the HTTP API and the cockpit (uvicorn): open / and log in with a station token."""
    import uvicorn

    from provisioner.registry.api import create_app

    settings = _settings(data, db, default_point=point, asset_tag_format=tag_format)
    app = create_app(settings)
    out.print(f"registry on http://{host}:{port}/  (database: {settings.url.split('@')[-1]}); "
              "the cockpit asks for a station token (deelit registry token create)")
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
    devices = _store(data, db).list_devices(status=status, point=point, batch=day(batch),
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
    from provisioner.registry.tokens import Caller

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


loan_commands.register(registry_app)  # export, sync, label, certificate
