"""What every `deelit registry` command shares: the data and database options, and the way
they become settings and a store. The heavy imports wait until a command runs."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from provisioner.errors import DeelitError

if TYPE_CHECKING:
    from provisioner.registry.settings import Settings
    from provisioner.registry.store import Store

out = Console()

DataOpt = Annotated[Path | None, typer.Option("--data", help="data folder (default: "
                                              "$DEELIT_DATA or ~/.local/share/deelit)")]
DbOpt = Annotated[str | None, typer.Option("--db", help="database URL, e.g. "
                                           "postgresql://user@host/deelit (default: SQLite "
                                           "in the data folder)", envvar="DEELIT_DB")]


def settings(data: Path | None, db: str | None, **extra: object) -> Settings:
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


def store(data: Path | None, db: str | None) -> Store:
    from provisioner.registry.store import Store

    return Store(settings(data, db))


def day(text: str | None) -> dt.date | None:
    if text is None:
        return None
    if text == "today":
        return dt.date.today()
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise DeelitError(f"--batch {text!r}: give a date as YYYY-MM-DD or 'today'") from exc
