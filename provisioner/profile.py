"""Image profiles: YAML under images/, `extends:` merging, validation naming file and key.

Merging rules (child over parent): mappings merge key by key, lists append, a key set to
null resets it to its default (a role variable too). Roles merge by name: a child entry for a
role the parent already lists updates that role's vars in place; new roles append in order.
Role entries are written as Ansible playbooks write them: `- role: base` (or `name:`), or
just `- base`.

Every problem of every file of a profile is reported at once, one line each with the file
and the key path (a screenful, then a count: problems.py); role variables are checked against the
roles' argument specs (role_specs.py).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from provisioner import role_specs
from provisioner.errors import DeelitError
from provisioner.problems import key_path, model_problems, raise_all, shown

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = PROJECT_ROOT / "images"
ROLES_DIR = PROJECT_ROOT / "roles"
# deelit.laptop: the module the roles write their files with (one module run for many files)
COLLECTIONS_DIR = PROJECT_ROOT / "collections"

SUITES = ("trixie", "bookworm")
Component = Literal["main", "contrib", "non-free", "non-free-firmware"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoleRef(_Strict):
    """One Ansible role of the profile, run in list order, with its variables."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    vars: dict[str, Any] = Field(default_factory=dict)


class NetbootOutput(_Strict):
    """vmlinuz + initrd.img + filesystem.squashfs for PXE (live-boot `fetch=`) and live use."""

    compression_level: int = Field(default=15, ge=1, le=22, description="zstd level of the squashfs")
    secure_boot: bool = Field(
        default=False,
        description="also ship the image's signed shim and network GRUB (Secure Boot PXE)",
    )


class DiskOutput(_Strict):
    """Raw GPT disk image (BIOS + UEFI + Secure Boot), shipped as .img.zst + .bmap."""

    size: str = Field(default="4GiB", pattern=r"^[0-9]+(MiB|GiB)$")
    compression_level: int = Field(default=10, ge=1, le=22)
    name: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9._-]*$",
        description="file name stem: NAME.img.zst + NAME.bmap (default: the profile name)",
    )
    boot_password_hash_file: str | None = Field(
        default=None, pattern=r"^[/~]",
        description="absolute path of a file with the GRUB superuser's PBKDF2 hash "
                    "(grub-mkpasswd-pbkdf2), kept outside the profile; default: the build makes a "
                    "random password and keeps it in the output folder, readable by root only",
    )


class AptSources(_Strict):
    """The apt sources the laptop keeps and updates from at home (not the build's mirror)."""

    mirror: str | None = Field(
        default=None, description="Debian mirror URL in the image; default: the build host's apt sources"
    )
    security_mirror: str | None = None


class Outputs(_Strict):
    netboot: NetbootOutput | None = None
    disk: DiskOutput | None = None


