"""The CI examples for IT partners (ci-examples/) cannot rot: their deelit commands are run
here, as written, with PROFILE=ci and a throwaway signing key. What they leave is what a
partner's job publishes: the signed build, its JUnit report (the booted disk image's suite
in it) and the JSON summary. Their other lines only install git and make on the runner."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.formats import release_signature
from provisioner.profile import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(3600)]
EXAMPLES = PROJECT_ROOT / "ci-examples"
RUNNER_SETUP = "apt-get update && apt-get install -y --no-install-recommends ca-certificates git make"


def github_commands(doc: dict[str, Any]) -> tuple[list[str], list[str]]:
    steps = doc["jobs"]["image"]["steps"]
    runs = [s["run"] for s in steps if "run" in s]
    return [r for r in runs if "make partner-check" in r], [r for r in runs if "make partner" not in r]


def gitlab_commands(doc: dict[str, Any]) -> tuple[list[str], list[str]]:
    job = doc["deelit-image"]
    return list(job["script"]), list(job["before_script"])


def test_both_examples_run_the_same_commands_and_keep_no_secret() -> None:
    github = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    gitlab = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    (gh, gh_setup), (gl, gl_setup) = github_commands(github), gitlab_commands(gitlab)
    assert [c.strip() for c in gh] == [c.strip() for c in gl] and len(gh) == 1
    assert [c.strip() for c in gh_setup] == [c.strip() for c in gl_setup] == [RUNNER_SETUP]
    kept = github["jobs"]["image"]["steps"][-2]["with"]["path"]
    assert "!out/${{ env.PROFILE }}/boot-password.txt" in kept.splitlines()
    assert gitlab["deelit-image"]["artifacts"]["exclude"] == ["out/$PROFILE/boot-password.txt"]
    assert gitlab["deelit-image"]["artifacts"]["reports"]["junit"] == "out/verify-$PROFILE.xml"


def test_the_examples_commands_build_sign_and_verify_ci(tmp_path: Path) -> None:
    [script] = github_commands(yaml.safe_load((EXAMPLES / "github-actions.yml").read_text()))[0]
    key = tmp_path / "partner"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "partner@ci", "-f",
                    str(key)], check=True)
    env = {**os.environ, "PROFILE": "ci", "DEELIT_SIGNING_KEY": key.read_text(),
           "DEELIT_SIGNER": key.with_suffix(".pub").read_text()}
    proc = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = PROJECT_ROOT / "out"
    # the published build is signed by the partner's key, and checks against it
    assert "intact" in release_signature.check(out / "ci", key.with_suffix(".pub"))
    suites = {s.get("name"): s for s in ET.parse(out / "verify-ci.xml").getroot().iter("testsuite")}
    assert {"checksums", "tree", "booted-bios"} <= set(suites)
    assert all(s.get("failures") == "0" and s.get("errors") == "0" for s in suites.values())
    assert json.loads((out / "verify-ci.json").read_text())["result"] == "passed"
    assert key.read_text() not in proc.stdout + proc.stderr  # the secret never shows
