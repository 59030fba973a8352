"""Image profiles: YAML under images/, `extends:` merging, validation naming file and key.

Merging rules (child over parent): mappings merge key by key, lists append, a key set to
null resets it to its default. Roles merge by name: a child entry for a role the parent
already lists updates that role's vars in place; new roles append in order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from provisioner.errors import DeelitError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = PROJECT_ROOT / "images"
ROLES_DIR = PROJECT_ROOT / "roles"

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

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
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
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DeelitError(f"{path}: (top level): must be a mapping of profile keys")
    return data


def _load_merged(
    path: Path, images_dir: Path, roles_dir: Path, chain: list[Path]
) -> dict[str, Any]:
    if path in chain:
        cycle = " -> ".join(p.stem for p in [*chain, path])
        raise DeelitError(f"{chain[-1]}: extends: cycle {cycle}; remove one of the links")
    own = _read_yaml(path)
    # Each file must be a valid profile on its own (defaults filling the gaps): errors then
    # name the file that holds the bad key, not the child that extends it.
    _validate({k: v for k, v in own.items() if v is not None and k != "extends"}
              | {"name": own.get("name") or path.stem}, path)
    _check_roles(own, path, roles_dir)
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


def _check_roles(own: dict[str, Any], path: Path, roles_dir: Path) -> None:
    known = available_roles(roles_dir)
    for index, role in enumerate(own.get("roles") or []):
        name = role.get("name") if isinstance(role, dict) else None
        if name and name not in known:
            raise DeelitError(
                f"{path}: roles[{index}].name: role '{name}' does not exist in {roles_dir} "
                f"(available: {', '.join(known)})"
            )


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
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = _key_path(first["loc"])
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            allowed = _allowed_keys(first["loc"])
            msg = f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise DeelitError(f"{path}: {key}: {msg}{more}") from None


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
