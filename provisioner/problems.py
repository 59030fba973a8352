"""Validation problems as lines a person reads: `file: key.path: what is wrong`.

A pydantic model's errors become key paths (`outputs.netboot.level`, `roles[0].vars`), an
unknown key gets the closest allowed one or the list of them, and one error holds every
problem of a file: one line for one, else a line each (a screenful, then a count).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from provisioner.errors import DeelitError

MAX_SHOWN = 20  # problems listed in one error, a screenful

Loc = tuple[int | str, ...]


def shown(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def model_problems(model: type[BaseModel], data: Any) -> list[tuple[Loc, str, str]]:
    """Every validation error of `data` as `model`: (location, pydantic's type, message)."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [(e["loc"], e["type"],
                 unknown_key(model, e["loc"]) if e["type"] == "extra_forbidden" else e["msg"])
                for e in exc.errors()]
    return []


def unknown_key(model: type[BaseModel], loc: Loc) -> str:
    allowed = _allowed_keys(model, loc)
    if not allowed:
        return "unknown key"
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    if close:
        return f"unknown key; did you mean {close[0]}?"
    return f"unknown key; allowed: {', '.join(allowed)}"


def key_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def raise_all(path: Path, problems: list[str]) -> None:
    """One problem: its line. Several: a line for each (at most MAX_SHOWN, then a count)."""
    if not problems:
        return
    if len(problems) == 1:
        raise DeelitError(problems[0])
    listed = problems[:MAX_SHOWN]
    rest = len(problems) - len(listed)
    lines = [f"{shown(path)}: {len(problems)} problems:", *(f"  {p}" for p in listed),
             *([f"  … and {rest} more"] if rest else [])]
    raise DeelitError("\n".join(lines))


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        inner = _model_in(field.annotation)
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
