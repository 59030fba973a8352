"""deelit.laptop.files (collections/): the module the roles write their files with, run by the
real ansible-playbook over a local connection into a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.profile import COLLECTIONS_DIR

pytestmark = pytest.mark.skipif(shutil.which("python3", path="/usr/bin") is None,
                                reason="the module runs under the system's /usr/bin/python3")


def play(tmp: Path, task: dict[str, Any], *extra: str, env: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, Any]]:
    """Runs one task of role `r` (files/ and templates/ under tmp/roles/r); returns the exit
    status and the task's result as the json callback reports it."""
    (tmp / "roles/r/tasks").mkdir(parents=True, exist_ok=True)
    (tmp / "ansible.cfg").write_text("[defaults]\n")
    (tmp / "roles/r/tasks/main.yml").write_text(yaml.safe_dump([{"name": "Files", **task}]))
    (tmp / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False, "vars": {"greeting": "hallo"}, "roles": ["r"]}]))
    run = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-c", "local", "-i", "localhost,",
         str(tmp / "play.yml"), *extra],
        capture_output=True, text=True, cwd=tmp, check=False,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_DIR),
             "ANSIBLE_ROLES_PATH": str(tmp / "roles"), "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
             "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3", "ANSIBLE_LOCAL_TEMP": str(tmp / "lt"),
             "ANSIBLE_HOME": str(tmp / "home"), "ANSIBLE_CONFIG": str(tmp / "ansible.cfg"),
             **(env or {})})
    assert run.stdout.startswith("{"), run.stderr[-2000:]
    report = json.loads(run.stdout)
    return run.returncode, report["plays"][0]["tasks"][0]["hosts"]["localhost"]


@pytest.fixture
def role(tmp_path: Path) -> Path:
    files, templates = tmp_path / "roles/r/files", tmp_path / "roles/r/templates"
    (files / "tree/sub").mkdir(parents=True)
    templates.mkdir(parents=True)
    (files / "plain.txt").write_text("plain\n")
    (files / "picture.png").write_bytes(bytes(range(256)) * 8)  # not text: must arrive as is
    (files / "tree/run.sh").write_text("#!/bin/sh\n")
    (files / "tree/run.sh").chmod(0o755)
    (files / "tree/sub/data.txt").write_text("data\n")
    (templates / "t.j2").write_text("{{ greeting }} {{ who }}\n{% if true %}\nline\n{% endif %}\n")
    return tmp_path


def task_for(out: Path) -> dict[str, Any]:
    return {"deelit.laptop.files": {
        "directories": [str(out / "a"), {"path": str(out / "private"), "mode": "0700"}],
        "files": [
            {"src": "plain.txt", "dest": str(out / "a/plain.txt")},
            {"src": "picture.png", "dest": str(out / "a/picture.png"), "mode": "0600"},
            {"template": "t.j2", "dest": str(out / "private/t"), "vars": {"who": "{{ greeting | upper }}"}},
            {"content": "literal\n", "dest": str(out / "a/tool"), "mode": "0755"},
            {"src": "tree/", "dest": str(out / "tree")},
        ],
        "links": [{"src": "plain.txt", "dest": str(out / "a/link")}],
        "absent": [str(out / "gone")],
    }}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_writes_everything_then_changes_nothing(role: Path) -> None:
    out = role / "out"
    out.mkdir()
    (out / "gone").mkdir()
    (out / "gone/file").write_text("x")
    code, first = play(role, task_for(out))
    assert code == 0, first
    assert first["changed"] is True
    assert (out / "a/plain.txt").read_text() == "plain\n"
    assert (out / "a/picture.png").read_bytes() == bytes(range(256)) * 8
    assert mode(out / "a/picture.png") == 0o600 and mode(out / "a/plain.txt") == 0o644
    assert mode(out / "private") == 0o700 and mode(out / "a/tool") == 0o755
    assert (out / "private/t").read_text() == "hallo HALLO\nline\n"  # as template renders it
    assert os.readlink(out / "a/link") == "plain.txt"
    assert not (out / "gone").exists()
    assert (out / "tree/sub/data.txt").read_text() == "data\n"
    assert mode(out / "tree/run.sh") == 0o755 and mode(out / "tree/sub/data.txt") == 0o644
    assert mode(out / "tree/sub") == 0o755
    code, second = play(role, task_for(out))
    assert code == 0 and second["changed"] is False and second["changed_paths"] == []


