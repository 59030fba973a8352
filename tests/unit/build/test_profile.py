"""Profiles: extends merging, and every malformed profile named by file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.errors import DeelitError
from provisioner.profile import ROLES_DIR, list_profiles, load_profile, merge


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    write(tmp_path, "parent", "name: parent\npackages: [less]\nroles:\n  - name: base\n"
          "    vars: {base_network: networkd, base_extra_packages: [a]}\n")
    return tmp_path


def test_shipped_profiles_load() -> None:
    names = list_profiles()
    assert {"base", "ci", "pupil"} <= set(names)
    for name in names:
        assert load_profile(name).name == name


def test_ci_resolves_base_first() -> None:
    ci = load_profile("ci")
    assert [r.name for r in ci.roles][:2] == ["base", "technician_ssh"]
    assert ci.suite == "trixie" and ci.locale == "nl_BE.UTF-8" and ci.keyboard == "be"
    assert ci.outputs.netboot is not None and ci.outputs.netboot.compression_level == 3


def test_extends_appends_lists_merges_roles_and_null_resets(images: Path) -> None:
    child = write(images, "child", "extends: parent\npackages: [vim]\nsuite: bookworm\n"
                  "roles:\n  - name: base\n    vars: {base_extra_packages: [b]}\n"
                  "  - name: technician_ssh\noutputs: {netboot: null}\n")
    prof = load_profile(str(child), images_dir=images, roles_dir=ROLES_DIR)
    assert prof.packages == ["less", "vim"]
    assert prof.suite == "bookworm"
    assert [r.name for r in prof.roles] == ["base", "technician_ssh"]
    assert prof.roles[0].vars == {"base_network": "networkd", "base_extra_packages": ["a", "b"]}
    assert prof.outputs.netboot is None


def test_null_resets_a_list_to_its_default() -> None:
    assert merge({"packages": ["a"]}, {"packages": None}) == {}


def test_profile_by_path_and_by_name_agree() -> None:
    assert load_profile("ci") == load_profile(str(Path("images/ci.yaml").resolve()))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("suite: [unclosed\n", "invalid YAML at line"),
        ("colour: blue\n", "colour: unknown key; allowed: name, description"),
        ("outputs: {netboot: {level: 3}}\n", "outputs.netboot.level: unknown key; allowed: compression_level"),
        ("packages: vim\n", "packages: Input should be a valid list"),
        ("outputs: {netboot: {compression_level: 99}}\n", "outputs.netboot.compression_level: Input should be less than or equal to 22"),
        ("suite: sid\n", "suite: Input should be 'trixie' or 'bookworm'"),
        ("roles:\n  - name: base\n  - name: nosuchrole\n", "roles[1].name: role 'nosuchrole' does not exist"),
        ("extends: nowhere\n", "extends: profile 'nowhere' not found"),
        ("- just\n- a list\n", "(top level): must be a mapping"),
    ],
)
def test_malformed_profile_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "bad", text)
    with pytest.raises(DeelitError) as info:
        load_profile(str(path), images_dir=tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_error_in_parent_names_the_parent_file(images: Path) -> None:
    bad_parent = write(images, "badparent", "roles:\n  - name: base\n    extra: 1\n")
    child = write(images, "child", "extends: badparent\n")
    with pytest.raises(DeelitError, match=rf"^{bad_parent}: roles\[0\]\.extra: unknown key"):
        load_profile(str(child), images_dir=images)


def test_extends_cycle_is_named(tmp_path: Path) -> None:
    write(tmp_path, "a", "extends: b\n")
    write(tmp_path, "b", "extends: c\n")
    write(tmp_path, "c", "extends: a\n")
    with pytest.raises(DeelitError, match=r"extends: cycle a -> b -> c -> a"):
        load_profile("a", images_dir=tmp_path)


def test_cli_rejects_malformed_profile_and_writes_nothing(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad", "name: bad\nsuite: sid\n")
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "provisioner.cli", "build", str(bad), "--out", str(out),
         "--cache", str(cache)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "suite" in lines[0]
    assert not out.exists() and not cache.exists()
