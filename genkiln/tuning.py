"""SageMaker hyperparameter tuning jobs over a family's declared ranges.

A tuning job runs the image's `train` verb as its training jobs, with the launch's
hyperparameters held static; a hyperparameter the user sets is not tuned.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from training.models.tuning import Range, Tuning

#: SageMaker caps tuning job names at 32 characters.
NAME_LIMIT = 32


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
