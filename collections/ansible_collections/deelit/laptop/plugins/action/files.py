# SPDX-License-Identifier: GPL-3.0-or-later
"""The controller's half of deelit.laptop.files: each file's bytes, read from the role's
files/ (src), rendered from its templates/ (template) as ansible.builtin.template renders, or
given (content), go to the laptop in the one module run."""

from __future__ import annotations

import base64
import os
from typing import Any

from ansible._internal._templating import _template_vars
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

_SOURCES = ("src", "template", "content")
_PASSED = ("dest", "owner", "group", "mode", "validate")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False  # the bytes travel inside the module's arguments

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        files = args.get("files") or []
        if not isinstance(files, list):
            raise AnsibleActionFail("files must be a list of {dest, src|template|content, ...}")
        args["directories"] = [{"path": d} if isinstance(d, str) else d
                               for d in args.get("directories") or []]
        args["files"] = []
        for entry in files:
            if isinstance(entry, dict) and str(entry.get("src", "")).endswith("/"):
                folders, inside = self._folder(entry)
                args["directories"] += folders
                args["files"] += inside
            else:
                args["files"].append(self._prepared(entry, task_vars))
        result.update(self._execute_module(module_name="deelit.laptop.files", module_args=args,
                                           task_vars=task_vars))
        return result

    def _prepared(self, entry: Any, task_vars: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(entry, dict) or not entry.get("dest"):
            raise AnsibleActionFail(f"each of files needs a dest: {entry!r}")
        given = [k for k in _SOURCES if k in entry]
        if len(given) != 1:
            raise AnsibleActionFail(f"{entry['dest']}: give exactly one of src, template, content "
                                    f"(got {given or 'none'})")
        unknown = set(entry) - set(_SOURCES) - set(_PASSED) - {"vars"}
        if unknown:
            raise AnsibleActionFail(f"{entry['dest']}: unknown keys {sorted(unknown)}")
        if "src" in entry:
            data = self._source_bytes(entry["src"])
        elif "template" in entry:
            data = self._rendered(entry["template"], entry["dest"], entry.get("vars") or {}, task_vars)
        else:
            data = to_bytes(entry["content"], errors="surrogate_or_strict")
        passed = {k: entry[k] for k in _PASSED if k in entry}
        return {**passed, "data": base64.b64encode(data).decode()}

    def _folder(self, entry: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A src ending in / is a folder of files/: its folders and files under dest, as
        copy's mode u=rwX,go=rX would leave them (0755 where the source is executable)."""
        root = self._needle("files", entry["src"].rstrip("/"))
        if not os.path.isdir(root):
            raise AnsibleActionFail(f"{entry['src']}: ends in / but {root} is not a folder")
        dest = entry["dest"].rstrip("/")
        owned: dict[str, Any] = {k: entry[k] for k in ("owner", "group") if k in entry}
        folders: list[dict[str, Any]] = [{"path": dest, **owned}]
        inside: list[dict[str, Any]] = []
        for here, subdirs, names in os.walk(root):
            subdirs.sort()
            rel = os.path.relpath(here, root)
            target = dest if rel == "." else os.path.join(dest, rel)
            folders += [{"path": os.path.join(target, d), **owned} for d in subdirs]
            for name in sorted(names):
                path = os.path.join(here, name)
                with open(path, "rb") as f:
                    data = f.read()
                mode = entry.get("mode") or ("0755" if os.stat(path).st_mode & 0o111 else "0644")
                inside.append({"dest": os.path.join(target, name), "mode": mode, **owned,
                               "data": base64.b64encode(data).decode()})
        return folders, inside

    def _needle(self, kind: str, name: str) -> str:
        try:
            return self._find_needle(kind, name)
        except AnsibleError as exc:
            raise AnsibleActionFail(to_text(exc)) from None

    def _source_bytes(self, name: str) -> bytes:
        with open(self._needle("files", name), "rb") as f:
            return f.read()

    def _rendered(self, name: str, dest: str, extra: dict[str, Any], task_vars: dict[str, Any]) -> bytes:
        """As ansible.builtin.template renders (its defaults: trim_blocks, '\\n' line ends)."""
        source = self._needle("templates", name)
        searchpath = [*task_vars.get("ansible_search_path", []), self._loader._basedir,
                      os.path.dirname(source)]
        searchpath = [q for p in searchpath for q in (os.path.join(p, "templates"), p)]
        variables = {**task_vars, **extra}
        variables.update(_template_vars.generate_ansible_template_vars(
            path=name, fullpath=source, dest_path=dest,
            include_ansible_managed="ansible_managed" not in variables))
        templar = self._templar.copy_with_new_env(searchpath=searchpath, available_variables=variables)
        text = templar.template(trust_as_template(self._loader.get_text_file_contents(source)),
                                escape_backslashes=False,
                                overrides={"trim_blocks": True, "newline_sequence": "\n"})
        return to_bytes(text or "", errors="surrogate_or_strict")
