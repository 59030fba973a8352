"""Image profiles: YAML under images/, `extends:` merging, validation naming file and key.

Merging rules (child over parent): mappings merge key by key, lists append, a key set to
null resets it to its default. Roles merge by name: a child entry for a role the parent
already lists updates that role's vars in place; new roles append in order. A role entry
names its role with `name:` or, as Ansible playbooks do, `role:`.

Every problem of a file is reported at once, one line each with the key path (at most
MAX_SHOWN, then a count); role variables are checked against the roles' argument specs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from provisioner import role_specs
from provisioner.errors import DeelitError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = PROJECT_ROOT / "images"
ROLES_DIR = PROJECT_ROOT / "roles"

SUITES = ("trixie", "bookworm")
MAX_SHOWN = 20  # problems listed in one error, a screenful
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
        raise DeelitError(f"profile '{ref}' not found in {images_dir} (known: {known})")
    return path


def list_profiles(images_dir: Path = IMAGES_DIR) -> list[str]:
    return sorted(p.stem for p in images_dir.glob("*.yaml"))


def available_roles(roles_dir: Path = ROLES_DIR) -> list[str]:
    return sorted(p.parent.parent.name for p in roles_dir.glob("*/tasks/main.yml"))


def load_profile(ref: str, images_dir: Path = IMAGES_DIR, roles_dir: Path = ROLES_DIR) -> Profile:
    """Loads, merges and validates a profile; every error names the file and the key path."""
    path = find_profile(ref, images_dir)
    merged = _load_merged(path, images_dir, roles_dir, chain=[])
    merged.setdefault("name", path.stem)
    _raise_problems(path, _role_problems(merged, roles_dir, complete=True))
    profile = _validate(merged, path)
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
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise DeelitError(f"{path}: invalid YAML at {where}: {problem}") from None
    except OSError as exc:
        raise DeelitError(f"{path}: cannot read: {exc.strerror}") from None
    if data is None or data == {}:
        # A truncated copy or a wrong path, almost always: never build defaults from it.
        raise DeelitError(f"{path}: the profile is empty; a profile names at least what it "
                          "extends or its roles (see images/ci.yaml)")
    if not isinstance(data, dict):
        raise DeelitError(f"{path}: (top level): must be a mapping of profile keys")
    return data


def _role_names_as_ansible_does(data: dict[str, Any], path: Path) -> None:
    """`- role: base` (Ansible's playbook spelling) is `- name: base`; both at once must agree."""
    roles = data.get("roles")
    if not isinstance(roles, list):
        return
    for index, entry in enumerate(roles):
        if isinstance(entry, dict) and "role" in entry:
            entry = dict(entry)
            role = entry.pop("role")
            if "name" in entry and entry["name"] != role:
                raise DeelitError(f"{path}: roles[{index}]: role: {role!r} and name: "
                                  f"{entry['name']!r} disagree; keep one of them")
            entry["name"] = role
            roles[index] = entry


def _load_merged(
    path: Path, images_dir: Path, roles_dir: Path, chain: list[Path]
) -> dict[str, Any]:
    if path in chain:
        cycle = " -> ".join(p.stem for p in [*chain, path])
        raise DeelitError(f"{chain[-1]}: extends: cycle {cycle}; remove one of the links")
    own = _read_yaml(path)
    _role_names_as_ansible_does(own, path)
    # Each file must be a valid profile on its own (defaults filling the gaps): errors then
    # name the file that holds the bad key, not the child that extends it.
    _raise_problems(path, [
        *_problems({k: v for k, v in own.items() if v is not None and k != "extends"}
                   | {"name": own.get("name") or path.stem}),
        *_role_problems(own, roles_dir),
    ])
    parent_ref = own.pop("extends", None)
    if parent_ref is None:
        return own
    if not isinstance(parent_ref, str):
        raise DeelitError(f"{path}: extends: must be a profile name or a path to a YAML file")
    parent_path = _resolve_parent(parent_ref, path, images_dir)
    parent = _load_merged(parent_path, images_dir, roles_dir, [*chain, path])
    parent.pop("name", None)
    parent.pop("description", None)
    return merge(parent, own)


def _resolve_parent(ref: str, child: Path, images_dir: Path) -> Path:
    for base in (child.parent, images_dir):
        for candidate in (base / ref, base / f"{ref}.yaml"):
            if candidate.is_file():
                return candidate.resolve()
    raise DeelitError(f"{child}: extends: profile '{ref}' not found beside it or in {images_dir}")


def _role_problems(own: dict[str, Any], roles_dir: Path, *, complete: bool = False) -> list[str]:
    """Unknown roles, and each role's vars against its argument spec."""
    known = available_roles(roles_dir)
    found: list[str] = []
    roles = own.get("roles")
    for index, role in enumerate(roles if isinstance(roles, list) else []):
        name = role.get("name") if isinstance(role, dict) else None
        if not isinstance(name, str):
            continue  # the model says what is wrong with the entry
        if name not in known:
            found.append(f"roles[{index}].name: role '{name}' does not exist in {roles_dir} "
                         f"(available: {', '.join(known)})")
            continue
        given = role.get("vars")
        if isinstance(given, dict):
            found += [f"roles[{index}].vars: {p}"
                      for p in role_specs.problems(name, given, roles_dir, complete=complete)]
    return found


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
        else:
            existing["vars"] = merge(existing.get("vars") or {}, entry.get("vars") or {})
    return roles


def _validate(data: dict[str, Any], path: Path) -> Profile:
    _raise_problems(path, _problems(data))
    return Profile.model_validate(data)


def _problems(data: dict[str, Any]) -> list[str]:
    """Every validation error of the model, as `key.path: message` lines."""
    try:
        Profile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            msg = error["msg"]
            if error["type"] == "extra_forbidden":
                allowed = _allowed_keys(error["loc"])
                msg = f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
            lines.append(f"{_key_path(error['loc'])}: {msg}")
        return lines
    return []


def _raise_problems(path: Path, problems: list[str]) -> None:
    """One problem: one line. Several: a line for each (at most MAX_SHOWN, then a count)."""
    if not problems:
        return
    if len(problems) == 1:
        raise DeelitError(f"{path}: {problems[0]}")
    shown = problems[:MAX_SHOWN]
    rest = len(problems) - len(shown)
    lines = [f"{path}: {len(problems)} problems:", *(f"  {p}" for p in shown),
             *([f"  … and {rest} more"] if rest else [])]
    raise DeelitError("\n".join(lines))


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = Profile
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
