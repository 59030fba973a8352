"""deelit verify's reports: pytest's JUnit files merged into one, a phase without pytest as one
test case, the JSON summary, and pytest's exit status mapped to verify's."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from provisioner.build import verify_report as vr

PYTEST_JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest"
 errors="0" failures="1" skipped="1" tests="3"><testcase classname="test_base" name="test_timezone">
<failure message="assert False">...</failure></testcase><testcase classname="test_base"
 name="test_locale"/><testcase classname="test_base" name="test_x"><skipped/></testcase>
</testsuite></testsuites>"""


def test_exit_status_of_pytest() -> None:
    assert [vr.exit_status(c) for c in (0, 1, 2, 3, 4, 5)] == [0, 1, 2, 2, 2, 2]


def test_one_junit_file_with_a_suite_per_phase_and_the_json(tmp_path: Path) -> None:
    tree = tmp_path / "tree.xml"
    tree.write_text(PYTEST_JUNIT)
    outcome = vr.Outcome("out/ci", "ci", "ci-1", [
        vr.Phase("checksums", exit=0, message="5 files as listed"),
        vr.Phase("tree", exit=1, junit=tree)])
    junit, summary = tmp_path / "r" / "junit.xml", tmp_path / "r" / "verify.json"
    vr.write(outcome, junit, summary)
    suites = {s.get("name"): s for s in ET.parse(junit).getroot().iter("testsuite")}
    assert set(suites) == {"checksums", "tree"}
    assert (suites["tree"].get("tests"), suites["tree"].get("failures")) == ("3", "1")
    assert suites["checksums"].get("failures") == "0"
    data = json.loads(summary.read_text())
    assert (data["exit"], data["result"]) == (1, "failed")
    assert data["phases"][1] == {"name": "tree", "exit": 1, "tests": 3, "failures": 1,
                                 "errors": 0, "skipped": 1, "message": ""}


def test_unusable_input_is_an_error_case_with_its_message(tmp_path: Path) -> None:
    outcome = vr.Outcome("out/x", phases=[vr.Phase("input", exit=2, message="x: missing")])
    junit, summary = tmp_path / "j.xml", tmp_path / "j.json"
    vr.write(outcome, junit, summary)
    [case] = ET.parse(junit).getroot().iter("testcase")
    error = case.find("error")
    assert error is not None and error.text == "x: missing"
    assert json.loads(summary.read_text())["result"] == "unusable"
    assert vr.Outcome("nothing").exit == 2  # no phase ran: nothing was shown to pass
