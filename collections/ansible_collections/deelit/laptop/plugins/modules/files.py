#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
"""Folders and files in one module run: deelit's roles install many small files, and on a
laptop in use under emulation every module run costs seconds, where the files cost nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: files
short_description: Make folders and write files, many in one run
description:
  - Makes each folder of O(directories) and writes each file of O(files) with its owner,
    group and mode, changing only what differs. A file is replaced atomically, after an
    optional validation of the new content.
  - Used through its action plugin, which reads C(src) and renders C(template) on the
    controller, as M(ansible.builtin.copy) and M(ansible.builtin.template) do.
options:
  directories:
    description: Folders to make (parents as needed, 0755); the last component gets the
      given owner, group and mode.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Absolute path., type: path, required: true}
      owner: {description: Owner (default the task's O(owner)), type: str}
      group: {description: Group (default the task's O(group)), type: str}
      mode: {description: Mode (default the task's O(directory_mode)), type: raw}
  files:
    description: Files to write. The action plugin turns O(files[].src),
      O(files[].template) or O(files[].content) into O(files[].data).
    type: list
    elements: dict
    default: []
    suboptions:
      dest: {description: Absolute path of the file., type: path, required: true}
      data: {description: The bytes, base64-encoded (set by the action plugin)., type: str, required: true}
      owner: {description: Owner (default the task's O(owner)), type: str}
      group: {description: Group (default the task's O(group)), type: str}
      mode: {description: Mode (default the task's O(mode)), type: raw}
      validate:
        description: "Command run on the new content before it replaces the file; %s is its path."
        type: str
  links:
    description: Symbolic links to make (an existing file or link at O(links[].dest) is replaced).
    type: list
    elements: dict
    default: []
    suboptions:
      src: {description: What the link points to., type: str, required: true}
      dest: {description: Absolute path of the link., type: path, required: true}
  absent:
    description: Files, links or folders (with what they hold) to remove.
    type: list
    elements: path
    default: []
  owner: {description: Default owner., type: str, default: root}
  group: {description: Default group., type: str, default: root}
  mode: {description: Default mode of files., type: raw, default: "0644"}
  directory_mode: {description: Default mode of folders., type: raw, default: "0755"}
author: DEEL IT
"""

EXAMPLES = r"""
- name: Install the filter's files
  deelit.laptop.files:
    directories:
      - path: /etc/deelit-filter
    files:
      - {src: blocklist.txt, dest: /etc/deelit-filter/blocklist.shipped}
      - {template: filter.json.j2, dest: /etc/deelit-filter/filter.json}
      - {src: deelit-filter-update, dest: /usr/local/sbin/deelit-filter-update, mode: "0755"}
"""

RETURN = r"""
changed_paths:
  description: Folders, files and links made or changed and paths removed, in that order.
  type: list
  elements: str
  returned: always
"""

import base64
import os
import shutil
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

_DIRECTORY = {"path": {"type": "path", "required": True}, "owner": {"type": "str"},
              "group": {"type": "str"}, "mode": {"type": "raw"}}
_FILE = {"dest": {"type": "path", "required": True},
         "data": {"type": "str", "required": True, "no_log": True},
         "owner": {"type": "str"}, "group": {"type": "str"}, "mode": {"type": "raw"},
         "validate": {"type": "str"}}


def _attributes(module: AnsibleModule, path: str, item: dict[str, Any], mode_key: str) -> dict[str, Any]:
    args = module.load_file_common_arguments({"path": path})
    args.update(owner=item.get("owner") or module.params["owner"],
                group=item.get("group") or module.params["group"],
                mode=item.get("mode") or module.params[mode_key])
    return args


# Folders a check-mode run would have made: their files are "would change", not an error.
_PLANNED: set[str] = set()


def _directory(module: AnsibleModule, item: dict[str, Any]) -> bool:
    path = item["path"]
    changed = False
    if not os.path.isdir(path):
        if os.path.lexists(path):
            module.fail_json(msg=f"{path}: exists and is not a folder")
        changed = True
        if module.check_mode:
            _PLANNED.add(os.path.normpath(path))
            return True
        os.makedirs(path, mode=0o755)
    return module.set_fs_attributes_if_different(
        _attributes(module, path, item, "directory_mode"), changed)


def _current(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _file(module: AnsibleModule, item: dict[str, Any]) -> bool:
    dest = item["dest"]
    data = base64.b64decode(item["data"])
    if os.path.isdir(dest):
        module.fail_json(msg=f"{dest}: is a folder, expected a file")
    parent = os.path.dirname(dest)
    if module.check_mode and os.path.normpath(parent) in _PLANNED:
        return True
    if not os.path.isdir(parent):
        module.fail_json(msg=f"{dest}: its folder {parent} does not exist; list it under directories")
    # A link in its place is replaced, never followed (resolv.conf may be one).
    if os.path.islink(dest) or _current(dest) != data:
        if module.check_mode:
            return True
        fd, tmp = tempfile.mkstemp(prefix=".deelit-", dir=parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            module.set_fs_attributes_if_different(_attributes(module, tmp, item, "mode"), True)
            if item.get("validate"):
                _validate(module, dest, tmp, item["validate"])
            os.replace(tmp, dest)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return True
    return module.set_fs_attributes_if_different(_attributes(module, dest, item, "mode"), False)


def _validate(module: AnsibleModule, dest: str, tmp: str, command: str) -> None:
    if "%s" not in command:
        module.fail_json(msg=f"{dest}: validate must contain %s (the new content's path): {command}")
    rc, out, err = module.run_command(command % tmp)
    if rc != 0:
        module.fail_json(msg=f"{dest}: the new content failed '{command}' (exit {rc}); the file is "
                             f"unchanged", stdout=out, stderr=err)


def _link(module: AnsibleModule, item: dict[str, Any]) -> bool:
    dest, target = item["dest"], item["src"]
    if os.path.islink(dest) and os.readlink(dest) == target:
        return False
    if os.path.isdir(dest) and not os.path.islink(dest):
        module.fail_json(msg=f"{dest}: is a folder, expected a link to {target}")
    if not module.check_mode:
        tmp = os.path.join(os.path.dirname(dest), f".deelit-link-{os.getpid()}")
        os.symlink(target, tmp)
        os.replace(tmp, dest)
    return True


def _absent(module: AnsibleModule, path: str) -> bool:
    if not os.path.lexists(path):
        return False
    if not module.check_mode:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "directories": {"type": "list", "elements": "dict", "default": [], "options": _DIRECTORY},
            "files": {"type": "list", "elements": "dict", "default": [], "options": _FILE},
            "links": {"type": "list", "elements": "dict", "default": [],
                      "options": {"src": {"type": "str", "required": True},
                                  "dest": {"type": "path", "required": True}}},
            "absent": {"type": "list", "elements": "path", "default": []},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "default": "root"},
            "mode": {"type": "raw", "default": "0644"},
            "directory_mode": {"type": "raw", "default": "0755"},
        },
        supports_check_mode=True,
    )
    changed_paths = [d["path"] for d in module.params["directories"] if _directory(module, d)]
    changed_paths += [f["dest"] for f in module.params["files"] if _file(module, f)]
    changed_paths += [ln["dest"] for ln in module.params["links"] if _link(module, ln)]
    changed_paths += [p for p in module.params["absent"] if _absent(module, p)]
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths)


if __name__ == "__main__":
    main()
