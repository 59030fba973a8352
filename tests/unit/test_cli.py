"""The `deelit` entry point: every area's commands are there, and a command loads only its area."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from provisioner.cli import AREAS, make_app

REPO = Path(__file__).resolve().parents[2]


def _commands(app: typer.Typer) -> set[str]:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return set(group.commands)


@pytest.mark.parametrize("module", sorted(AREAS))
def test_table_names_what_each_area_registers(module: str) -> None:
    app = typer.Typer()
    app.callback()(lambda: None)
    importlib.import_module(module).register(app)
    assert _commands(app) == set(AREAS[module])


def test_full_app_has_every_command_once() -> None:
    names = [n for names in AREAS.values() for n in names]
    assert len(names) == len(set(names))
    assert _commands(make_app()) == set(names)


def test_one_command_app_stays_a_group() -> None:
    """fleet brings a single group: `deelit fleet apply` must still need the word `fleet`."""
    assert _commands(make_app("fleet")) == {"fleet"}


def _loaded_after(*argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    code = ("import sys\n"
            "sys.argv = ['deelit', *sys.argv[1:]]\n"
            "from provisioner.cli import main\n"
            "try:\n"
            "    main()\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('\\nMODULES', ' '.join(sorted(sys.modules)))\n")
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         cwd=REPO, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})
    line = next(x for x in res.stdout.splitlines() if x.startswith("MODULES "))
    return res, set(line.split()[1:])


def test_flash_does_not_load_the_build_area() -> None:
    res, mods = _loaded_after("flash", "--help")
    assert "--verify-only" in res.stdout
    assert "provisioner.flash.commands" in mods
    assert not {"provisioner.build.pipeline", "provisioner.profile", "jinja2",
                "provisioner.registry.commands"} & mods


def test_build_loads_the_build_area_only() -> None:
    res, mods = _loaded_after("build", "--help")
    assert "--cache" in res.stdout
    assert "provisioner.build.pipeline" in mods
    assert "provisioner.flash.commands" not in mods


def test_unknown_command_lists_every_area() -> None:
    res, mods = _loaded_after("nonsense")
    assert "No such command 'nonsense'" in res.stderr
    assert all(m in mods for m in AREAS)
