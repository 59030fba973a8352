"""manifest.json: one schema, a round trip, and a clear error naming the file for each fault."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from provisioner.errors import DeelitError
from provisioner.formats import manifest as fm

FORMATS = Path(fm.__file__).parent


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_round_trip_keeps_every_key_and_the_build_layout(tmp_path: Path,
                                                         manifest_data: dict[str, Any]) -> None:
    manifest = fm.Manifest.model_validate(manifest_data)
    path = tmp_path / fm.FILENAME
    fm.write(path, manifest)
    assert fm.read(path) == manifest
    # the layout the build has always written: key order kept, indent 2, newline at the end
    assert path.read_text() == json.dumps(manifest_data, indent=2) + "\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_parse_bytes_names_its_source(manifest_data: dict[str, Any]) -> None:
    raw = json.dumps(manifest_data).encode()
    assert fm.parse(raw, "upload").build_id == "ci-20260101-abc"
    with pytest.raises(DeelitError, match=r"^upload: damaged, not JSON"):
        fm.parse(raw[:-1], "upload")


def test_keys_a_newer_writer_adds_are_ignored(tmp_path: Path, manifest_data: dict[str, Any]) -> None:
    manifest_data["signature"] = "future"
    assert fm.read(write_json(tmp_path / fm.FILENAME, manifest_data)).format == fm.FORMAT


def test_missing_file_says_to_build(tmp_path: Path) -> None:
    path = tmp_path / "out" / fm.FILENAME
    with pytest.raises(DeelitError, match=rf"^{re.escape(str(path))}: missing; build the image first with `deelit build"):
        fm.read(path)


def test_unreadable_path_is_named(tmp_path: Path) -> None:
    (tmp_path / fm.FILENAME).mkdir()
    with pytest.raises(DeelitError, match=rf"^{tmp_path / fm.FILENAME}: cannot read the manifest"):
        fm.read(tmp_path / fm.FILENAME)


@pytest.mark.parametrize(("content", "says"), [
    (b'{"format": 1, "build_id": ', r"damaged, not JSON \(line 1: .*\); copy the build folder again"),
    (b"", r"damaged, not JSON"),
    (b'{"build_id": "\xff\xfe"}', r"damaged, not UTF-8 text"),
    (b'["ci-1"]', r"not a deelit build manifest \(a JSON list, not an object\)"),
])
def test_damaged_file_is_refused(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / fm.FILENAME
    path.write_bytes(content)
    with pytest.raises(DeelitError, match=rf"^{re.escape(str(path))}: {says}"):
        fm.read(path)


def test_wrong_shape_lists_the_field_errors(tmp_path: Path, manifest_data: dict[str, Any]) -> None:
    del manifest_data["profile"]["digest"]
    manifest_data["artifacts"][1]["sha256"] = "not-a-digest"
    manifest_data["source_date_epoch"] = "yesterday"
    path = write_json(tmp_path / fm.FILENAME, manifest_data)
    with pytest.raises(DeelitError) as exc:
        fm.read(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: not a valid deelit build manifest (format {fm.FORMAT}): ")
    for key in ("source_date_epoch", "profile.digest", "artifacts.1.sha256"):
        assert f"key {key}: " in message, message
    assert message.endswith("; rebuild with `deelit build ci`")
    assert "\n" not in message


def test_many_field_errors_are_cut_short(tmp_path: Path) -> None:
    path = write_json(tmp_path / fm.FILENAME, {"format": fm.FORMAT, "profile": "pupil"})
    with pytest.raises(DeelitError, match=r"key format|key build_id") as exc:
        fm.read(path)
    assert "more; rebuild with `deelit build PROFILE`" in str(exc.value)


def test_not_a_manifest_at_all_lacks_the_format(tmp_path: Path) -> None:
    path = write_json(tmp_path / fm.FILENAME, {"name": "some other json"})
    with pytest.raises(DeelitError, match=r"key format: Field required"):
        fm.read(path)


@pytest.mark.parametrize(("version", "says"), [
    (0, r"manifest format 0 was written by an older deelit \(this one reads format 1\): "
        r"rebuild with `deelit build ci`$"),
    (2, r"manifest format 2 was written by a newer deelit \(this one reads format 1\): "
        r"update deelit here, or rebuild with `deelit build ci` here$"),
])
def test_other_format_versions_say_what_to_do(tmp_path: Path, manifest_data: dict[str, Any],
                                              version: int, says: str) -> None:
    manifest_data["format"] = version
    manifest_data["packages"] = "whatever the other version keeps here"
    path = write_json(tmp_path / fm.FILENAME, manifest_data)
    with pytest.raises(DeelitError, match=rf"^{re.escape(str(path))}: {says}"):
        fm.read(path)


def test_write_refuses_another_format(tmp_path: Path, manifest_data: dict[str, Any]) -> None:
    manifest = fm.Manifest.model_validate(manifest_data | {"format": fm.FORMAT + 1})
    with pytest.raises(DeelitError, match="writes manifest format"):
        fm.write(tmp_path / fm.FILENAME, manifest)
    assert not (tmp_path / fm.FILENAME).exists()


@pytest.mark.parametrize("build_id", [
    "ci-20260101-abc", "pupil-0123456789ab", "A.b_c-1", "x", "a" * 128,
])
def test_safe_build_ids_are_read(tmp_path: Path, manifest_data: dict[str, Any], build_id: str) -> None:
    path = write_json(tmp_path / fm.FILENAME, manifest_data | {"build_id": build_id})
    assert fm.read(path).build_id == build_id


@pytest.mark.parametrize("build_id", [
    "/var/lib/deelit", "../etc", "ci/../../x", "a/b", "..", "ci..1", "", ".hidden", "-rf",
    "a" * 129, "ci 1", "ci\n1", "ci-1\n", "ci-1\\x",
])
def test_unsafe_build_ids_are_refused(tmp_path: Path, manifest_data: dict[str, Any],
                                      build_id: str) -> None:
    path = write_json(tmp_path / fm.FILENAME, manifest_data | {"build_id": build_id})
    with pytest.raises(DeelitError, match=rf"^{re.escape(str(path))}: .*key build_id: .* is not a safe build id") as exc:
        fm.read(path)
    assert "folder name" in str(exc.value)


def test_unsafe_artifact_names_are_refused(manifest_data: dict[str, Any]) -> None:
    manifest_data["artifacts"][0]["name"] = "../../etc/passwd"
    with pytest.raises(DeelitError, match=r"key artifacts.0.name"):
        fm.parse(json.dumps(manifest_data), "m")


def test_formats_import_nothing_of_deelit_but_errors() -> None:
    """The ground floor: the agent ships these modules inside the image."""
    for path in FORMATS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("provisioner"):
                    assert name in ("provisioner.errors", "provisioner.formats"), (path.name, name)
