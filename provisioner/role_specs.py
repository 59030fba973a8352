"""Role variables checked against each role's `meta/argument_specs.yml` when a profile loads.

Ansible checks a role's arguments only when the role starts, minutes into a build, and not at
all for a misspelled name that merely leaves a default in place. Here a profile's vars are
held to the spec before anything runs: unknown names (with the closest known one), the simple
types argument specs use, `elements` of lists, `choices`, and required options.
A value that is a Jinja expression (`{{ … }}`) is left to Ansible: it is only known there.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Option:
    name: str
    type: str = "str"
    elements: str | None = None
    choices: tuple[Any, ...] | None = None
    required: bool = False


@cache
def _load(spec_file: Path) -> dict[str, Option] | None:
    if not spec_file.is_file():
        return None
    data = yaml.safe_load(spec_file.read_text()) or {}
    options = ((data.get("argument_specs") or {}).get("main") or {}).get("options") or {}
    return {name: Option(name, str(o.get("type", "str")), o.get("elements"),
                         tuple(o["choices"]) if o.get("choices") is not None else None,
                         bool(o.get("required", False)))
            for name, o in options.items()}


def role_options(roles_dir: Path, role: str) -> dict[str, Option] | None:
    """The role's options, or None when it has no argument spec (nothing to check)."""
    return _load((roles_dir / role / "meta" / "argument_specs.yml").resolve())


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _type_problem(value: Any, kind: str) -> str | None:
    if _templated(value):
        return None
    ok = {
        "str": lambda v: isinstance(v, str),
        "path": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "list": lambda v: isinstance(v, list),
        "dict": lambda v: isinstance(v, dict),
    }.get(kind)
    if ok is None or ok(value):
        return None  # raw and unknown types: Ansible's business
    if kind == "bool" and isinstance(value, str):
        # Ansible would take "yes" and "no" and hand the role the string: "no" is then true
        return f"must be of type bool (true or false, unquoted), not str ({value!r:.40})"
    return f"must be of type {kind}, not {type(value).__name__} ({value!r:.40})"


def problems(role: str, given: Mapping[str, Any], roles_dir: Path) -> list[str]:
    """What is wrong with `given` for `role`, one line each, naming role and variable.
    A variable set to null is reset to the role's default: only its name is checked."""
    options = role_options(roles_dir, role)
    if options is None:
        return []
    found: list[str] = []
    for name, value in given.items():
        option = options.get(name)
        if option is None:
            close = difflib.get_close_matches(name, list(options), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(sorted(options))}"
            found.append(f"role {role}: variable {name} is not in roles/{role}/meta/"
                         f"argument_specs.yml{hint}")
            continue
        if value is None:
            continue
        wrong = _type_problem(value, option.type)
        if wrong is None and option.type == "list" and option.elements and isinstance(value, list):
            wrong = next((f"item {i} {p}" for i, item in enumerate(value)
                          if (p := _type_problem(item, option.elements))), None)
        if wrong is None and option.choices is not None and not _templated(value) \
                and value not in option.choices:
            wrong = f"must be one of {', '.join(map(str, option.choices))}, not {value!r}"
        if wrong:
            found.append(f"role {role}: variable {name} {wrong}")
    return found


def missing(role: str, given: Mapping[str, Any], roles_dir: Path) -> list[str]:
    """The required options of `role` that neither `given` (everything a profile sets for it,
    after `extends:`) nor the role's defaults set."""
    options = role_options(roles_dir, role) or {}
    defaults_file = roles_dir / role / "defaults" / "main.yml"
    defaults = (yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.is_file() else {}
    return [f"role {role}: variable {o.name} is required (roles/{role}/meta/argument_specs.yml); "
            "set it in the role's vars:" for o in options.values()
            if o.required and o.name not in given and o.name not in defaults]
