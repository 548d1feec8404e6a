"""What a family declares for hyperparameter tuning: its objective and the ranges worth searching.

Each family (`training.models.FAMILIES`) names an objective (a metric its training log
prints, and whether to minimise or maximise it) and its ranges; `genkiln.tuning` turns them
into a SageMaker tuning job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


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
