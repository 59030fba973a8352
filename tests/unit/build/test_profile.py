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
    assert sorted(lines[1:]) == sorted([
        f"  {path}: pacakges: unknown key; did you mean packages?",
        f"  {path}: suite: Input should be 'trixie' or 'bookworm'",
        f"  {path}: roles[1].varz: unknown key; did you mean vars?",
    ])


def test_a_screenful_of_problems_then_a_count(tmp_path: Path) -> None:
    path = write(tmp_path, "many", "".join(f"key{i}: 1\n" for i in range(25)))
    with pytest.raises(DeelitError) as info:
        load_profile(str(path), images_dir=tmp_path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 25 problems:" and len(lines) == 1 + 20 + 1
    assert lines[-1] == "  … and 5 more"


@pytest.mark.parametrize("text", ["", "\n\n", " \t\n\t \n", "# only a comment\n", "---\n", "{}\n"])
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


def test_role_entries_may_be_bare_names_as_in_ansible(images: Path) -> None:
    path = write(images, "bare", "extends: parent\nroles:\n  - base\n  - firmware\n")
    prof = load_profile(str(path), images_dir=images)
    assert [(r.name, r.vars) for r in prof.roles] == [
        ("base", {"base_network": "networkd", "base_extra_packages": ["a"]}), ("firmware", {})]


@pytest.mark.parametrize(
    ("roles_yaml", "expected"),
    [
        ("  - {vars: {}}\n", "roles[0]: names no role; write role: NAME (as Ansible does) or name: NAME"),
        ("  - 3\n", "roles[0]: must be a role's name or a mapping with role: (and vars:), not 3"),
        ("  - role: [base]\n", "roles[0].role: Input should be a valid string"),
        ("  - role: Base\n", "roles[0].role: role 'Base' does not exist in "),
        ("  - Base\n", "roles[0]: role 'Base' does not exist in "),
        ("  - {rolee: base}\n", "roles[0].rolee: unknown key; did you mean role?"),
        ("  - role: base\n    base_network: none\n",
         "roles[0].base_network: unknown key; base_network is a variable of role base: set it under vars:"),
        ("  - role: base\n    tags: [x]\n", "roles[0].tags: unknown key; allowed: role (or name), vars"),
    ],
)
def test_a_bad_role_entry_is_named_as_it_was_written(tmp_path: Path, roles_yaml: str, expected: str) -> None:
    path = write(tmp_path, "entry", f"roles:\n{roles_yaml}")
    with pytest.raises(DeelitError) as info:
        load_profile(str(path), images_dir=tmp_path)
    assert str(info.value).startswith(f"{path}: {expected}")
    assert "\n" not in str(info.value)  # one mistake, one line


def test_an_unknown_role_suggests_the_closest_one(tmp_path: Path) -> None:
    path = write(tmp_path, "typo", "roles:\n  - role: firmwre\n")
    with pytest.raises(DeelitError, match=r"role 'firmwre' does not exist in .*/; did you mean firmware\?$"):
        load_profile(str(path), images_dir=tmp_path)


def test_role_and_name_that_disagree_are_listed_with_the_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "clash2", "pacakges: [vim]\nroles:\n  - {role: base, name: firmware}\n")
    with pytest.raises(DeelitError) as info:
        load_profile(str(path), images_dir=tmp_path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 2 problems:"
    assert f"  {path}: pacakges: unknown key; did you mean packages?" in lines
    assert f"  {path}: roles[0]: role: 'base' and name: 'firmware' disagree; keep one of them" in lines


def test_problems_of_every_file_of_the_chain_are_listed_each_with_its_file(images: Path) -> None:
    parent = write(images, "badbase", "suite: sid\nroles:\n  - role: firmware\n"
                   "    vars: {firmware_microcod: true}\n")
    child = write(images, "badchild", "extends: badbase\npacakges: [vim]\nroles:\n  - role: base\n"
                  "    vars: {base_netwrok: none}\n")
    with pytest.raises(DeelitError) as info:
        load_profile(str(child), images_dir=images)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{child}: 4 problems:"
    assert lines[1:] == [  # the file asked for first, then what it extends
        f"  {child}: pacakges: unknown key; did you mean packages?",
        f"  {child}: roles[0].vars: role base: variable base_netwrok is not in "
        "roles/base/meta/argument_specs.yml; did you mean base_network?",
        f"  {parent}: suite: Input should be 'trixie' or 'bookworm'",
        f"  {parent}: roles[0].vars: role firmware: variable firmware_microcod is not in "
        "roles/firmware/meta/argument_specs.yml; did you mean firmware_microcode?",
    ]


def test_a_broken_parent_is_listed_with_the_childs_problems(images: Path) -> None:
    parent = write(images, "emptyparent", "\n")
    child = write(images, "orphan", "extends: emptyparent\nsuite: sid\n")
    with pytest.raises(DeelitError) as info:
        load_profile(str(child), images_dir=images)
    assert str(info.value).splitlines()[1:] == [
        f"  {child}: suite: Input should be 'trixie' or 'bookworm'",
        f"  {parent}: the profile is empty; a profile names at least what it extends or its roles "
        "(see images/ci.yaml)",
    ]


def test_null_resets_a_role_variable_and_a_key_to_its_default(images: Path) -> None:
    child = write(images, "resets", "extends: parent\nroles:\n  - role: base\n"
                  "    vars: {base_network: null}\n")
    assert load_profile(str(child), images_dir=images).roles[0].vars == {"base_extra_packages": ["a"]}
    alone = write(images, "alone", "suite: null\nroles:\n  - role: base\n    vars: {base_network: null}\n"
                  "  - role: firmware\n    vars: null\n")
    prof = load_profile(str(alone), images_dir=images)
    assert prof.suite == "trixie" and [(r.name, r.vars) for r in prof.roles] == [("base", {}), ("firmware", {})]
    reset = write(images, "resetvars", "extends: parent\nroles:\n  - {role: base, vars: null}\n")
    assert load_profile(str(reset), images_dir=images).roles[0].vars == {}


@pytest.fixture
def spec_roles(tmp_path: Path) -> Path:
    """A role whose argument spec uses each simple type, choices and a required option."""
    role = tmp_path / "roles" / "demo"
    (role / "tasks").mkdir(parents=True)
    (role / "tasks" / "main.yml").write_text("---\n[]\n")
    (role / "defaults").mkdir()
    (role / "defaults" / "main.yml").write_text("demo_count: 1\n")
    (role / "meta").mkdir()
    (role / "meta" / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    options:\n"
        "      demo_name: {type: str, required: true}\n"
        "      demo_count: {type: int, required: true}\n"  # required, but defaults/ sets it
        "      demo_on: {type: bool}\n"
        "      demo_dir: {type: path}\n"
        "      demo_map: {type: dict}\n"
        "      demo_items: {type: list, elements: int}\n"
        "      demo_mode: {choices: [fast, safe]}\n"  # type defaults to str, as in Ansible
    )
    return tmp_path / "roles"


@pytest.mark.parametrize(
    ("vars_yaml", "expected"),
    [
        ("{demo_name: 5}", "variable demo_name must be of type str, not int (5)"),
        ("{demo_count: '5'}", "variable demo_count must be of type int, not str ('5')"),
        ("{demo_count: true}", "variable demo_count must be of type int, not bool (True)"),
        ("{demo_on: 'no'}", "variable demo_on must be of type bool (true or false, unquoted), not str ('no')"),
        ("{demo_dir: [a]}", "variable demo_dir must be of type path, not list (['a'])"),
        ("{demo_map: [a]}", "variable demo_map must be of type dict, not list (['a'])"),
        ("{demo_items: [1, x]}", "variable demo_items item 1 must be of type int, not str ('x')"),
        ("{demo_mode: slow}", "variable demo_mode must be one of fast, safe, not 'slow'"),
        ("{demo_nmae: x}", "variable demo_nmae is not in roles/demo/meta/argument_specs.yml; did you mean demo_name?"),
    ],
)
def test_each_simple_type_of_an_argument_spec(spec_roles: Path, vars_yaml: str, expected: str) -> None:
    path = write(spec_roles.parent, "typed", f"roles:\n  - role: demo\n    vars: {vars_yaml}\n")
    with pytest.raises(DeelitError) as info:
        load_profile(str(path), images_dir=spec_roles.parent, roles_dir=spec_roles)
    assert str(info.value) == f"{path}: roles[0].vars: role demo: {expected}"


def test_a_required_option_missing_from_the_whole_profile(spec_roles: Path) -> None:
    images = spec_roles.parent
    parent = write(images, "needs", "roles:\n  - role: demo\n")
    with pytest.raises(DeelitError) as info:
        load_profile(str(parent), images_dir=images, roles_dir=spec_roles)
    assert str(info.value) == (f"{parent}: roles: role demo: variable demo_name is required "
                               "(roles/demo/meta/argument_specs.yml); set it in the role's vars:")
    # a parent may leave it to the profiles that extend it
    child = write(images, "gives", "extends: needs\nroles:\n  - role: demo\n"
                  "    vars: {demo_name: x, demo_on: true, demo_dir: /srv, demo_map: {a: 1}, "
                  "demo_items: [1, 2], demo_mode: safe, demo_count: 2}\n")
    assert load_profile(str(child), images_dir=images, roles_dir=spec_roles).roles[0].vars["demo_name"] == "x"


def test_cli_quotes_a_pattern_in_an_error_verbatim(tmp_path: Path) -> None:
    """The console's markup must not eat `[a-z]` (or anything the user wrote in brackets)."""
    bad = write(tmp_path, "Bad", "name: Bad\nroles: [base]\n")
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli", "show", str(bad)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "name: String should match pattern '^[a-z][a-z0-9_-]{0,63}$'" in proc.stderr


def test_cli_show_prints_values_with_brackets_verbatim(tmp_path: Path) -> None:
    path = write(tmp_path, "brackets", "roles:\n  - role: base\n"
                 "    vars: {base_hostname_pattern: '[bold]pc[/bold]-{serial}'}\n")
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli", "show", str(path)],
                          capture_output=True, text=True, check=True)
    assert "[bold]pc[/bold]-{serial}" in proc.stdout
