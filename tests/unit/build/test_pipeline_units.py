"""Pieces of the pipeline that need no root: keys, failures, packages, output safety."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from provisioner.build import pipeline
from provisioner.build.cache import Cache
from provisioner.build.configure import failed_task
from provisioner.build.context import BuildContext
from provisioner.build.manifest import artifact_record, installed_packages, purl, write_manifest
from provisioner.build.mirrors import Mirrors
from provisioner.errors import DeelitError
from provisioner.formats import manifest as fm
from provisioner.profile import load_profile


def keys_for(profile_name: str, roles: dict[str, str], sde: int = 1) -> pipeline.CacheKeys:
    prof = load_profile(profile_name)
    return pipeline.cache_keys(prof, ["deb http://m.example/debian trixie main"], roles, sde)


def test_role_change_keeps_bootstrap_key_and_changes_tree_key() -> None:
    a = keys_for("ci", {"base": "1", "technician_ssh": "1"})
    b = keys_for("ci", {"base": "2", "technician_ssh": "1"})
    assert a.bootstrap == b.bootstrap
    assert a.tree != b.tree and a.artifacts != b.artifacts


def test_output_option_changes_only_artifacts_key() -> None:
    prof = load_profile("ci")
    assert prof.outputs.netboot is not None
    other = prof.model_copy(update={"outputs": prof.outputs.model_copy(
        update={"netboot": prof.outputs.netboot.model_copy(update={"compression_level": 19})})})
    lines, roles = ["deb http://m.example/debian trixie main"], {"base": "1", "technician_ssh": "1"}
    a = pipeline.cache_keys(prof, lines, roles, 1)
    b = pipeline.cache_keys(other, lines, roles, 1)
    assert (a.bootstrap, a.tree) == (b.bootstrap, b.tree)
    assert a.artifacts != b.artifacts


def test_mirror_or_package_change_invalidates_bootstrap() -> None:
    prof = load_profile("ci")
    roles = {"base": "1", "technician_ssh": "1"}
    a = pipeline.cache_keys(prof, ["deb http://m.example/debian trixie main"], roles, 1)
    b = pipeline.cache_keys(prof, ["deb http://n.example/debian trixie main"], roles, 1)
    c = pipeline.cache_keys(prof.model_copy(update={"packages": ["less"]}),
                            ["deb http://m.example/debian trixie main"], roles, 1)
    assert len({a.bootstrap, b.bootstrap, c.bootstrap}) == 3


def test_failed_task_is_named(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text(
        "TASK [base : Generate the locale] ****\nok: [t]\n"
        "TASK [technician_ssh : Allow key logins only] ****\n"
        'fatal: [t]: FAILED! => {"changed": false, "msg": "failed to validate", '
        '"stderr": "Missing privilege separation directory: /run/sshd\\r\\n"}\n'
    )
    assert failed_task(log) == (
        "Ansible task 'technician_ssh : Allow key logins only' failed: failed to validate - "
        "Missing privilege separation directory: /run/sshd"
    )


def test_installed_packages_only_installed(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.3.dfsg-3.1\nArchitecture: amd64\n"
        "Description: x\n more\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: all\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2.37-2\nArchitecture: amd64\n"
    )
    pkgs = installed_packages(tmp_path)
    assert [(p.name, p.version) for p in pkgs] == [("bash", "5.2.37-2"), ("zlib1g", "1:1.3.dfsg-3.1")]
    assert purl(pkgs[1], "trixie") == "pkg:deb/debian/zlib1g@1%3A1.3.dfsg-3.1?arch=amd64&distro=debian-trixie"


def test_output_folder_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep")
    with pytest.raises(DeelitError, match="not a deelit output folder"):
        pipeline._check_out_dir(tmp_path)
    pipeline._check_out_dir(tmp_path / "new")  # a new folder is fine


def test_manifest_step_writes_what_every_reader_reads(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text(
        "Package: bash\nStatus: install ok installed\nVersion: 5.2.37-2\nArchitecture: amd64\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "vmlinuz").write_bytes(b"kernel")
    prof = load_profile("ci")
    roles = {"base": "b" * 64, "technician_ssh": "c" * 64}
    ctx = BuildContext(profile=prof, project=tmp_path, out_dir=out, cache=Cache(tmp_path / "c"),
                       work=tmp_path, log=tmp_path / "log", mirrors=Mirrors("http://m.example/debian", None),
                       image_mirrors=Mirrors("http://m.example/debian", None),
                       source_date_epoch=1767225600, role_digests=roles,
                       keys=keys_for("ci", roles), tree=tree,
                       artifacts=[artifact_record(out / "vmlinuz", "kernel")])
    written = write_manifest(ctx, out)
    read = fm.read(out / fm.FILENAME)
    assert read == written and read.format == fm.FORMAT
    assert read.build_id.startswith("ci-") and read.created == "2026-01-01T00:00:00+00:00"
    assert read.profile.digest == prof.digest() and read.cache_keys.tree == ctx.keys.tree
    assert [(p.name, p.version) for p in read.packages] == [("bash", "5.2.37-2")]
    assert [(a.name, a.kind, a.size) for a in read.artifacts] == [("vmlinuz", "kernel", 6)]
    sums = (out / "SHA256SUMS").read_text()
    assert sums.endswith("  vmlinuz\n") and "  manifest.json\n" in sums and "  sbom.cdx.json\n" in sums


def test_a_role_change_keeps_the_layers_below_it() -> None:
    prof = load_profile("pupil")
    names = [r.name for r in prof.roles]
    same = {n: "1" for n in names}
    last_changed = {**same, names[-1]: "2"}
    first_changed = {**same, names[0]: "2"}
    a, b, c = (keys_for("pupil", roles) for roles in (same, last_changed, first_changed))
    assert a.layers[:-1] == b.layers[:-1] and a.layers[-1] != b.layers[-1]
    assert all(x != y for x, y in zip(a.layers, c.layers, strict=True))
    assert a.bootstrap == b.bootstrap == c.bootstrap
    assert len({a.tree, b.tree, c.tree}) == 3


def test_source_date_epoch_is_in_every_key() -> None:
    """The tree shares inodes with the bootstrap and the layers, whose times finalize clamps."""
    roles = {"base": "1", "technician_ssh": "1"}
    a, b = keys_for("ci", roles, sde=1), keys_for("ci", roles, sde=2)
    assert a.bootstrap != b.bootstrap and a.tree != b.tree
    assert all(x != y for x, y in zip(a.layers, b.layers, strict=True))


def test_the_artifact_writers_run_side_by_side() -> None:
    """Each waits for the other at a barrier: run one after the other, the first times out."""
    meet = threading.Barrier(2, timeout=10)
    ran: list[str] = []

    def writer(name: str) -> None:
        meet.wait()
        ran.append(name)

    pipeline.side_by_side([lambda: writer("disk"), lambda: writer("netboot")])
    assert sorted(ran) == ["disk", "netboot"]


def test_a_failing_writer_is_raised_after_the_other_has_ended() -> None:
    ended = threading.Event()

    def fails() -> None:
        raise DeelitError("mksquashfs exited with 1")

    def slow() -> None:
        time.sleep(0.3)
        ended.set()

    with pytest.raises(DeelitError, match="mksquashfs"):
        pipeline.side_by_side([slow, fails])
    assert ended.is_set()
