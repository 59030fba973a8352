"""The build cache stores only complete entries, finds them by key, and prunes them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from provisioner.build.cache import Cache, digest_tree


def test_store_lookup_and_prune(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    staged = cache.staging("t")
    (staged / "file").write_text("x")
    assert cache.lookup("tree", "k1") is None
    stored = cache.store("tree", "k1", staged, {"profile": "ci"})
    assert not staged.exists() and (stored / "file").read_text() == "x"
    assert cache.lookup("tree", "k1") == stored
    assert [(e.kind, e.key, e.meta["profile"]) for e in cache.entries()] == [("tree", "k1", "ci")]
    assert cache.prune(older_than_days=1) == []
    meta = tmp_path / "c" / "tree" / "k1.json"
    data = json.loads(meta.read_text())
    data["last_used"] = time.time() - 3 * 86400
    meta.write_text(json.dumps(data))
    assert [e.key for e in cache.prune(older_than_days=1)] == ["k1"]
    assert not stored.exists() and cache.lookup("tree", "k1") is None


def test_evict_forgets_one_entry_only(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    for key in ("a", "b"):
        staged = cache.staging(key)
        (staged / "file").write_text(key)
        cache.store("artifacts", key, staged, {})
    cache.evict("artifacts", "a")
    cache.evict("artifacts", "never-stored")
    assert cache.lookup("artifacts", "a") is None
    assert not (tmp_path / "artifacts" / "a").exists() and not (tmp_path / "artifacts" / "a.json").exists()
    assert [e.key for e in cache.entries()] == ["b"]


def test_entry_without_metadata_is_not_trusted(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    (tmp_path / "tree" / "half").mkdir(parents=True)  # e.g. a crash between rename and meta
    assert cache.lookup("tree", "half") is None


def test_digest_tree_sees_content_mode_and_names(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    main = tmp_path / "tasks" / "main.yml"
    main.write_text("a")
    first = digest_tree(tmp_path)
    main.write_text("b")
    second = digest_tree(tmp_path)
    os.chmod(main, 0o600)
    third = digest_tree(tmp_path)
    main.rename(tmp_path / "tasks" / "other.yml")
    fourth = digest_tree(tmp_path)
    assert len({first, second, third, fourth}) == 4
