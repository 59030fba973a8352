"""Recording a build from the pipeline's manifest.json (checked by provisioner.formats.manifest)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from provisioner.formats import manifest as fm
from provisioner.registry.schemas import BuildOut
from provisioner.registry.store import Store


def add_build(store: Store, manifest_path: Path) -> tuple[BuildOut, bool]:
    """Records the build once; the same manifest again is a no-op, a different one an error."""
    raw = fm.read_bytes(manifest_path)
    manifest = fm.parse(raw, manifest_path)
    return store.add_build(manifest.model_dump(mode="json"), hashlib.sha256(raw).hexdigest())
