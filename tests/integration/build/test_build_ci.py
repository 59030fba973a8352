"""The `ci` image end to end: build, cache, role change, artifacts, manifest and boot
(`deelit verify` of its output: test_verify_folder.py).

Runs real mmdebstrap, ansible-core, mksquashfs and QEMU (TCG): minutes, root, network to the
host's Debian mirror. The build cache is the default one, so a developer's second run is quick.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.build import configure, pipeline
from provisioner.build.cache import Cache
from provisioner.formats import manifest as fm
from provisioner.profile import PROJECT_ROOT, load_profile
from provisioner.vm import VM, VMSpec

pytestmark = [pytest.mark.slow, pytest.mark.root]


def deelit(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli", *args], capture_output=True,
                          text=True, check=False, cwd=PROJECT_ROOT)
    if check and proc.returncode != 0:
        pytest.fail(f"deelit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def ci_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ci") / "out"
    deelit("build", "ci", "--out", str(out))
    return out


def test_artifacts_manifest_checksums_and_sbom(ci_build: Path) -> None:
    names = {p.name for p in ci_build.iterdir()}
    expected = {"vmlinuz", "initrd.img", "filesystem.squashfs", "manifest.json", "SHA256SUMS",
                "sbom.cdx.json"}
    if load_profile("ci").outputs.disk is not None:
        # and the GRUB password the build made, for root only (in no listing: see below)
        expected |= {"ci.img.zst", "ci.bmap", "boot-password.txt"}
    assert names == expected
    assert "boot-password.txt" not in (ci_build / "SHA256SUMS").read_text()
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=ci_build, check=True)
    manifest = fm.read(ci_build / fm.FILENAME)
    assert manifest.format == fm.FORMAT
    assert manifest.profile.name == "ci"
    assert manifest.profile.digest == load_profile("ci").digest()
    assert set(manifest.roles) == {"base", "technician_ssh"}
    packages = {p.name for p in manifest.packages}
    assert {"systemd", "linux-image-amd64", "live-boot", "openssh-server", "locales"} <= packages
    for art in manifest.artifacts:
        assert (ci_build / art.name).stat().st_size == art.size
    squash = subprocess.run(["unsquashfs", "-s", str(ci_build / "filesystem.squashfs")],
                            capture_output=True, text=True, check=True).stdout
    assert "Compression zstd" in squash
    sbom = json.loads((ci_build / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert len(sbom["components"]) == len(manifest.packages)


def test_unchanged_rebuild_comes_from_the_cache(ci_build: Path) -> None:
    before = fm.read(ci_build / fm.FILENAME)
    proc = deelit("build", "ci", "--out", str(ci_build))
    for step in ("bootstrap", "configure", "finalize", "artifacts"):
        assert any(step in line and "(cached)" in line for line in proc.stdout.splitlines()), proc.stdout
    after = fm.read(ci_build / fm.FILENAME)
    assert after.build_id == before.build_id
    assert after.packages == before.packages


def test_role_change_reruns_that_role_only(ci_build: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the project with the last role touched (as a role edited in a checkout): the
    bootstrap and the layer of the role before it come from the cache, only the touched role
    runs again."""
    original = fm.read(ci_build / fm.FILENAME)
    # the copy is no git checkout: give it the time the checkout's build had
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(original.source_date_epoch))
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(PROJECT_ROOT / "roles", project / "roles")
    shutil.copytree(PROJECT_ROOT / "collections", project / "collections")
    last = load_profile("ci").roles[-1].name
    with (project / "roles" / last / "defaults" / "main.yml").open("a") as f:
        f.write("# touched by test_role_change_reruns_that_role_only\n")
    ran: dict[str, bool] = {}
    cache = Cache()
    ctx = pipeline.prepare(load_profile("ci"), tmp_path / "out", cache, project=project)
    for kind, key in (("layer", ctx.keys.layers[-1]), ("tree", ctx.keys.tree),
                      ("artifacts", ctx.keys.artifacts)):
        cache.evict(kind, key)  # an earlier run of this test on this machine may have left them
    ctx.tree = None  # prepare() looked the tree up before it was evicted
    pipeline.run(ctx, lambda name, _s, cached: ran.__setitem__(name, cached))
    assert ran == {"bootstrap": True, "configure": False, "finalize": False, "artifacts": False,
                   "manifest": False}
    assert ctx.cached_layers == [r.name for r in load_profile("ci").roles[:-1]]
    assert "TASK [base : " not in ctx.log.read_text()  # the first role did not run again
    rebuilt = fm.read(tmp_path / "out" / fm.FILENAME)
    assert rebuilt.cache_keys.bootstrap == original.cache_keys.bootstrap
    assert rebuilt.roles[last] != original.roles[last]
    assert rebuilt.roles["base"] == original.roles["base"]
    assert {p.name for p in rebuilt.packages} == {p.name for p in original.packages}


def test_the_console_types_the_profiles_keyboard(ci_build: Path) -> None:
    """The console keymap cached in the image is the profile's (Belgian AZERTY: the first letter
    key of the top row, keycode 16, gives 'a'), not debconf's US default from the package's
    install: the first-boot dialog on tty1 takes the parent's password with it."""
    ctx = pipeline.prepare(load_profile("ci"), ci_build.parent / "kbd-out", Cache())
    shutil.rmtree(ctx.work, ignore_errors=True)
    assert ctx.tree is not None, "the ci tree should be in the cache after ci_build"
    assert 'XKBLAYOUT="be"' in (ctx.tree / "etc/default/keyboard").read_text()
    kmap = gzip.decompress((ctx.tree / "etc/console-setup/cached_UTF-8_del.kmap.gz").read_bytes())
    line = next(ln for ln in kmap.decode().splitlines() if ln.split()[:2] == ["keycode", "16"])
    assert line.split()[3] == "+U+0061", line[:60]


def test_roles_are_idempotent_on_the_built_tree(ci_build: Path) -> None:
    """The profile's whole playbook run again over the finished tree (as one more layer on top
    of it, so the cached tree stays as it is) changes nothing."""
    cache = Cache()
    prof = load_profile("ci")
    ctx = pipeline.prepare(prof, ci_build.parent / "idem-out", cache)
    assert ctx.tree is not None, "the ci tree should be in the cache after ci_build"
    upper = ctx.work / "idempotence"
    upper.mkdir()
    try:
        configure.run_playbook(ctx, [ctx.tree], upper, prof.roles, step="idempotence")
        recap = ctx.log.read_text().rsplit("PLAY RECAP", 1)[1]
        assert " changed=0 " in recap and " failed=0 " in recap, recap
    finally:
        shutil.rmtree(ctx.work, ignore_errors=True)


def test_netboot_artifacts_also_boot_from_a_local_file(ci_build: Path, tmp_path: Path) -> None:
    """live-boot finds live/filesystem.squashfs on an attached disk: no network fetch."""
    import testinfra

    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    console = tmp_path / "console.log"
    spec = VMSpec(artifact=ci_build, media="local", console_log=console,
                  ssh_pubkey=key.with_suffix(".pub").read_text())
    with VM(spec) as vm:
        try:
            vm.wait_for_ssh(900)
        except TimeoutError:
            pytest.fail(f"no SSH; console tail:\n{console.read_text(errors='replace')[-3000:]}")
        host = testinfra.get_host(f"paramiko://root@127.0.0.1:{vm.ssh_port}?timeout=120",
                                  ssh_identity_file=str(key))
        assert "fetch=" not in host.file("/proc/cmdline").content_string
        medium = host.check_output("findmnt -n -o SOURCE /run/live/medium")
        assert medium.startswith("/dev/vd"), medium
