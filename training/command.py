"""The training image's command line: what SageMaker runs in a training or processing job.

    python -m training train [--opt-ml DIR] [--key value ...]    # a training job (`IMAGE train`)
    python -m training evaluate [MODEL] [--data DIR] ...          # the pipeline's Evaluate step
    python -m training monitor [--capture DIR] ...                # the monitor pipeline's step

The image's entry point maps `train`, `evaluate` and `monitor` here. `genkiln` (the control
plane) offers the same verbs on a laptop, with these very arguments, and adds what only a
client can do: launch jobs, score a live endpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.artifact import ArtifactError
from training.contract import ChannelError, OptMl
from training.data.errors import DataError
from training.hyperparameters import HyperparameterError, parse_cli_overrides

#: Where a SageMaker processing job (the pipelines' steps) puts inputs and outputs.
PROCESSING_ROOT = Path("/opt/ml/processing")
PROCESSING_MODEL = PROCESSING_ROOT / "model"
PROCESSING_DATA = PROCESSING_ROOT / "data"
PROCESSING_OUTPUT = PROCESSING_ROOT / "evaluation"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# --- train -----------------------------------------------------------------------------
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--opt-ml", type=Path,
                        help="run on this SageMaker-style /opt/ml tree (default /opt/ml)")


def train(args: argparse.Namespace, extra: Sequence[str]) -> int:
    """A training job: the hyperparameters file, overridden by any `--key value`."""
    from training.entry import run_training

    try:
        overrides = parse_cli_overrides(list(extra))
    except HyperparameterError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    opt_ml = OptMl(args.opt_ml) if args.opt_ml else OptMl.from_environment()
    return run_training(opt_ml, overrides)


# --- evaluate --------------------------------------------------------------------------
def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, nargs="?",
                        help=f"artifact folder or model.tar.gz (in a processing job: "
                             f"{PROCESSING_MODEL})")
    parser.add_argument("--data", type=Path, help="the data the model was trained on, when "
                        "it was not a bundled data set")
    parser.add_argument("--validation", type=Path, help="the held-out data, when training "
                        "had a validation channel")
    parser.add_argument("--output", type=Path, help="folder for evaluation.json and "
                        "report.html (default ./evaluation)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--register-if", default="", metavar="CRITERION",
                        help="what the model must meet to be registered, e.g. "
                             "'val_loss<=4.5' (default: the family's own criterion); "
                             "evaluation.json says whether it does")


def evaluate(args: argparse.Namespace, *,
             score_endpoint: Callable[[Path | None], Any] | None = None,
             errors: tuple[type[Exception], ...] = (), prog: str = "evaluate") -> int:
    """Score an artifact (or, through ``score_endpoint``, a live endpoint the caller reaches)
    and write evaluation.json and report.html; exit 2 with one line on bad input."""
    from training.evaluation.evaluate import evaluate_artifact, write_evaluation
    from training.refinement.job import find_artifact

    in_processing_job = args.model is None and PROCESSING_MODEL.is_dir()
    data, output = args.data, args.output
    if in_processing_job:
        data = data or (PROCESSING_DATA if PROCESSING_DATA.is_dir() else None)
        output = output or PROCESSING_OUTPUT
    output = output or Path("evaluation")
    refused: tuple[type[Exception], ...] = (ArtifactError, ChannelError, DataError,
                                            HyperparameterError, ValueError, *errors)
    try:
        if score_endpoint is not None:
            evaluation = score_endpoint(data)
        else:
            model = args.model or (PROCESSING_MODEL if in_processing_job else None)
            if model is None:
                raise ValueError("give the artifact to evaluate (a folder or model.tar.gz)")
            if model.is_dir() and not (model / "genkiln.json").is_file():
                model = find_artifact(model)  # a processing input holding model.tar.gz
            evaluation = evaluate_artifact(model, data=data, validation=args.validation,
                                           device=args.device)
        evaluation.register(args.register_if or None)
    except refused as exc:
        print(f"{prog}: {_one_line(exc)}", file=sys.stderr)
        return 2
    json_path, report_path = write_evaluation(evaluation, output)
    for name, entry in evaluation.metrics.items():
        print(f"{name}={entry['value']:.6g}")
    assert evaluation.registration is not None
    print(f"registration: {evaluation.registration['reason']}")
    print(f"{prog}: wrote {json_path} and {report_path}")
    return 0


# --- monitor ---------------------------------------------------------------------------
def add_monitor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--capture", type=Path, help="a data-capture folder (default in a "
                        f"processing job: {PROCESSING_ROOT / 'capture'})")
    parser.add_argument("--feedback", type=Path, help="a feedback store folder")
    parser.add_argument("--baseline", type=Path, help="the model's evaluation.json, to "
                        "measure drift from")
    parser.add_argument("--hours", type=float, default=24.0, help="the window (default 24)")
    parser.add_argument("--until", help="the window's end, ISO 8601 (default now)")
    parser.add_argument("--endpoint", default="", help="the endpoint's name (the metrics' "
                        "dimension)")
    parser.add_argument("--output", type=Path, help="folder for monitor.json")
    parser.add_argument("--publish", action="store_true",
                        help="publish the figures as CloudWatch metrics (namespace genkiln)")


def monitor(args: argparse.Namespace, *, prog: str = "monitor") -> int:
    """Health figures of what an endpoint served over a window: monitor.json, and with
    --publish the CloudWatch metrics the endpoint's alarms watch."""
    from training.evaluation.monitor import monitor as measure
    from training.evaluation.monitor import publish, write

    def given(path: Path | None, name: str) -> Path | None:
        inside = PROCESSING_ROOT / name
        return path or (inside if inside.exists() else None)

    baseline_path = given(args.baseline, "baseline")
    if baseline_path is not None and baseline_path.is_dir():
        baseline_path = baseline_path / "evaluation.json"
    try:
        end = datetime.fromisoformat(args.until.replace("Z", "+00:00")) if args.until \
            else datetime.now(UTC)
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
        baseline = json.loads(baseline_path.read_text()) if baseline_path and \
            baseline_path.is_file() else None
        report = measure(capture=given(args.capture, "capture"),
                         feedback=given(args.feedback, "feedback"), end=end,
                         hours=args.hours, endpoint=args.endpoint, baseline=baseline)
    except (ValueError, OSError, KeyError) as exc:
        print(f"{prog}: {_one_line(exc)}", file=sys.stderr)
        return 2
    output = args.output or (PROCESSING_ROOT / "monitor" if PROCESSING_ROOT.is_dir()
                             else Path("monitor"))
    path = write(report, output)
    for name, value in report.figures.items():
        print(f"{name}={value:.6g}")
    print(f"alarms: {', '.join(report.alarms) or 'none'}; wrote {path}")
    if args.publish:
        import boto3

        publish(report, boto3.client("cloudwatch"))
    return 0


# --- the job's command line --------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(sub.add_parser("train", allow_abbrev=False,
                                       help="a training job (extra --key value: "
                                            "hyperparameters)"))
    add_evaluate_arguments(sub.add_parser("evaluate", help="score an artifact"))
    add_monitor_arguments(sub.add_parser("monitor", help="health figures of what was served"))
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None
                    ) -> tuple[argparse.Namespace, list[str]]:
    """The arguments, and what `train` takes beyond them: `--key value` hyperparameters
    (any other verb refuses what it does not know)."""
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args, extra


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_arguments(build_parser(), argv)
    if args.command == "train":
        return train(args, extra)
    if args.command == "evaluate":
        return evaluate(args)
    return monitor(args)
