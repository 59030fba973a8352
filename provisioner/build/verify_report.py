"""`deelit verify`'s machine-readable results: one JUnit XML file with a test suite per phase
(what CI systems show), and a JSON summary with the build, each phase and the exit status."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

# pytest's exit status -> verify's: 0 passed, 1 a check failed, 2 unusable (interrupted,
# internal error, bad pytest arguments, no tests collected)
PASSED, FAILED, UNUSABLE = 0, 1, 2


def exit_status(pytest_code: int) -> int:
    return pytest_code if pytest_code in (PASSED, FAILED) else UNUSABLE


@dataclass
class Phase:
    name: str  # checksums, tree, booted-bios…
    exit: int
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    message: str = ""
    junit: Path | None = field(default=None, repr=False)  # pytest's own file for the phase


@dataclass
class Outcome:
    target: str
    profile: str | None = None
    build_id: str | None = None
    phases: list[Phase] = field(default_factory=list)

    @property
    def exit(self) -> int:
        return max((p.exit for p in self.phases), default=UNUSABLE)


def _suites(phase: Phase) -> list[ET.Element]:
    """The phase's <testsuite> elements, counted; a phase without pytest (the checksums,
    an unusable input) is one test case, failed with its message or passed."""
    if phase.junit is not None and phase.junit.is_file():
        root = ET.parse(phase.junit).getroot()
        found = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for s in found:
            s.set("name", phase.name)
            for key in ("tests", "failures", "errors", "skipped"):
                setattr(phase, key, getattr(phase, key) + int(s.get(key, "0")))
        if found:
            return found
    suite = ET.Element("testsuite", name=phase.name, tests="1",
                       failures="1" if phase.exit == FAILED else "0",
                       errors="1" if phase.exit == UNUSABLE else "0", skipped="0")
    case = ET.SubElement(suite, "testcase", classname=f"deelit.verify.{phase.name}",
                         name=phase.name)
    if phase.exit == FAILED:
        ET.SubElement(case, "failure", message=phase.message[:500]).text = phase.message
    elif phase.exit == UNUSABLE:
        ET.SubElement(case, "error", message=phase.message[:500]).text = phase.message
    phase.tests, phase.failures = 1, int(phase.exit == FAILED)
    phase.errors = int(phase.exit == UNUSABLE)
    return [suite]


def write(outcome: Outcome, junit_xml: Path | None, json_file: Path | None) -> None:
    """Both reports, each written whole or not at all (a CI job never reads half a file)."""
    root = ET.Element("testsuites", name=f"deelit verify {outcome.target}")
    for phase in outcome.phases:
        root.extend(_suites(phase))
    if junit_xml is not None:
        ET.indent(root)
        _atomic(junit_xml, ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")
    if json_file is not None:
        data = {"target": outcome.target, "profile": outcome.profile,
                "build_id": outcome.build_id, "exit": outcome.exit,
                "result": {PASSED: "passed", FAILED: "failed"}.get(outcome.exit, "unusable"),
                "phases": [{k: v for k, v in asdict(p).items() if k != "junit"}
                           for p in outcome.phases]}
        _atomic(json_file, json.dumps(data, indent=2) + "\n")


def _atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
