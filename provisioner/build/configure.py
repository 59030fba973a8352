"""Step `configure`: the profile's Ansible roles run into the tree over the chroot connection.

The playbook is generated from the profile with Jinja2. ansible-playbook runs in a private
mount namespace with /proc, /sys, /dev and /run mounted into the tree: when the process ends,
for any reason, the kernel drops those mounts, so a failed build leaves nothing mounted.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from provisioner.build.context import BuildContext
from provisioner.build.runner import run_logged

_templates = Environment(
    loader=PackageLoader("provisioner.build", "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)

# Mounts the API filesystems inside the namespace, then runs the command.
_NAMESPACE_SCRIPT = r"""
set -e
t=$1; shift
mount -t proc proc "$t/proc"
mount -t sysfs sysfs "$t/sys"
mount --rbind /dev "$t/dev"
mount -t tmpfs -o mode=0755 tmpfs "$t/run"
exec "$@"
"""

# apt reads the build's sources from here while the roles run (see _build_only_files)
BUILD_APT_CONF = "etc/apt/apt.conf.d/00deelit-build-sources"
BUILD_APT_DIR = "etc/apt/deelit-build"
POLICY_RC_D = "#!/bin/sh\n# deelit build: no service starts while configuring the image\nexit 101\n"


def render_playbook(ctx: BuildContext) -> str:
    return _templates.get_template("playbook.yml.j2").render(
        profile=ctx.profile, profile_digest=ctx.profile.digest(), mirrors=ctx.image_mirrors
    )


def extract_tree(ctx: BuildContext) -> Path:
    assert ctx.bootstrap_tar is not None
    tree = ctx.work / "tree"
    tree.mkdir()
    run_logged(
        "configure",
        ["tar", "-xf", ctx.bootstrap_tar, "-C", tree, "--numeric-owner",
         "--xattrs", "--xattrs-include=*"],
        ctx.log,
    )
    return tree


def ansible_env(ctx: BuildContext) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "ANSIBLE_CONFIG": str(_empty_config(ctx.work)),  # no stray ansible.cfg from elsewhere
        "ANSIBLE_ROLES_PATH": str(ctx.roles_dir),
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


def run_playbook(ctx: BuildContext, tree: Path, step: str = "configure") -> None:
    """Runs the profile's generated playbook into tree; output goes to the build log."""
    playbook = ctx.work / "playbook.yml"
    playbook.write_text(render_playbook(ctx))
    playbook_argv = ["ansible-playbook", "-i", f"{tree},", "-c", "community.general.chroot",
                     *(["-v"] if ctx.verbose else []), str(playbook)]
    build_sources = ctx.mirrors.source_lines(ctx.profile.suite, ctx.profile.components)
    with _build_only_files(tree, build_sources):
        run_logged(
            step,
            ["unshare", "--mount", "--propagation", "private", "--fork", "--",
             "sh", "-c", _NAMESPACE_SCRIPT, "sh", tree, *playbook_argv],
            ctx.log,
            shown=playbook_argv,
            env=ansible_env(ctx),
            stream=ctx.verbose,
            on_failure=failed_task,
            cwd=ctx.work,
        )


def configure(ctx: BuildContext) -> None:
    if ctx.tree is not None:
        ctx.cached.add("configure")
        return
    tree = extract_tree(ctx)
    run_playbook(ctx, tree)
    ctx.tree = tree


class _build_only_files:
    """While Ansible runs: host DNS, a no-services policy, and apt pointed at the build's
    mirror (a café's apt cache, say) instead of the sources the roles write for the laptop;
    all gone afterwards, so the build's mirror never stays in the image."""

    def __init__(self, tree: Path, build_sources: list[str]) -> None:
        self.resolv = tree / "etc" / "resolv.conf"
        self.saved = tree / "etc" / ".resolv.conf.deelit-saved"
        self.policy = tree / "usr" / "sbin" / "policy-rc.d"
        self.apt_conf = tree / BUILD_APT_CONF
        self.apt_dir = tree / BUILD_APT_DIR
        self.build_sources = build_sources

    def __enter__(self) -> None:
        if self.resolv.exists() or self.resolv.is_symlink():
            os.rename(self.resolv, self.saved)
        shutil.copyfile("/etc/resolv.conf", self.resolv)
        self.host_dns = self.resolv.read_bytes()
        self.policy.write_text(POLICY_RC_D)
        self.policy.chmod(0o755)
        (self.apt_dir / "sources.list.d").mkdir(parents=True, exist_ok=True)
        (self.apt_dir / "sources.list").write_text("\n".join(self.build_sources) + "\n")
        self.apt_conf.write_text(
            f'Dir::Etc::SourceList "/{BUILD_APT_DIR}/sources.list";\n'
            f'Dir::Etc::SourceParts "/{BUILD_APT_DIR}/sources.list.d";\n')

    def __exit__(self, *exc: object) -> None:
        self.policy.unlink(missing_ok=True)
        self.apt_conf.unlink(missing_ok=True)
        shutil.rmtree(self.apt_dir, ignore_errors=True)
        role_changed_dns = self.resolv.is_symlink() or (
            self.resolv.exists() and self.resolv.read_bytes() != self.host_dns
        )
        if role_changed_dns:  # a role owns resolv.conf now (a local resolver): keep its file
            if self.saved.exists() or self.saved.is_symlink():
                self.saved.unlink()
            return
        self.resolv.unlink(missing_ok=True)
        if self.saved.exists() or self.saved.is_symlink():
            os.rename(self.saved, self.resolv)
