"""The floors of DESIGN.md's layout hold: modules depend downward only.

Read from the source (every `import` and `from … import`, at any depth, TYPE_CHECKING ones
too), so a lazy import inside a function cannot sneak a dependency past the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "provisioner"

# area -> provisioner modules it must never import (prefix match on the dotted name)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "netboot": ("provisioner.build", "provisioner.vm", "provisioner.lab", "provisioner.fleet"),
    "agent": ("provisioner.build", "provisioner.netboot", "provisioner.registry", "provisioner.lab",
              "provisioner.flash", "provisioner.vm", "provisioner.fleet"),
    "registry": ("provisioner.build", "provisioner.netboot", "provisioner.lab", "provisioner.flash",
                 "provisioner.vm", "provisioner.agent"),
    "flash": ("provisioner.build", "provisioner.netboot", "provisioner.lab", "provisioner.registry",
              "provisioner.vm", "provisioner.agent"),
    "build": ("provisioner.netboot", "provisioner.lab", "provisioner.registry", "provisioner.flash",
              "provisioner.agent"),
}
# Only the lab itself and the command table may reach the top floor.
LAB_USERS = ("provisioner/lab/", "provisioner/cli.py")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith("provisioner")}


def modules(area: str) -> list[Path]:
    return sorted((PACKAGE / area).rglob("*.py"))


@pytest.mark.parametrize("area", sorted(FORBIDDEN))
def test_area_imports_nothing_above_or_beside_it(area: str) -> None:
    bad = {f"{p.relative_to(PACKAGE.parent)}: {name}"
           for p in modules(area) for name in imported(p)
           if name.startswith(FORBIDDEN[area])}
    assert not bad, sorted(bad)


def test_formats_is_the_ground_floor() -> None:
    """Every stage reads the project's formats, and the agent ships them inside the image."""
    bad = {f"{p.relative_to(PACKAGE.parent)}: {name}" for p in modules("formats")
           for name in imported(p)
           if not name.startswith(("provisioner.formats", "provisioner.errors"))}
    assert not bad, sorted(bad)


def test_nothing_below_the_lab_imports_it() -> None:
    bad = {f"{p.relative_to(PACKAGE.parent)}: {name}"
           for p in PACKAGE.rglob("*.py")
           if not str(p.relative_to(PACKAGE.parent)).startswith(LAB_USERS)
           for name in imported(p) if name.startswith("provisioner.lab")}
    assert not bad, sorted(bad)


def test_the_checker_sees_lazy_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from provisioner.build import pipeline\n    import provisioner.vm\n")
    assert {"provisioner.build", "provisioner.build.pipeline", "provisioner.vm"} <= imported(src)
