"""SageMaker hyperparameter tuning jobs over a family's documented ranges.

Each family (`training.models.FAMILIES`) names an objective (a metric its training log
prints, and whether to minimise or maximise it) and the ranges worth searching. A tuning
job runs `genkiln train` as its training jobs, with the launch's hyperparameters held
static; a hyperparameter the user sets is not tuned.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: SageMaker caps tuning job names at 32 characters.
NAME_LIMIT = 32


@dataclass(frozen=True)
class Range:
    """One tunable hyperparameter: a continuous or integer interval, or a set of values."""

    kind: Literal["Continuous", "Integer", "Categorical"]
    low: float = 0.0
    high: float = 0.0
    values: tuple[str, ...] = ()
    scaling: Literal["Auto", "Linear", "Logarithmic"] = "Auto"

    def ends(self) -> tuple[str, ...]:
        """The values at the edges of the range, as hyperparameter strings."""
        if self.kind == "Categorical":
            return self.values
        if self.kind == "Integer":
            return str(int(self.low)), str(int(self.high))
        return repr(self.low), repr(self.high)


def continuous(low: float, high: float, scaling: str = "Auto") -> Range:
    return Range("Continuous", low, high, scaling=scaling)  # type: ignore[arg-type]


def integer(low: int, high: int) -> Range:
    return Range("Integer", low, high)


def categorical(*values: str) -> Range:
    return Range("Categorical", values=values)


@dataclass(frozen=True)
class Tuning:
    """What a family's tuning job optimises, and over which ranges."""

    objective: str  # a metric of the family's metric definitions
    goal: Literal["Minimize", "Maximize"]
    ranges: Mapping[str, Range]


def parameter_ranges(ranges: Mapping[str, Range]) -> dict[str, list[dict[str, Any]]]:
    """The API's `ParameterRanges`: values are strings, as hyperparameters are."""
    out: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [], "IntegerParameterRanges": [],
        "CategoricalParameterRanges": []}
    for name, r in ranges.items():
        if r.kind == "Categorical":
            out["CategoricalParameterRanges"].append({"Name": name, "Values": list(r.values)})
        else:
            low, high = r.ends()
            out[f"{r.kind}ParameterRanges"].append(
                {"Name": name, "MinValue": low, "MaxValue": high, "ScalingType": r.scaling})
    return {k: v for k, v in out.items() if v}


def tuned_ranges(tuning: Tuning, static: Mapping[str, str]) -> dict[str, Range]:
    """The family's ranges less those the user fixed."""
    return {k: r for k, r in tuning.ranges.items() if k not in static}


def job_name(base: str) -> str:
    stamp = time.strftime("%m%d-%H%M%S", time.gmtime())
    return f"{base[:NAME_LIMIT - len(stamp) - 1].strip('-')}-{stamp}"


def check(tuning: Tuning, static: Mapping[str, str], *, max_jobs: int,
          max_parallel_jobs: int) -> dict[str, Range]:
    """The ranges to search; ValueError when there is none or the job counts don't fit."""
    ranges = tuned_ranges(tuning, static)
    if not ranges:
        raise ValueError(f"every tunable hyperparameter ({', '.join(tuning.ranges)}) is set; "
                         f"leave at least one unset to tune it")
    if not 1 <= max_parallel_jobs <= max_jobs:
        raise ValueError(f"--tune-parallel ({max_parallel_jobs}) must be between 1 and "
                         f"--tune ({max_jobs})")
    return ranges


def tuning_job_request(*, name: str, tuning: Tuning, static: Mapping[str, str],
                       training: Mapping[str, Any], max_jobs: int, max_parallel_jobs: int
                       ) -> dict[str, Any]:
    """A `CreateHyperParameterTuningJob` request.

    ``training`` is the training job definition less its hyperparameters (image, role,
    channels, outputs, resources, stopping condition, spot and checkpoint settings).
    """
    ranges = check(tuning, static, max_jobs=max_jobs, max_parallel_jobs=max_parallel_jobs)
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": tuning.goal,
                                                 "MetricName": tuning.objective},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": max_jobs,
                               "MaxParallelTrainingJobs": max_parallel_jobs},
            "ParameterRanges": parameter_ranges(ranges),
            "TrainingJobEarlyStoppingType": "Off",
        },
        "TrainingJobDefinition": {**training, "StaticHyperParameters": dict(static)},
    }
