"""`python -m provisioner.flash`: the flash commands alone, as `deelit` runs them.

Tests and the benchmark use it to run the real command in a child process without loading
the other areas' commands.
"""

from __future__ import annotations

import sys

import typer

from provisioner.errors import DeelitError
from provisioner.flash.commands import register

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
register(app)


def main() -> None:
    try:
        app()
    except DeelitError as exc:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
