"""An evaluation's result: its metrics beside their baselines, and whether the model meets
its registration criterion (what evaluation.json holds)."""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any

EVALUATION_FILE = "evaluation.json"
REPORT_FILE = "report.html"

#: metric -> the baselines it is shown against.
BASELINES = {
    "val_perplexity": ("ngram_perplexity", "ngram4_perplexity"),
    "val_metric_gap": ("blind_bach_metric_gap", "val_metric_gap_untrained"),
    "val_named_accuracy": ("val_unconditional_accuracy", "val_chance_accuracy"),
    "val_bits_per_char": ("ngram_bits_per_char", "ngram4_bits_per_char", "lzma_bits_per_char"),
    "val_fid": ("val_fid_floor", "val_fid_untrained", "val_fid_gaussian", "val_fid_gmm"),
    "val_probe_accuracy": ("pixels_probe_accuracy", "sklearn_rbm_probe_accuracy"),
    "val_pll": ("sklearn_rbm_pll", "val_pll_untrained"),
    "val_auroc": ("val_auroc_pca", "val_auroc_untrained"),
    "val_completion_rate": ("pursuit_completion_rate", "random_completion_rate"),
    "val_heldout_completion_rate": ("pursuit_heldout_completion_rate",
                                    "random_heldout_completion_rate"),
    "val_lap_time": ("pursuit_lap_time",),
    "val_heldout_lap_time": ("pursuit_heldout_lap_time",),
}
#: Metrics where lower is better (the rest: higher is better, or neither).
LOWER_IS_BETTER = {"val_loss", "val_perplexity", "ngram_perplexity", "ngram4_perplexity",
                   "val_bits_per_char", "ngram_bits_per_char", "ngram4_bits_per_char",
                   "lzma_bits_per_char", "val_metric_gap", "blind_bach_metric_gap",
                   "val_metric_gap_untrained", "val_fid", "val_fid_floor",
                   "val_fid_untrained", "val_fid_gaussian", "val_fid_gmm",
                   "val_reconstruction", "val_lap_time_ratio",
                   *(f"{who}_{m}" for who in ("val", "pursuit", "random")
                     for m in ("lap_time", "heldout_lap_time", "off_track_rate",
                               "heldout_off_track_rate"))}


def _weak(baseline: str) -> bool:
    """Baselines that only bound a metric (an untrained network, the real data's floor, a
    random policy): losing to them is never the story."""
    return baseline.endswith(("_untrained", "_floor")) or baseline.startswith("random_")


def verdicts(metrics: dict[str, dict[str, float]]) -> list[str]:
    """In words: each metric that a baseline a user would try instead beats."""
    said = []
    for metric, baselines in BASELINES.items():
        if metric not in metrics:
            continue
        value = metrics[metric]["value"]
        lower = metric in LOWER_IS_BETTER
        for baseline in baselines:
            if baseline in metrics and not _weak(baseline):
                other = metrics[baseline]["value"]
                if (value > other) if lower else (value < other):
                    said.append(f"{metric} ({value:.4g}) is behind {baseline} ({other:.4g}): "
                                f"the baseline does better here")
    return said


_CRITERION = re.compile(r"^([a-z][a-z0-9_]*)(<=|>=|<|>)(-?[0-9.]+(?:e-?[0-9]+)?)$")
_COMPARE = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


def registration(metrics: dict[str, dict[str, float]], criterion: str) -> dict[str, Any]:
    """Whether ``metrics`` meet ``criterion`` (METRIC<=NUMBER, ...), and why (a metric the
    evaluation did not measure fails, naming the ones it did)."""
    match = _CRITERION.match(criterion.replace(" ", ""))
    if match is None:
        raise ValueError(f"registration criterion {criterion!r} must read METRIC<=NUMBER or "
                         f"METRIC>=NUMBER (or < and >), e.g. val_loss<=4.5")
    name, compare, bound = match.group(1), match.group(2), float(match.group(3))
    if name not in metrics:
        return {"criterion": criterion, "metric": name, "value": None, "passed": False,
                "reason": f"{name} was not measured (measured: {', '.join(sorted(metrics))})"}
    value = metrics[name]["value"]
    passed = math.isfinite(value) and bool(_COMPARE[compare](value, bound))
    return {"criterion": criterion, "metric": name, "value": value, "passed": passed,
            "reason": f"{name} = {value:.6g}, {'meets' if passed else 'misses'} {criterion}"}


@dataclass
class Table:
    """A table of figures the report shows as it is (the racer's laps by track)."""

    title: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class Evaluation:
    family: str
    measured: str  # what was scored: an artifact path or an endpoint
    modality: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    lineage: dict[str, Any] | None = None
    grid_png: bytes | None = None  # sample images
    texts: list[tuple[str, str]] = field(default_factory=list)  # (prompt, continuation)
    melodies: list[tuple[list[Any], list[Any]]] = field(default_factory=list)  # (primer, cont.)
    registration: dict[str, Any] | None = None  # set by `register`
    tables: list[Table] = field(default_factory=list)
    pictures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)
    #: charts the report draws: title -> line name -> (x, y) points
    curves: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)

    def put(self, name: str, value: float, std: float | None = None) -> None:
        entry = {"value": float(value)}
        if std is not None:
            entry["standard_deviation"] = float(std)
        self.metrics[name] = entry

    def register(self, criterion: str | None = None) -> None:
        """Judge the evaluation by ``criterion``, or by the family's own."""
        from training.models import get_family

        self.registration = registration(
            self.metrics, criterion or get_family(self.family).register_if)

    def to_json(self) -> dict[str, Any]:
        baselines = {m: [b for b in bs if b in self.metrics]
                     for m, bs in BASELINES.items() if m in self.metrics}
        return {"metrics": self.metrics, "family": self.family, "modality": self.modality,
                "measured": self.measured,
                "baselines": {m: bs for m, bs in baselines.items() if bs},
                "lower_is_better": sorted(LOWER_IS_BETTER & set(self.metrics)),
                "notes": self.notes,
                **({"behind": behind} if (behind := verdicts(self.metrics)) else {}),
                **({"tables": [{"title": t.title, "header": t.header, "rows": t.rows}
                               for t in self.tables]} if self.tables else {}),
                **({"curves": self.curves} if self.curves else {}),
                **({"lineage": self.lineage} if self.lineage else {}),
                **({"registration": self.registration} if self.registration else {})}
