"""`python3 -m provisioner.agent`: the agent's commands on the installer, where the rest of
deelit is not installed. The installer's `deelit` wrapper runs it, so a technician types the
same `deelit agent inventory|grade|wipe|run` there as on a workstation."""

from __future__ import annotations

import sys

from provisioner.agent.commands import agent, err
from provisioner.errors import DeelitError


def main() -> None:
    try:
        agent(prog_name="deelit agent")
    except DeelitError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
