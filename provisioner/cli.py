"""The `deelit` command line: arguments, progress and errors; the work is in the modules below."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from provisioner import profile as profiles
from provisioner.agent import commands as agent_commands
from provisioner.build import pipeline
from provisioner.build.cache import Cache
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
out = Console(soft_wrap=True)
cache_app = typer.Typer(help="Inspect and prune the build cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

CacheOpt = Annotated[
    Path | None, typer.Option("--cache", help="cache folder (default $DEELIT_CACHE or ~/.cache/deelit)")
]


@app.command("profiles")
def list_profiles() -> None:
    """List the profiles in images/."""
    for name in profiles.list_profiles():
        prof = profiles.load_profile(name)
        out.print(f"[bold]{name:<12}[/] {prof.description}", highlight=False)


@app.command("show")
def show(profile: Annotated[str, typer.Argument(help="profile name or YAML path")]) -> None:
    """Print the resolved profile (after `extends`), as YAML."""
    prof = profiles.load_profile(profile)
    out.print(yaml.safe_dump(prof.model_dump(mode="json"), sort_keys=False), highlight=False)


@app.command("build")
def build(
    profile: Annotated[str, typer.Argument(help="profile name in images/ or a YAML path")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default out/PROFILE)")] = None,
    cache: CacheOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="stream mmdebstrap and Ansible")] = False,
) -> None:
    """Build an image: bootstrap, configure, finalize, artifacts, manifest."""
    prof = profiles.load_profile(profile)
    target = out_dir or Path("out") / prof.name
    ctx = pipeline.prepare(prof, target.absolute(), Cache(cache), verbose=verbose)
    out.print(f"building [bold]{prof.name}[/] -> {target}  (log: {ctx.log})", highlight=False)

    def step_done(name: str, seconds: float, cached: bool) -> None:
        note = " [dim](cached)[/]" if cached else ""
        out.print(f"  [green]✓[/] {name:<10} {seconds:7.1f} s{note}", highlight=False)

    with err.status("building…") as status:
        def on_step(name: str, seconds: float, cached: bool) -> None:
            step_done(name, seconds, cached)
            status.update(f"after {name}…")
        pipeline.run(ctx, on_step)
    manifest = json.loads((target / "manifest.json").read_text())
    out.print(f"[bold]{manifest['build_id']}[/]: {len(manifest['packages'])} packages", highlight=False)
    for art in manifest["artifacts"]:
        out.print(f"  {art['name']:<24} {art['size'] / 1e6:9.1f} MB  {art['sha256'][:16]}", highlight=False)


@cache_app.command("list")
def cache_list(cache: CacheOpt = None) -> None:
    """List cache entries: kind, key, profile, size, last use."""
    import datetime as dt

    table = Table("kind", "key", "profile", "size", "last used")
    for entry in Cache(cache).entries():
        used = dt.datetime.fromtimestamp(entry.last_used).strftime("%Y-%m-%d %H:%M")
        table.add_row(entry.kind, entry.key[:16], str(entry.meta.get("profile", "")),
                      f"{entry.size / 1e6:.0f} MB", used)
    out.print(table)


@cache_app.command("prune")
def cache_prune(
    cache: CacheOpt = None,
    older_than: Annotated[float | None, typer.Option(help="only entries unused this many days")] = None,
) -> None:
    """Remove cache entries (all, or those unused for --older-than days)."""
    removed = Cache(cache).prune(older_than)
    out.print(f"removed {len(removed)} entries")

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
