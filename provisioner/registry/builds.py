"""Recording a build from the pipeline's manifest.json (only the keys the registry needs)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from provisioner.errors import DeelitError
from provisioner.registry.schemas import BuildOut
from provisioner.registry.store import Store


class _Profile(BaseModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    digest: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class _Artifact(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class BuildManifest(BaseModel):
    model_config = ConfigDict(extra="allow")  # packages, roles, SBOM refs: not needed here
    build_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    profile: _Profile
    created: Annotated[str, StringConstraints(min_length=10, max_length=40)]
    artifacts: list[_Artifact]


def add_build(store: Store, manifest_path: Path) -> tuple[BuildOut, bool]:
    """Records the build once; the same manifest again is a no-op, a different one an error."""
    try:
        raw = manifest_path.read_bytes()
    except OSError as exc:
        raise DeelitError(f"{manifest_path}: cannot read the manifest: {exc.strerror}") from exc
    try:
        manifest = BuildManifest.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise DeelitError(f"{manifest_path}: not JSON (line {exc.lineno}: {exc.msg})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise DeelitError(
            f"{manifest_path}: key {where}: {first['msg']}; is this a deelit build manifest?"
        ) from exc
    data = manifest.model_dump(mode="json")
    return store.add_build(data, hashlib.sha256(raw).hexdigest())
