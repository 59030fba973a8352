"""The `deelit` command line: arguments, progress and errors; the work is in the modules below."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from provisioner.agent import commands as agent_commands
from provisioner.errors import DeelitError
from provisioner.flash import commands as flash_commands
from provisioner.registry import commands as registry_commands

app = typer.Typer(
    help="deelit: build, deploy and register DEEL IT loan laptops.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)

for area in (flash_commands, agent_commands, registry_commands):
    area.register(app)


def main() -> None:
    """Console-script entry point: DeelitError becomes one red line and its exit code."""
    try:
        app()
    except DeelitError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
