"""Where the registry keeps its data and how it names things; one object passed everywhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

POINT_RE = re.compile(r"^[A-Z0-9]{2,8}$")


def default_data_dir() -> Path:
    """$DEELIT_DATA, else the XDG data folder of the user running deelit."""
    if env := os.environ.get("DEELIT_DATA"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "deelit"


class Settings(BaseModel):
    data_dir: Path = Field(default_factory=default_data_dir)
    # SQLAlchemy URL; None means SQLite at <data_dir>/registry.sqlite3.
    db_url: str | None = None
    # Python format string with {point} and {number}; tags stay unique even if it changes,
    # because numbers come from one counter per point that only grows.
    asset_tag_format: str = "DEELIT-{point}-{number:06d}"
    default_point: str = "MEC"
    max_body_bytes: int = 256 * 1024

    @field_validator("default_point")
    @classmethod
    def _point(cls, value: str) -> str:
        if not POINT_RE.match(value):
            raise ValueError(f"point code {value!r} must be 2-8 capital letters or digits")
        return value

    @field_validator("asset_tag_format")
    @classmethod
    def _tag_format(cls, value: str) -> str:
        try:
            tag = value.format(point="MEC", number=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"asset tag format {value!r} must use only {{point}} and {{number}}: {exc}"
            ) from exc
        if "{number" not in value or tag == value.format(point="MEC", number=2):
            raise ValueError(f"asset tag format {value!r} must contain {{number}}")
        return value

    @property
    def url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{self.data_dir / 'registry.sqlite3'}"
