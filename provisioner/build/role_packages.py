"""What each role installs, read from the role itself, so the bootstrap installs it all at once.

A role that installs Debian packages names them in one variable, `<role>_apt_packages`, in its
`defaults/main.yml` (a list, or an expression over the role's other variables), and its tasks
install exactly that list. The build evaluates the same variable with Ansible's own templating
(the role's defaults under the profile's vars), and `mmdebstrap` installs the union in one apt
run: one dependency resolution, one unpack, every trigger once. The roles' own apt tasks then
find everything in place and only configure; on a laptop in use (`deelit fleet apply`) they
still install what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from provisioner.errors import DeelitError
from provisioner.profile import Profile


def variable(role: str) -> str:
    return f"{role}_apt_packages"


def declared(profile: Profile, roles_dir: Path, play_vars: dict[str, Any]) -> dict[str, list[str]]:
    """Role name -> the packages it declares under this profile (roles declaring none left out)."""
    loader = DataLoader()
    found: dict[str, list[str]] = {}
    for role in profile.roles:
        defaults_file = roles_dir / role.name / "defaults" / "main.yml"
        defaults = _load(loader, defaults_file)
        role_vars = _load(loader, roles_dir / role.name / "vars" / "main.yml")
        name = variable(role.name)
        if name not in defaults and name not in role_vars and name not in role.vars:
            continue
        # Ansible's precedence: role defaults < play vars < role vars < the role entry's vars
        values = {**defaults, **play_vars, **role_vars, **_trusted(role.vars)}
        try:
            templar = Templar(loader=loader, variables=values)
            packages = templar.template(trust_as_template(f"{{{{ {name} }}}}"))
        except AnsibleError as exc:
            raise DeelitError(f"{defaults_file}: {name}: cannot be evaluated ({exc.message}); "
                              "it must be a list of package names or an expression giving one") from None
        if not isinstance(packages, list) or not all(isinstance(p, str) and p for p in packages):
            raise DeelitError(f"{defaults_file}: {name}: gives {packages!r}, not a list of package "
                              "names")
        found[role.name] = sorted(set(packages))
    return found


def _load(loader: DataLoader, path: Path) -> dict[str, Any]:
    data = loader.load_from_file(str(path), trusted_as_template=True) if path.is_file() else None
    return dict(data or {})


def _trusted(value: Any) -> Any:
    """The profile's vars are the point's own settings, templated as Ansible would template them."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value
