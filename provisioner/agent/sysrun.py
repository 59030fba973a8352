"""Running the device tools (dmidecode, lsblk, smartctl, nvme, hdparm) with clear failures."""

from __future__ import annotations

import shutil
import subprocess

from provisioner.errors import DeelitError

DEBIAN_PACKAGE = {
    "dmidecode": "dmidecode",
    "lsblk": "util-linux",
    "blockdev": "util-linux",
    "smartctl": "smartmontools",
    "nvme": "nvme-cli",
    "hdparm": "hdparm",
}


def run(
    argv: list[str], *, check: bool = True, timeout: float | None = 600
) -> subprocess.CompletedProcess[str]:
    """Run a tool; a missing tool or a failure becomes a DeelitError naming the command."""
    tool = argv[0]
    if shutil.which(tool) is None:
        package = DEBIAN_PACKAGE.get(tool, tool)
        raise DeelitError(f"`{tool}` is not installed: install the Debian package {package}")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DeelitError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise DeelitError(
            f"`{' '.join(argv)}` failed with exit status {proc.returncode}"
            + (f": {detail[-1]}" if detail else "")
        )
    return proc


def tool_version(argv: list[str]) -> str:
    """First line of `tool --version`-style output, for the certificate; 'unknown' if absent."""
    try:
        proc = run(argv, check=False, timeout=30)
    except DeelitError:
        return "unknown"
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"
