"""The build cache: bootstrapped trees, role layers, configured trees, artifacts (folders).

Each entry lives under `<root>/<kind>/<key>` with a `<key>.json` beside it saying what made
it. Entries are staged elsewhere under the root and renamed into place, so a failed or
interrupted build never leaves a half entry that a later build would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("bootstrap", "layer", "tree", "artifacts")


def default_cache_root() -> Path:
    env = os.environ.get("DEELIT_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "deelit"


def digest_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def digest_tree(root: Path) -> str:
    """Content digest of a file, or of a folder: relative paths, modes, links and bytes."""
    if root.is_file():
        return hashlib.sha256(root.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        h.update(f"{rel}\0{st.st_mode:o}\0".encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class Entry:
    kind: str
    key: str
    path: Path
    meta: dict[str, Any]

    @property
    def size(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.lstat().st_size for p in self.path.rglob("*") if not p.is_dir())

    @property
    def last_used(self) -> float:
        return float(self.meta.get("last_used", self.meta.get("created", 0)))


class Cache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_cache_root()).resolve()

    def _entry_path(self, kind: str, key: str, suffix: str = "") -> Path:
        assert kind in KINDS
        return self.root / kind / f"{key}{suffix}"

    def lookup(self, kind: str, key: str, suffix: str = "") -> Path | None:
        path = self._entry_path(kind, key, suffix)
        meta_path = self._entry_path(kind, key, ".json")
        if not (path.exists() and meta_path.exists()):
            return None
        meta = json.loads(meta_path.read_text())
        meta["last_used"] = time.time()
        _write_atomic(meta_path, json.dumps(meta, indent=2))
        return path

    def store(self, kind: str, key: str, staged: Path, meta: dict[str, Any], suffix: str = "") -> Path:
        """Renames a complete staged file or folder into the cache (same filesystem)."""
        dest = self._entry_path(kind, key, suffix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # a concurrent build stored the same content first
            _remove(staged)
        else:
            os.rename(staged, dest)
        now = time.time()
        _write_atomic(
            self._entry_path(kind, key, ".json"),
            json.dumps({"kind": kind, "key": key, "created": now, "last_used": now, **meta}, indent=2),
        )
        return dest

    def evict(self, kind: str, key: str) -> None:
        """Forgets one entry (a file or folder, and its metadata); no error if there is none."""
        for suffix in ("", ".tar", ".json"):
            _remove(self._entry_path(kind, key, suffix))

    def staging(self, label: str) -> Path:
        """A fresh folder on the cache's filesystem for work that may end in the cache."""
        path = self.root / "work" / f"{label}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def entries(self) -> Iterator[Entry]:
        for kind in KINDS:
            for meta_path in sorted((self.root / kind).glob("*.json")):
                meta = json.loads(meta_path.read_text())
                key = meta_path.stem
                for path in (meta_path.with_suffix(""), meta_path.with_suffix(".tar")):
                    if path.exists():
                        yield Entry(kind, key, path, meta)
                        break

    def prune(self, older_than_days: float | None = None) -> list[Entry]:
        """Removes entries not used for that many days (all with None), and stale work dirs."""
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
        removed = []
        for entry in list(self.entries()):
            if cutoff is None or entry.last_used < cutoff:
                self.evict(entry.kind, entry.key)
                removed.append(entry)
        work = self.root / "work"
        if work.is_dir():
            for stale in work.iterdir():
                if cutoff is None or stale.stat().st_mtime < cutoff:
                    _remove(stale)
        return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