def test_renders_as_ansible_builtin_template(role: Path) -> None:
    out = role / "out"
    out.mkdir()
    code, _ = play(role, {"ansible.builtin.template": {"src": "t.j2", "dest": str(out / "builtin")},
                          "vars": {"who": "HALLO"}})
    assert code == 0
    code, _ = play(role, {"deelit.laptop.files": {"files": [
        {"template": "t.j2", "dest": str(out / "ours"), "vars": {"who": "HALLO"}}]}})
    assert code == 0
    assert (out / "ours").read_bytes() == (out / "builtin").read_bytes()


def test_reports_exactly_what_it_changed(role: Path) -> None:
    out = role / "out"
    out.mkdir()
    assert play(role, task_for(out))[0] == 0
    (out / "a/plain.txt").write_text("edited by hand\n")
    (out / "a/picture.png").chmod(0o644)
    (out / "a/link").unlink()
    (out / "a/link").write_text("a file where the link was\n")
    code, result = play(role, task_for(out))
    assert code == 0
    assert result["changed_paths"] == [str(out / "a/plain.txt"), str(out / "a/picture.png"),
                                       str(out / "a/link")]
    assert (out / "a/plain.txt").read_text() == "plain\n" and mode(out / "a/picture.png") == 0o600
    assert os.readlink(out / "a/link") == "plain.txt"


def test_a_link_in_the_files_place_is_replaced_not_followed(role: Path) -> None:
    out = role / "out"
    out.mkdir()
    (out / "target").write_text("plain\n")  # same bytes: following the link would see no change
    (out / "resolv").symlink_to(out / "target")
    code, result = play(role, {"deelit.laptop.files": {"files": [
        {"src": "plain.txt", "dest": str(out / "resolv")}]}})
    assert code == 0 and result["changed"] is True
    assert not (out / "resolv").is_symlink() and (out / "resolv").read_text() == "plain\n"


def test_invalid_content_leaves_the_file_as_it_was(role: Path) -> None:
    out = role / "out"
    out.mkdir()
    (out / "conf").write_text("old\n")
    code, result = play(role, {"deelit.laptop.files": {"files": [
        {"content": "new\n", "dest": str(out / "conf"), "validate": "grep -q valid %s"}]}})
    assert code != 0 and result["failed"] is True
    assert str(out / "conf") in result["msg"] and "unchanged" in result["msg"]
    assert (out / "conf").read_text() == "old\n"
    assert sorted(p.name for p in out.iterdir()) == ["conf"]  # no temporary file left


def test_check_mode_reports_and_writes_nothing(role: Path) -> None:
    out = role / "out"
    out.mkdir()
    code, result = play(role, task_for(out), "--check")
    assert code == 0 and result["changed"] is True
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(("entry", "message"), [
    ({"dest": "/x"}, "exactly one of src, template, content"),
    ({"dest": "/x", "src": "plain.txt", "content": "y"}, "exactly one of src, template, content"),
    ({"dest": "/x", "content": "y", "modes": "0644"}, "unknown keys ['modes']"),
    ({"dest": "/x", "src": "missing.txt"}, "missing.txt"),
    ({"dest": "/x", "src": "plain.txt/"}, "not a folder"),
])
def test_bad_entries_are_named(role: Path, entry: dict[str, str], message: str) -> None:
    code, result = play(role, {"deelit.laptop.files": {"files": [entry]}})
    assert code != 0 and message in result["msg"]


def test_a_file_whose_folder_is_missing_is_refused(role: Path) -> None:
    dest = role / "nowhere/file"
    code, result = play(role, {"deelit.laptop.files": {"files": [{"content": "x", "dest": str(dest)}]}})
    assert code != 0 and str(dest) in result["msg"] and "directories" in result["msg"]
    assert not dest.parent.exists()
