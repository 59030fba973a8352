"""`deelit registry ...` through the real Typer app (and once through the console script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioner.cli import make_app
from provisioner.errors import DeelitError

app = make_app()

runner = CliRunner()


def run(*args: str) -> str:
    result = runner.invoke(app, ["registry", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_token_create_prints_token_last(tmp_path: Path) -> None:
    output = run("token", "create", "mec-pc1", "--point", "MEC", "--data", str(tmp_path))
    token = output.strip().splitlines()[-1]
    assert token.startswith("dlt_") and len(token) > 40
    assert "mec-pc1" in run("token", "list", "--data", str(tmp_path))
    assert token not in run("token", "list", "--data", str(tmp_path))
    run("token", "revoke", "mec-pc1", "--data", str(tmp_path))
    with pytest.raises(DeelitError, match="no live token"):
        runner.invoke(app, ["registry", "token", "revoke", "mec-pc1", "--data", str(tmp_path)],
                      catch_exceptions=False)


def test_add_build_import_export_label(tmp_path: Path, manifest_data: dict[str, Any]) -> None:
    data = ["--data", str(tmp_path / "d")]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(manifest_data | {"build_id": "pupil-20260510-1"}))
    assert "recorded" in run("add-build", str(manifest), *data)
    assert "already" in run("add-build", str(manifest), *data)
    queue = tmp_path / "q"
    queue.mkdir()
    (queue / "a.json").write_text(json.dumps({
        "serial": "5CG1234ABC", "maker": "HP", "model": "840 G3", "grade": "A",
        "events": [{"type": "wiped"}, {"type": "imaged", "build_id": "pupil-20260510-1"},
                   {"type": "verified"}, {"type": "ready"}]}))
    run("import", str(queue), *data)
    tsv = run("export", "--format", "lendengine", "--condition", "A=Like new", *data)
    assert tsv.splitlines()[1].startswith("DEELIT-MEC-000001\tHP 840 G3")
    pdf = tmp_path / "l.pdf"
    run("label", "--layout", "roll62", "-o", str(pdf), *data)
    assert pdf.read_bytes().startswith(b"%PDF")
    shown = json.loads(run("show", "DEELIT-MEC-000001", *data))
    assert shown["status"] == "ready"
    run("events", "DEELIT-MEC-000001", "--add", "loaned", *data)
    with pytest.raises(DeelitError, match="record 'returned'"):
        runner.invoke(app, ["registry", "events", "DEELIT-MEC-000001", "--add", "graded",
                            *data], catch_exceptions=False)


@pytest.mark.slow  # a fresh interpreter importing the whole CLI: seconds on a busy machine
def test_errors_are_one_line_and_nonzero(tmp_path: Path, manifest_data: dict[str, Any]) -> None:
    bad = tmp_path / "manifest.json"
    del manifest_data["profile"]["digest"]
    bad.write_text(json.dumps(manifest_data))
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli", "registry", "add-build",
                           str(bad), "--data", str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 1
    assert "manifest.json: not a valid deelit build manifest" in proc.stderr
    assert "key profile.digest: Field required" in proc.stderr
    assert "Traceback" not in proc.stderr
