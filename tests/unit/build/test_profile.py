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


# -- profiles speak Ansible --------------------------------------------------------------------


def test_role_entries_take_ansibles_role_key(images: Path) -> None:
    path = write(images, "ansible", "extends: parent\nroles:\n  - role: base\n"
                 "    vars: {base_extra_packages: [b]}\n  - {role: firmware}\n")
    prof = load_profile(str(path), images_dir=images)
    assert [r.name for r in prof.roles] == ["base", "firmware"]
    assert prof.roles[0].vars["base_extra_packages"] == ["a", "b"]  # merged by name, as with name:
    same = write(images, "both", "roles:\n  - {role: base, name: base}\n")
    assert [r.name for r in load_profile(str(same), images_dir=images).roles] == ["base"]


def test_role_and_name_that_disagree_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "clash", "roles:\n  - {role: base, name: firmware}\n")
    with pytest.raises(DeelitError, match=r"roles\[0\]: role: 'base' and name: 'firmware' disagree"):
        load_profile(str(path), images_dir=tmp_path)


def test_every_problem_is_shown_each_on_its_own_line(tmp_path: Path) -> None:
    """A misspelled top-level key is not hidden behind the other errors ("+2 more")."""
    path = write(tmp_path, "typos", "pacakges: [vim]\nsuite: sid\nroles:\n  - role: base\n"
                 "  - name: firmware\n    varz: {}\n")
    with pytest.raises(DeelitError) as info:
        load_profile(str(path), images_dir=tmp_path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 3 problems:"
    assert any(ln.startswith("  pacakges: unknown key; allowed: name,") for ln in lines)
    assert any(ln.startswith("  suite: Input should be 'trixie' or 'bookworm'") for ln in lines)
    assert any(ln.startswith("  roles[1].varz: unknown key") for ln in lines)
    assert "more" not in str(info.value)


def test_a_screenful_of_problems_then_a_count(tmp_path: Path) -> None:
    path = write(tmp_path, "many", "".join(f"key{i}: 1\n" for i in range(25)))
    with pytest.raises(DeelitError) as info:
        load_profile(str(path), images_dir=tmp_path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 25 problems:" and len(lines) == 1 + 20 + 1
    assert lines[-1] == "  … and 5 more"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "{}\n"])
def test_an_empty_profile_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "empty", text)
    with pytest.raises(DeelitError, match=rf"^{path}: the profile is empty"):
        load_profile(str(path), images_dir=tmp_path)


@pytest.mark.parametrize(
    ("vars_yaml", "expected"),
    [
        ("{base_netwrok: none}", "role base: variable base_netwrok is not in roles/base/meta/argument_specs.yml; did you mean base_network?"),
        ("{base_network: wifi}", "role base: variable base_network must be one of networkd, none, not 'wifi'"),
        ("{base_extra_packages: vim}", "role base: variable base_extra_packages must be of type list, not str ('vim')"),
        ("{base_extra_packages: [vim, 3]}", "role base: variable base_extra_packages item 1 must be of type str, not int (3)"),
    ],
)
def test_role_vars_are_checked_against_the_argument_spec_before_anything_runs(
        tmp_path: Path, vars_yaml: str, expected: str) -> None:
    path = write(tmp_path, "vars", f"roles:\n  - name: base\n    vars: {vars_yaml}\n")
    with pytest.raises(DeelitError) as info:
        load_profile(str(path), images_dir=tmp_path)
    assert str(info.value) == f"{path}: roles[0].vars: {expected}"


def test_a_bad_role_var_in_a_parent_names_the_parent(images: Path) -> None:
    parent = write(images, "varparent", "roles:\n  - name: firmware\n    vars: {firmware_microcod: true}\n")
    child = write(images, "varchild", "extends: varparent\n")
    with pytest.raises(DeelitError, match=rf"^{parent}: roles\[0\]\.vars: role firmware: variable "
                                          r"firmware_microcod .*did you mean firmware_microcode\?"):
        load_profile(str(child), images_dir=images)


def test_templated_role_vars_are_left_to_ansible(tmp_path: Path) -> None:
    path = write(tmp_path, "tpl", "roles:\n  - name: base\n    vars: {base_extra_packages: '{{ x }}'}\n")
    assert load_profile(str(path), images_dir=tmp_path).roles[0].vars["base_extra_packages"] == "{{ x }}"


def test_cli_build_of_a_misspelled_role_var_stops_before_anything_runs(tmp_path: Path) -> None:
    bad = write(tmp_path, "badvar", "extends: ci\nroles:\n  - role: technician_ssh\n"
                "    vars: {technician_ssh_accept_credentail: true}\n")
    out, cache = tmp_path / "out", tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli", "build", str(bad), "--out", str(out),
                           "--cache", str(cache)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "technician_ssh_accept_credentail" in proc.stderr and "did you mean" in proc.stderr
    assert str(bad) in proc.stderr and not out.exists() and not cache.exists()
