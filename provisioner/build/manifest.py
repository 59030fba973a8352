"""Step `manifest`: manifest.json, SHA256SUMS and a CycloneDX SBOM of the Debian packages.

This step gathers the data (packages from dpkg's status, digests, artifacts); the manifest's
schema, version and writing live in provisioner.formats.manifest, which every reader shares.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

from provisioner.build.context import ArtifactFile, BuildContext
from provisioner.formats import manifest as fm
from provisioner.formats.manifest import Package, sha256_file
from provisioner.formats.release_signature import SUMS

SBOM = "sbom.cdx.json"


def installed_packages(tree: Path) -> list[Package]:
    """Installed packages from the tree's dpkg status file (no tool run inside the tree)."""
    status = (tree / "var/lib/dpkg/status").read_text(errors="replace")
    pkgs = []
    for stanza in status.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status") == "install ok installed":
            pkgs.append(Package(name=fields["Package"], version=fields["Version"],
                                architecture=fields["Architecture"]))
    return sorted(pkgs, key=lambda p: (p.name, p.architecture))


def build_id(ctx: BuildContext) -> str:
    joined = "".join(a.sha256 for a in sorted(ctx.artifacts, key=lambda a: a.name))
    return f"{ctx.profile.name}-{hashlib.sha256(joined.encode()).hexdigest()[:12]}"


def manifest_of(ctx: BuildContext, packages: list[Package]) -> fm.Manifest:
    created = dt.datetime.fromtimestamp(ctx.source_date_epoch, dt.UTC).isoformat()
    return fm.Manifest(
        format=fm.FORMAT,
        build_id=build_id(ctx),
        created=created,
        source_date_epoch=ctx.source_date_epoch,
        profile=fm.ProfileInfo(name=ctx.profile.name, digest=ctx.profile.digest(),
                               resolved=ctx.profile.model_dump(mode="json")),
        roles=ctx.role_digests,
        cache_keys=fm.CacheKeys(**asdict(ctx.keys)),
        packages=packages,
        artifacts=[fm.Artifact(**asdict(a)) for a in sorted(ctx.artifacts, key=lambda a: a.name)],
    )


def purl(pkg: Package, suite: str) -> str:
    return (f"pkg:deb/debian/{quote(pkg.name)}@{quote(pkg.version, safe='')}"
            f"?arch={pkg.architecture}&distro=debian-{suite}")


def sbom_data(ctx: BuildContext, packages: list[Package], bid: str) -> dict[str, Any]:
    created = dt.datetime.fromtimestamp(ctx.source_date_epoch, dt.UTC)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        # Same build, same serial: derived from the build id, not random.
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'deelit:' + bid)}",
        "version": 1,
        "metadata": {
            "timestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "deelit"}]},
            "component": {"type": "operating-system", "name": ctx.profile.name, "version": bid,
                          "bom-ref": bid},
        },
        "components": [
            {"type": "library", "bom-ref": purl(p, ctx.profile.suite), "name": p.name,
             "version": p.version, "purl": purl(p, ctx.profile.suite)}
            for p in packages
        ],
    }


def write_manifest(ctx: BuildContext, dest: Path) -> fm.Manifest:
    """Writes manifest, SBOM and SHA256SUMS into dest (which already holds the artifacts)."""
    assert ctx.tree is not None
    packages = installed_packages(ctx.tree)
    manifest = manifest_of(ctx, packages)
    fm.write(dest / fm.FILENAME, manifest)
    (dest / SBOM).write_text(json.dumps(sbom_data(ctx, packages, manifest.build_id), indent=2) + "\n")
    names = [a.name for a in ctx.artifacts] + [fm.FILENAME, SBOM]
    lines = [f"{sha256_file(dest / n)}  {n}\n" for n in sorted(names)]
    (dest / SUMS).write_text("".join(lines))
    return manifest


def artifact_record(path: Path, kind: str) -> ArtifactFile:
    return ArtifactFile(path.name, kind, path.stat().st_size, sha256_file(path))
