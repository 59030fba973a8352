"""Step `configure`: the profile's Ansible roles run into the tree over the chroot connection.

Each role runs as its own layer (layers.py) over the bootstrap and the roles before it, so a
change to one role reruns that role and the ones after it. The playbook is generated from the
profile with Jinja2; the finished tree is the layers merged by hard links.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from provisioner.build import layers
from provisioner.build.context import BuildContext
from provisioner.build.runner import StepFailed
from provisioner.profile import Profile, RoleRef

_templates = Environment(
    loader=PackageLoader("provisioner.build", "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def play_vars(profile: Profile, debian_mirror: str, security_mirror: str | None) -> dict[str, Any]:
    """The variables every role sees (the laptop's own apt sources among them)."""
    return {
        "deelit_profile": profile.name, "deelit_suite": profile.suite,
        "deelit_architecture": profile.architecture, "deelit_components": profile.components,
        "deelit_mirror": debian_mirror, "deelit_security_mirror": security_mirror,
        "deelit_locale": profile.locale, "deelit_keyboard": profile.keyboard,
        "deelit_timezone": profile.timezone, "deelit_hostname": profile.hostname,
    }


def render_playbook(ctx: BuildContext, roles: list[RoleRef] | None = None) -> str:
    return _templates.get_template("playbook.yml.j2").render(
        profile=ctx.profile, profile_digest=ctx.profile.digest(),
        roles=ctx.profile.roles if roles is None else roles,
        play_vars=play_vars(ctx.profile, ctx.image_mirrors.debian, ctx.image_mirrors.security),
    )


def ansible_env(ctx: BuildContext) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "ANSIBLE_CONFIG": str(_empty_config(ctx.work)),  # no stray ansible.cfg from elsewhere
        "ANSIBLE_ROLES_PATH": str(ctx.roles_dir),
        "ANSIBLE_COLLECTIONS_PATH": str(ctx.collections_dir),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_REMOTE_TMP": "/tmp/.ansible-tmp",
        "ANSIBLE_LOCAL_TEMP": str(ctx.work / "ansible-local"),
        "ANSIBLE_HOME": str(ctx.work / "ansible-home"),
        "DEBIAN_FRONTEND": "noninteractive",
    }


def _empty_config(work: Path) -> Path:
    cfg = work / "ansible.cfg"
    cfg.write_text("# deelit: settings come from the environment\n[defaults]\n")
    return cfg


def failed_task(log: Path) -> str | None:
    """Names the Ansible task that failed, with its message, from the run's output."""
    task, text = None, log.read_text(errors="replace")
    for line in text.splitlines():
        started = re.match(r"^TASK \[(.+?)\]", line)
        if started:
            task = started.group(1)
        elif re.match(r"^(fatal|failed): \[", line):
            msg = re.search(r'"msg": "((?:[^"\\]|\\.)*)"', line)
            stderr = re.search(r'"stderr": "((?:[^"\\]|\\.)*)"', line)
            parts = [m.group(1).replace("\\r\\n", " ").strip()[:300] for m in (msg, stderr) if m]
            detail = f": {' - '.join(p for p in parts if p)}" if parts else ""
            return f"Ansible task '{task}' failed{detail}"
    if "ERROR!" in text or "[ERROR]" in text:
        err = next(ln for ln in text.splitlines() if "ERROR" in ln)
        return f"ansible-playbook: {err.strip()[:300]}"
    return None


def run_playbook(ctx: BuildContext, lowers: list[Path], upper: Path, roles: list[RoleRef],
                 step: str = "configure") -> None:
    """Runs the given roles over the stack `lowers` (bottom first); their changes land in upper."""
    playbook = ctx.work / "playbook.yml"
    playbook.write_text(render_playbook(ctx, roles))
    argv = ["ansible-playbook", "-i", f"{ctx.work / 'merged'},", "-c", "community.general.chroot",
            *(["-v"] if ctx.verbose else []), str(playbook)]
    layers.run(ctx, lowers, upper, argv, env=ansible_env(ctx), step=step, on_failure=failed_task)


def configure(ctx: BuildContext) -> None:
    if ctx.tree is not None:
        ctx.cached.add("configure")
        return
    assert ctx.bootstrap_dir is not None
    stack: list[Path] = []
    for index, (role, key) in enumerate(zip(ctx.profile.roles, ctx.keys.layers, strict=True)):
        hit = ctx.cache.lookup("layer", key)
        if hit is None:
            upper = ctx.work / f"layer-{index}-{role.name}"
            upper.mkdir()
            run_playbook(ctx, [ctx.bootstrap_dir, *stack], upper, [role])
            hit = ctx.cache.store("layer", key, upper, {"profile": ctx.profile.name, "role": role.name,
                                                         "below": ctx.keys.layers[:index]})
        else:
            ctx.cached_layers.append(role.name)
        stack.append(hit)
    tree = ctx.work / "tree"
    try:
        layers.merge(ctx.bootstrap_dir, stack, tree)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise StepFailed("configure", f"merging the role layers into {tree}: {exc}", ctx.log) from None
    ctx.tree = tree