class Profile(_Strict):
    """A resolved profile: everything the pipeline needs to build one image."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")  # the manifest and registry take 64
    description: str = ""
    suite: Literal["trixie", "bookworm"] = "trixie"
    architecture: Literal["amd64"] = "amd64"
    mirror: str | None = Field(
        default=None, description="Debian mirror the build fetches from (a café's apt cache, "
        "say); default: the build host's apt sources. Never written into the image."
    )
    security_mirror: str | None = None
    apt_sources: AptSources = Field(default_factory=lambda: AptSources())
    components: list[Component] = Field(default_factory=lambda: list[Component](["main"]))
    locale: str = Field(default="nl_BE.UTF-8", pattern=r"^[a-z]{2,3}_[A-Z]{2}\.UTF-8$")
    keyboard: str = Field(default="be", pattern=r"^[a-z]{2,}$")
    timezone: str = Field(default="Europe/Brussels", pattern=r"^[A-Za-z_]+(/[A-Za-z_+-]+)*$")
    hostname: str = Field(default="deelit-{serial}", description="{serial}: last 6 of SMBIOS serial")
    packages: list[str] = Field(default_factory=list)
    roles: list[RoleRef] = Field(default_factory=list)
    outputs: Outputs = Field(default_factory=lambda: Outputs(netboot=NetbootOutput()))
    tests: list[str] = Field(
        default_factory=list, description="extra testinfra files (relative to the repo)"
    )

    @field_validator("packages")
    @classmethod
    def _package_names(cls, value: list[str]) -> list[str]:
        for pkg in value:
            if not pkg or any(c.isspace() for c in pkg) or pkg.startswith("-"):
                raise ValueError(f"'{pkg}' is not a Debian package name")
        return value

    _source_files: list[Path] = PrivateAttr(default_factory=list)

    @property
    def source_files(self) -> list[Path]:
        """The YAML files this profile was loaded from (itself first, then its parents)."""
        return list(self._source_files)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the resolved profile."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


# --- loading ---------------------------------------------------------------------------


def find_profile(ref: str, images_dir: Path = IMAGES_DIR) -> Path:
    """A profile is named by its name in images/ or by a path to a YAML file."""
    candidate = Path(ref)
    if candidate.suffix in (".yaml", ".yml") or "/" in ref:
        if not candidate.is_file():
            raise DeelitError(f"{ref}: no such profile file")
        return candidate.resolve()
    path = images_dir / f"{ref}.yaml"
    if not path.is_file():
        known = ", ".join(list_profiles(images_dir)) or "none"
        raise DeelitError(f"profile '{ref}' not found in {shown(images_dir)} (known: {known})")
    return path


def list_profiles(images_dir: Path = IMAGES_DIR) -> list[str]:
    return sorted(p.stem for p in images_dir.glob("*.yaml"))


def available_roles(roles_dir: Path = ROLES_DIR) -> list[str]:
    return sorted(p.parent.parent.name for p in roles_dir.glob("*/tasks/main.yml"))


def load_profile(ref: str, images_dir: Path = IMAGES_DIR, roles_dir: Path = ROLES_DIR) -> Profile:
    """Loads, merges and validates a profile. Every problem of every file it is made of is
    raised at once, each naming the file that holds it and the key path."""
    path = find_profile(ref, images_dir)
    problems: list[str] = []
    merged = _load_merged(path, images_dir, roles_dir, [], problems)
    if merged is not None and not problems:
        # Each file was valid on its own; what is left can only show in the whole.
        merged = _without_nulls(merged)
        merged.setdefault("name", path.stem)
        problems += [f"{shown(path)}: {key_path(loc)}: {msg}"
                     for loc, _, msg in model_problems(Profile, merged)]
        problems += [f"{shown(path)}: roles: {p}" for p in _missing_required(merged, roles_dir)]
    raise_all(path, problems)
    assert merged is not None
    profile = Profile.model_validate(merged)
    profile._source_files = profile_files(str(path), images_dir)
    return profile


def profile_files(ref: str, images_dir: Path = IMAGES_DIR) -> list[Path]:
    """The YAML files a profile is made of: itself and every profile it extends."""
    files: list[Path] = []
    path: Path | None = find_profile(ref, images_dir)
    while path is not None and path not in files:
        files.append(path)
        parent = _read_yaml(path).get("extends")
        path = _resolve_parent(parent, path, images_dir) if isinstance(parent, str) else None
    return files


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise DeelitError(f"{shown(path)}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise DeelitError(f"{shown(path)}: invalid YAML at {where}: {problem}") from None
    if data is None or data == {}:
        # A truncated copy or a wrong path, almost always: never build defaults from it.
        raise DeelitError(f"{shown(path)}: the profile is empty; a profile names at least what "
                          "it extends or its roles (see images/ci.yaml)")
    if not isinstance(data, dict):
        raise DeelitError(f"{shown(path)}: (top level): must be a mapping of profile keys")
    return data


def _load_merged(
    path: Path, images_dir: Path, roles_dir: Path, chain: list[Path], problems: list[str]
) -> dict[str, Any] | None:
    """The file at `path` merged over its parents. Every problem of each file of the chain
    goes to `problems` as a line naming that file (the child's first); None when the chain
    could not be read whole."""
    if path in chain:
        cycle = " -> ".join(p.stem for p in [*chain, path])
        problems.append(f"{shown(chain[-1])}: extends: cycle {cycle}; remove one of the links")
        return None
    try:
        own = _read_yaml(path)
    except DeelitError as exc:
        problems.append(str(exc))
        return None
    problems += [f"{shown(path)}: {p}" for p in _file_problems(own, path, roles_dir)]
    parent_ref = own.pop("extends", None)
    if parent_ref is None:
        return own
    if not isinstance(parent_ref, str):
        problems.append(f"{shown(path)}: extends: must be a profile name or a path to a YAML file")
        return None
    try:
        parent_path = _resolve_parent(parent_ref, path, images_dir)
    except DeelitError as exc:
        problems.append(str(exc))
        return None
    parent = _load_merged(parent_path, images_dir, roles_dir, [*chain, path], problems)
    if parent is None or problems:
        return None
    parent.pop("name", None)
    parent.pop("description", None)
    return merge(parent, own)


def _resolve_parent(ref: str, child: Path, images_dir: Path) -> Path:
    for base in (child.parent, images_dir):
        for candidate in (base / ref, base / f"{ref}.yaml"):
            if candidate.is_file():
                return candidate.resolve()
    raise DeelitError(f"{shown(child)}: extends: profile '{ref}' not found beside it or in "
                      f"{shown(images_dir)}")


# --- one file's problems ---------------------------------------------------------------


def _file_problems(own: dict[str, Any], path: Path, roles_dir: Path) -> list[str]:
    """Every problem of one file as a valid profile on its own (defaults filling the gaps),
    so each is named by the file that holds the bad key, not by a child that extends it.
    Normalizes its role entries in place (see `_ansible_role_entries`)."""
    labels, entry_problems = _ansible_role_entries(own)
    data = _without_nulls({k: v for k, v in own.items() if k != "extends"})
    data["name"] = own.get("name") or path.stem
    given = data.get("roles")
    roles: list[Any] = given if isinstance(given, list) else []
    role_lines, settled = _role_problems(roles, roles_dir, labels, entry_problems)
    lines = []
    for loc, kind, msg in model_problems(Profile, data):
        if loc[:1] == ("roles",) and len(loc) >= 2 and isinstance(loc[1], int):
            if loc[1] in settled and (len(loc) == 2 or loc[2] == "name"):
                continue  # the entry's own line says it better
            if len(loc) == 3 and kind == "extra_forbidden" and isinstance(roles[loc[1]], dict):
                msg = _unknown_role_key(str(loc[2]), roles[loc[1]].get("name"), roles_dir)
            if len(loc) >= 3 and loc[2] == "name" and labels.get(loc[1]) == "role":
                loc = (*loc[:2], "role", *loc[3:])
        lines.append(f"{key_path(loc)}: {msg}")
    return [*lines, *role_lines]


def _ansible_role_entries(own: dict[str, Any]) -> tuple[dict[int, str], dict[int, str | None]]:
    """Role entries as Ansible playbooks write them, made `{name: …, vars: …}` in place:
    `- base`, `- role: base`, `- name: base` (`role:` and `name:` at once must agree).
    Returns how each entry named its role (for key paths), and the problems of entries that
    name none (None: another line already says it)."""
    labels: dict[int, str] = {}
    problems: dict[int, str | None] = {}
    given = own.get("roles")
    roles: list[Any] = given if isinstance(given, list) else []
    for index, entry in enumerate(roles):
        if isinstance(entry, str):
            roles[index], labels[index] = {"name": entry}, ""
        elif not isinstance(entry, dict):
            problems[index] = (f"must be a role's name or a mapping with role: (and vars:), "
                               f"not {entry!r:.40}")
        elif "role" in entry:
            labels[index] = "role"
            entry = dict(entry)
            role = entry.pop("role")
            if "name" in entry and entry["name"] != role:
                problems[index] = (f"role: {role!r} and name: {entry['name']!r} disagree; "
                                   "keep one of them")
            roles[index] = entry | {"name": role}
        elif "name" in entry:
            labels[index] = "name"
        elif any(difflib.get_close_matches(str(key), ["role", "name"], n=1) for key in entry):
            problems[index] = None  # `rolee: base`: its unknown key's line says it
        else:
            problems[index] = "names no role; write role: NAME (as Ansible does) or name: NAME"
    return labels, problems


def _entry_key(index: int, labels: dict[int, str]) -> str:
    label = labels.get(index, "name")
    return f"roles[{index}].{label}" if label else f"roles[{index}]"


def _role_problems(
    roles: list[Any], roles_dir: Path, labels: dict[int, str],
    entry_problems: dict[int, str | None],
) -> tuple[list[str], set[int]]:
    """Entries naming no role or one missing from roles/, and each role's vars against its
    argument spec. Also returns the entries whose role name is already reported."""
    known = available_roles(roles_dir)
    found: list[str] = []
    settled: set[int] = set()
    for index, role in enumerate(roles):
        if index in entry_problems:
            if entry_problems[index]:
                found.append(f"roles[{index}]: {entry_problems[index]}")
            settled.add(index)
            continue
        name = role.get("name") if isinstance(role, dict) else None
        if not isinstance(name, str):
            continue  # the model says what is wrong with it
        if name not in known:
            close = difflib.get_close_matches(name.lower(), known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"available: {', '.join(known)}"
            found.append(f"{_entry_key(index, labels)}: role '{name}' does not exist in "
                         f"{shown(roles_dir)}/; {hint}")
            settled.add(index)
            continue
        given = role.get("vars")
        if isinstance(given, dict):
            found += [f"roles[{index}].vars: {p}" for p in role_specs.problems(name, given, roles_dir)]
    return found, settled


def _unknown_role_key(key: str, role: Any, roles_dir: Path) -> str:
    """A role entry takes role: (or name:) and vars:; Ansible's inline role parameters not."""
    options = role_specs.role_options(roles_dir, role) if isinstance(role, str) else None
    if options and key in options:
        return f"unknown key; {key} is a variable of role {role}: set it under vars:"
    close = difflib.get_close_matches(key, ["role", "name", "vars"], n=1)
    return f"unknown key; did you mean {close[0]}?" if close else "unknown key; allowed: role (or name), vars"


def _missing_required(merged: dict[str, Any], roles_dir: Path) -> list[str]:
    return [p for role in merged.get("roles") or []
            for p in role_specs.missing(role["name"], role.get("vars") or {}, roles_dir)]


def _without_nulls(data: dict[str, Any]) -> dict[str, Any]:
    """A key set to null means its default: gone from mappings and from each role's vars
    (not from inside a variable's value: there it is data)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if key == "roles" and isinstance(value, list):
            value = [_role_without_nulls(entry) for entry in value]
        elif isinstance(value, dict):
            value = _without_nulls(value)
        out[key] = value
    return out


def _role_without_nulls(entry: Any) -> Any:
    if not isinstance(entry, dict):
        return entry
    out = {k: v for k, v in entry.items() if v is not None}
    if isinstance(out.get("vars"), dict):
        out["vars"] = {k: v for k, v in out["vars"].items() if v is not None}
    return out


# --- merging -----------------------------------------------------------------------------


def merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Child over parent: mappings merge, lists append, null resets, roles merge by name."""
    result = dict(parent)
    for key, value in child.items():
        if value is None:
            result.pop(key, None)
        elif key == "roles" and isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_roles(result[key], value)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = [*result[key], *value]
        else:
            result[key] = value
    return result


def _merge_roles(parent: list[Any], child: list[Any]) -> list[Any]:
    roles = [dict(r) for r in parent]
    by_name = {r.get("name"): r for r in roles}
    for entry in child:
        existing = by_name.get(entry.get("name"))
        if existing is None:
            roles.append(dict(entry))
            by_name[entry.get("name")] = roles[-1]
        elif "vars" in entry and entry["vars"] is None:
            existing["vars"] = {}  # null resets: the role's defaults
        else:
            existing["vars"] = merge(existing.get("vars") or {}, entry.get("vars") or {})
    return roles
