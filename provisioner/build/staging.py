"""Role inputs generated from this checkout before a build plans its cache keys.

The `installer` role carries the laptop-side agent (roles/installer/files/agent/, ignored by
git). `prepare` stages it on every build of a profile with that role, so the role's digest,
and therefore the build cache, follows the agent's code with no manual step.

Only what runs on the laptop goes in (the agent with its own CLI, deelit's file formats: the
block map and the manifest, the error type). The image runs it with Debian's python3 and
python3-pydantic/-yaml/-typer/-rich; pySMART (pure Python, not packaged by Debian) is copied
from this Python's installed copy.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

from provisioner.errors import DeelitError
from provisioner.profile import PROJECT_ROOT, Profile

PACKAGE = PROJECT_ROOT / "provisioner"
AGENT_STAGE = Path("installer") / "files" / "agent"  # under the roles folder
FILES = ["__init__.py", "errors.py"]
PACKAGES = ["formats", "agent"]  # whole: formats imports only errors (see formats/__init__.py)


def agent_files(package: Path = PACKAGE) -> list[Path]:
    found = [package / f for f in FILES]
    for sub in PACKAGES:
        found += sorted(p for p in (package / sub).iterdir() if p.suffix in (".py", ".yaml"))
    return found


def stage_agent(dest: Path = PROJECT_ROOT / "roles" / AGENT_STAGE, package: Path = PACKAGE) -> Path:
    """Copies the agent into dest/provisioner/, replacing what was there; returns dest."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for src in agent_files(package):
        target = tmp / "provisioner" / src.relative_to(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    # pySMART is pure Python and not in Debian: its installed copy goes along (its own
    # dependencies, chardet and humanfriendly, come from Debian in the role).
    spec = importlib.util.find_spec("pySMART")
    if spec is None or spec.origin is None:
        raise DeelitError("pySMART is not installed in this Python: run `make setup`")
    shutil.copytree(Path(spec.origin).parent, tmp / "pySMART",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# role name -> what stages its generated inputs, given the roles folder
STAGERS: dict[str, Callable[[Path], object]] = {
    "installer": lambda roles: stage_agent(roles / AGENT_STAGE),
}


def stage_role_inputs(profile: Profile, roles_dir: Path) -> list[str]:
    """Stages the generated inputs of the profile's roles; returns the roles staged."""
    staged = []
    for role in profile.roles:
        stager = STAGERS.get(role.name)
        if stager is not None and (roles_dir / role.name).is_dir():
            stager(roles_dir)
            staged.append(role.name)
    return staged


if __name__ == "__main__":
    print(stage_agent())
