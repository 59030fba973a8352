"""The grading policy's schema: `grading.yaml` (one place, a comment on each threshold),
validated on load so a mistyped key stops the agent with the file and key named."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ValidationError

from provisioner.errors import DeelitError

Grade = Literal["A", "B", "C", "reject"]
ORDER: dict[str, int] = {"A": 0, "B": 1, "C": 2, "reject": 3}
DEFAULT_THRESHOLDS = Path(__file__).with_name("grading.yaml")


class Levels(BaseModel):
    B: float | None = None
    C: float | None = None
    reject: float | None = None

    def at_or_above(self, value: float) -> Grade | None:
        grade: Grade
        for grade in ("reject", "C", "B"):
            limit = getattr(self, grade)
            if limit is not None and value >= limit:
                return grade
        return None

    def below(self, value: float) -> Grade | None:
        grade: Grade
        for grade in ("reject", "C", "B"):
            limit = getattr(self, grade)
            if limit is not None and value < limit:
                return grade
        return None


class Counter(BaseModel):
    id: int
    grade: Grade
    reject_at: int


class DiskRules(BaseModel):
    smart_failed: Grade
    attribute_failing_now: Grade
    attribute_failed_in_past: Grade
    smart_unavailable: Grade
    error_log_entries: Grade
    self_test_failures: Grade
    counters: list[Counter]
    hdd_power_on_hours: Levels
    ssd_life_attributes: list[str]
    life_used_percent: Levels


class NvmeRules(BaseModel):
    critical_warning: Grade
    spare_at_or_below_threshold: Grade
    media_errors: Levels


class BatteryRules(BaseModel):
    health_percent_below: Levels
    cycle_count: Levels
    missing: Grade


class SpecRules(BaseModel):
    ram_bytes_below: Levels
    cpu_cores_below: Levels
    disk_bytes_below: Levels
    placeholder_serial: Grade


class Thresholds(BaseModel):
    disk: DiskRules
    nvme: NvmeRules
    battery: BatteryRules
    spec: SpecRules


def load_thresholds(path: Path = DEFAULT_THRESHOLDS) -> Thresholds:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Thresholds.model_validate(data)
    except OSError as exc:
        raise DeelitError(f"cannot read grading thresholds {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise DeelitError(f"{path} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise DeelitError(f"{path}: key `{key}`: {first['msg']}") from exc
