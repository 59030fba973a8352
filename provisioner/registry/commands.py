"""CLI commands of the registry area, registered on the main `deelit` app by cli.py."""

import typer


def register(app: typer.Typer) -> None:
    """Adds this area's commands to the main app (nothing yet)."""
