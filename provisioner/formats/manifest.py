"""manifest.json: a build's contract with everything downstream, defined once.

The build writes it; the station, the agent, the registry, the tests and the benches read it.
Every reader goes through `read` (or `parse` for bytes that came another way), so a missing,
damaged, foreign or out-of-date manifest stops with one clear line naming the file and what
to do, instead of a KeyError somewhere later. `FORMAT` changes whenever a key changes meaning
or goes away; keys added by a newer writer of the same format are ignored by older readers.

The build id is used as a folder name by the station, so it is validated here as a safe name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic_core import PydanticCustomError

from provisioner.errors import DeelitError

FILENAME = "manifest.json"
FORMAT = 1
_MAX_ERRORS = 5  # field errors listed in one message

_BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PROFILE_NAME = r"^[a-z][a-z0-9_-]{0,63}$"  # profile.py's rule, within the registry's 64


def _safe_build_id(value: str) -> str:
    if not _BUILD_ID.fullmatch(value) or ".." in value:
        raise PydanticCustomError(
            "build_id",
            "{shown} is not a safe build id (letters, digits, '.', '_', '-', at most 128, "
            "starting with a letter or digit, no '..'): the station uses it as a folder name",
            {"shown": repr(value[:60])},
        )
    return value


def _iso_datetime(value: str) -> str:
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("created", "not an ISO 8601 date and time") from None
    return value


BuildId = Annotated[str, AfterValidator(_safe_build_id)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ProfileInfo(_Record):
    name: Annotated[str, StringConstraints(pattern=_PROFILE_NAME)]
    digest: Sha256  # of the resolved profile's canonical JSON
    resolved: dict[str, Any]  # the profile after `extends:`, defaults filled in


class CacheKeys(_Record):
    bootstrap: Sha256
    tree: Sha256
    artifacts: Sha256


class Package(_Record):
    """One installed Debian package, from the image's dpkg status."""

    name: NonEmpty
    version: NonEmpty
    architecture: NonEmpty


class Artifact(_Record):
    """One published file of the build folder."""

    name: FileName
    kind: NonEmpty
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256


class Manifest(_Record):
    format: int
    build_id: BuildId
    created: Annotated[str, StringConstraints(max_length=40), AfterValidator(_iso_datetime)]
    source_date_epoch: Annotated[int, Field(ge=0)]
    profile: ProfileInfo
    roles: dict[str, Sha256]  # role name -> digest of its folder
    cache_keys: CacheKeys
    packages: list[Package]
    artifacts: list[Artifact]


def dumps(manifest: Manifest) -> str:
    return json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"


def write(path: Path, manifest: Manifest) -> None:
    """Writes the manifest atomically: a reader never sees half of one."""
    if manifest.format != FORMAT:
        raise DeelitError(f"{path}: this deelit writes manifest format {FORMAT}, "
                          f"not {manifest.format}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(manifest))
    os.replace(tmp, path)


def read_bytes(path: Path) -> bytes:
    """The file's bytes (the registry keeps their SHA-256), or a clear error."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DeelitError(f"{path}: missing; build the image first with `deelit build PROFILE` "
                          f"(its output folder holds {FILENAME})") from None
    except OSError as exc:
        raise DeelitError(f"{path}: cannot read the manifest: {exc.strerror}") from None


def read(path: Path) -> Manifest:
    """The manifest at path, checked; DeelitError naming the file and the fix otherwise."""
    return parse(read_bytes(path), path)


def parse(raw: bytes | str, source: Path | str) -> Manifest:
    """The manifest in raw (read from `source`, named in every error), checked."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DeelitError(f"{source}: damaged, not JSON (line {exc.lineno}: {exc.msg}); copy the "
                          f"build folder again, or rebuild with `deelit build PROFILE`") from None
    except UnicodeDecodeError:
        raise DeelitError(f"{source}: damaged, not UTF-8 text; copy the build folder again, "
                          f"or rebuild with `deelit build PROFILE`") from None
    if not isinstance(data, dict):
        raise DeelitError(f"{source}: not a deelit build manifest (a JSON "
                          f"{type(data).__name__}, not an object)")
    _check_format(data, source)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise DeelitError(f"{source}: not a valid deelit build manifest (format {FORMAT}): "
                          f"{_describe(exc)}; {_rebuild(data)}") from None


def sha256_file(path: Path) -> str:
    """The file's SHA-256 (hex), read in 4 MiB pieces: the one digest of every build file."""
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_files(manifest: Manifest, folder: Path, names: list[str]) -> None:
    """Each named file of the build folder is the one the manifest describes (size and
    SHA-256): a copy cut short or changed on the way is refused before anything uses it."""
    recorded = {a.name: a for a in manifest.artifacts}
    for name in names:
        path = folder / name
        art = recorded.get(name)
        if art is None:
            raise DeelitError(f"{path}: not listed in {folder / FILENAME}; copy the whole "
                              "build folder again, or rebuild")
        size = path.stat().st_size if path.is_file() else None
        if size != art.size:
            raise DeelitError(f"{path}: {size if size is not None else 'missing'} bytes, but "
                              f"{FILENAME} says {art.size}: copy the whole build folder again, "
                              "or rebuild")
        if sha256_file(path) != art.sha256:
            raise DeelitError(f"{path}: its SHA-256 is not the one in {FILENAME}: the file was "
                              "changed or damaged; copy the whole build folder again, or rebuild")


def _check_format(data: dict[str, Any], source: Path | str) -> None:
    fmt = data.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt == FORMAT:
        return  # absent or not a number: reported with the other field errors
    if fmt < FORMAT:
        raise DeelitError(f"{source}: manifest format {fmt} was written by an older deelit "
                          f"(this one reads format {FORMAT}): {_rebuild(data)}")
    raise DeelitError(f"{source}: manifest format {fmt} was written by a newer deelit (this one "
                      f"reads format {FORMAT}): update deelit here, or {_rebuild(data)} here")


def _describe(exc: ValidationError) -> str:
    errors = exc.errors()
    parts = [f"key {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
             for e in errors[:_MAX_ERRORS]]
    if len(errors) > _MAX_ERRORS:
        parts.append(f"and {len(errors) - _MAX_ERRORS} more")
    return "; ".join(parts)


def _rebuild(data: dict[str, Any]) -> str:
    profile = data.get("profile")
    name = profile.get("name") if isinstance(profile, dict) else None
    if not (isinstance(name, str) and re.fullmatch(_PROFILE_NAME, name)):
        name = "PROFILE"
    return f"rebuild with `deelit build {name}`"
