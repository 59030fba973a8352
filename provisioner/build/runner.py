"""Running build commands: output to the step's log file, failures that name command and log."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from provisioner.errors import DeelitError


class StepFailed(DeelitError):
    """A build step failed: names the step, the failing command (or Ansible task) and the log."""

    def __init__(self, step: str, what: str, log: Path | None) -> None:
        where = f"; log: {log}" if log else ""
        super().__init__(f"step '{step}' failed: {what}{where}")
        self.step = step
        self.log = log


def run_logged(
    step: str,
    argv: Sequence[str | Path],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    stream: bool = False,
    on_failure: Callable[[Path], str | None] | None = None,
    cwd: Path | None = None,
    shown: Sequence[str | Path] | None = None,
) -> None:
    """Runs argv with stdout+stderr appended to log (and echoed when stream is set).

    on_failure turns the log into a better description of what failed (e.g. the Ansible task);
    shown is the command a failure names when argv is only a wrapper around it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(a) for a in argv]
    with log.open("ab") as sink:
        sink.write(f"$ {shlex.join(cmd)}\n".encode())
        sink.flush()
        try:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd
            )
        except FileNotFoundError:
            raise StepFailed(
                step, f"command not found: {cmd[0]} (run 'make setup' to install host tools)", None
            ) from None
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            if stream:
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
        code = proc.wait()
    if code != 0:
        what = on_failure(log) if on_failure else None
        named = shlex.join(str(a) for a in shown) if shown else shlex.join(cmd)
        raise StepFailed(step, what or f"{named} exited with {code}", log)


def capture(argv: Sequence[str | Path], *, step: str = "build") -> str:
    """Runs a short query command and returns its stdout; failures name the command."""
    cmd = [str(a) for a in argv]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise StepFailed(step, f"command not found: {cmd[0]} (run 'make setup')", None) from None
    if proc.returncode != 0:
        raise StepFailed(step, f"{shlex.join(cmd)} exited with {proc.returncode}: "
                         f"{proc.stderr.strip()[-400:]}", None)
    return proc.stdout
