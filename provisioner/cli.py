"""The `deelit` command line: each area registers its own commands; this puts them together.

`main` imports only the area that the command line names. Imports are most of a short run's
time (the build area alone pulls in pydantic models, Jinja and the pipeline), and `deelit
flash`, `deelit agent …` and scripts calling `deelit registry` should not wait for them.
`deelit --help` and anything unknown load every area, so help and errors list all commands.
"""

from __future__ import annotations

import importlib
import sys

import typer

from provisioner.errors import DeelitError

# Module -> the top-level commands and groups its `register(app)` adds, in help order.
# tests/unit/test_cli.py checks this table against what each module registers.
AREAS: dict[str, tuple[str, ...]] = {
    "provisioner.build.commands": ("profiles", "show", "build", "boot", "verify", "cache"),
    "provisioner.build.sign_commands": ("sign",),
    "provisioner.flash.commands": ("flash", "bmap"),
    "provisioner.agent.commands": ("agent",),
    "provisioner.registry.commands": ("registry",),
    "provisioner.registry.certificate_commands": ("certificate",),
    "provisioner.netboot.commands": ("serve", "station", "stick"),
    "provisioner.fleet": ("fleet",),
    "provisioner.lab.commands": ("demo",),
}


def _root() -> None:
    """deelit: build, deploy and register DEEL IT loan laptops."""


def make_app(command: str | None = None) -> typer.Typer:
    """The CLI with every area, or with only the area that registers `command`."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                      add_completion=False)
    # A callback keeps `deelit` a group even when one area brings a single command.
    app.callback()(_root)
    for module, names in AREAS.items():
        if command is None or command in names:
            importlib.import_module(module).register(app)
    return app


def main() -> None:
    """Console-script entry point: DeelitError becomes one red line and its exit code."""
    first = sys.argv[1] if len(sys.argv) > 1 else None
    known = any(first in names for names in AREAS.values())
    try:
        make_app(first if known else None)()
    except DeelitError as exc:
        from rich.console import Console  # only now: a --json run never draws anything
        from rich.markup import escape

        # escaped: a message quotes what the user wrote (and patterns like [a-z]) verbatim
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                                   soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
