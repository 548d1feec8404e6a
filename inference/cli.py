"""`genkiln`: the one command line, on a laptop and as a container's entry point.

    genkiln train [--data DIR] [--model-dir DIR] [--key value ...]   # SageMaker: `train`
    genkiln serve [MODEL_DIR]                                          # SageMaker: `serve`
    genkiln train --mode container|sagemaker ...    # SageMaker local mode / a training job
    genkiln deploy [ARTIFACT] --mode container|sagemaker             # an endpoint
    genkiln invoke "prompt" [--url URL | --endpoint NAME] [--stream]
    genkiln playground [--url URL | --endpoint NAME]     # a web page to generate and judge
    genkiln evaluate [MODEL] [--data DIR] [--output DIR]            # SageMaker: `evaluate`
    genkiln evaluate --url URL|--endpoint NAME --family F            # a live endpoint
    genkiln monitor [--capture DIR] [--feedback DIR] [--baseline F]  # SageMaker: `monitor`
    genkiln data inspect DIR
    genkiln demo                                                       # what `make run` runs

It lives in `inference/` because it is the one module allowed to reach both halves.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from inference.deploy import add_deploy_arguments
from training import environment as env
from training.contract import DEFAULT_ROOT, OptMl
from training.hyperparameters import HyperparameterError, parse_cli_overrides
from training.launch import add_training_launch_arguments, data_source

DEFAULT_LOCAL_MODEL_DIR = Path("artifacts/model")


def _in_sagemaker_container() -> bool:
    return (OptMl.from_environment().config_dir).is_dir()


# --- train ---------------------------------------------------------------------------
def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from training.entry import run_training
    from training.local import train_locally

    try:
        overrides = parse_cli_overrides(extra)
    except HyperparameterError as exc:
        print(f"genkiln train: {exc}", file=sys.stderr)
        return 2
    if args.list_hyperparameters:
        return _list_hyperparameters(overrides.get("family", "transformer"))
    if args.mode != "local":  # a local-mode container or a SageMaker training job
        from training.launch import launch_training

        return launch_training(args, overrides)
    if args.opt_ml is not None:
        return run_training(OptMl(args.opt_ml), overrides)
    channels = {name: Path(path) for name, path in (("model", args.refine),
                                                    ("feedback", args.feedback)) if path}
    local_requested = args.data or args.model_dir or args.validation or channels
    if not local_requested and _in_sagemaker_container():
        return run_training(OptMl.from_environment(), overrides)
    return train_locally(model_dir=args.model_dir or DEFAULT_LOCAL_MODEL_DIR,
                         hyperparameters=overrides, data=args.data,
                         validation=args.validation, channels=channels)


def _list_hyperparameters(family_name: str) -> int:
    from training.config import TrainConfig
    from training.models import get_family

    try:
        family = get_family(family_name)
    except HyperparameterError as exc:
        print(f"genkiln train: {exc}", file=sys.stderr)
        return 2
    for cls in (TrainConfig, family.config_cls):
        print(f"# {cls.__name__}")
        for f in dataclasses.fields(cls):
            default = family.train_defaults.get(f.name, f.default) if cls is TrainConfig \
                else f.default
            print(f"  {f.name}={default}")
    return 0


# --- serve ---------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    from inference.server import serve

    model_dir = args.model_dir
    host = args.host
    if model_dir is None:  # the container case: SageMaker unpacks the model here
        model_dir = Path(os.environ.get(env.SM_MODEL_DIR, str(DEFAULT_ROOT / "model")))
        host = host or "0.0.0.0"
    serve(model_dir, host=host or "127.0.0.1", port=args.port, device=args.device)
    return 0


# --- invoke --------------------------------------------------------------------------
def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    names = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed",
             "truncate")
    params = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.stop:
        params["stop"] = args.stop
    if args.details:
        params["details"] = True
    return params


def _invoke(args: argparse.Namespace) -> int:
    from inference.client import EndpointClient, EndpointError

    if args.endpoint:
        client = EndpointClient(endpoint_name=args.endpoint, region_name=args.region)
    else:
        client = EndpointClient(url=args.url)
    params = _parameters(args)
    try:
        if args.stream:
            for event in client.stream(args.prompt, **params):
                if args.json:
                    print(json.dumps(event), flush=True)
                else:
                    print(event["token"]["text"], end="", flush=True)
            if not args.json:
                print()
        else:
            result = client.generate(args.prompt, **params)
            print(json.dumps(result, indent=2) if args.json else result[0]["generated_text"])
    except EndpointError as exc:
        print(f"genkiln invoke: {exc}", file=sys.stderr)
        return 1
    return 0


# --- playground ----------------------------------------------------------------------
def _playground(args: argparse.Namespace) -> int:
    from inference.client import EndpointClient
    from inference.playground.app import run_playground

    if args.endpoint:
        client = EndpointClient(endpoint_name=args.endpoint, region_name=args.region)
    else:
        client = EndpointClient(url=args.url)
    run_playground(client, host=args.host, port=args.port)
    return 0


# --- evaluate ------------------------------------------------------------------------
#: Where a SageMaker processing job (the pipeline's Evaluate step) puts inputs and outputs.
PROCESSING_ROOT = Path("/opt/ml/processing")
PROCESSING_MODEL = PROCESSING_ROOT / "model"
PROCESSING_DATA = PROCESSING_ROOT / "data"
PROCESSING_OUTPUT = PROCESSING_ROOT / "evaluation"


def _monitor(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from training.monitor import monitor, publish, write

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
        report = monitor(capture=given(args.capture, "capture"),
                         feedback=given(args.feedback, "feedback"), end=end,
                         hours=args.hours, endpoint=args.endpoint, baseline=baseline)
    except (ValueError, OSError, KeyError) as exc:
        print(f"genkiln monitor: {' '.join(str(exc).split())}", file=sys.stderr)
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


def _evaluate(args: argparse.Namespace) -> int:
    from inference.client import EndpointClient, EndpointError
    from training.artifact import ArtifactError
    from training.contract import ChannelError
    from training.data.errors import DataError
    from training.evaluate import evaluate_artifact, evaluate_endpoint, write_evaluation
    from training.refine import find_artifact

    in_processing_job = args.model is None and PROCESSING_MODEL.is_dir()
    data = args.data
    output = args.output
    if in_processing_job:
        data = data or (PROCESSING_DATA if PROCESSING_DATA.is_dir() else None)
        output = output or PROCESSING_OUTPUT
    output = output or Path("evaluation")
    try:
        if args.url or args.endpoint:
            if not args.family:
                raise ValueError("--family is required with --url or --endpoint (an "
                                 "endpoint does not say what it serves)")
            client = (EndpointClient(endpoint_name=args.endpoint, region_name=args.region)
                      if args.endpoint else EndpointClient(url=args.url))
            evaluation = evaluate_endpoint(client, family=args.family,
                                           measured=args.endpoint or args.url, data=data)
        else:
            model = args.model or (PROCESSING_MODEL if in_processing_job else None)
            if model is None:
                raise ValueError("give the artifact to evaluate (a folder or model.tar.gz), "
                                 "or --url/--endpoint")
            if model.is_dir() and not (model / "genkiln.json").is_file():
                model = find_artifact(model)  # a processing input holding model.tar.gz
            evaluation = evaluate_artifact(model, data=data, validation=args.validation,
                                           device=args.device)
        evaluation.register(args.register_if or None)
    except (ArtifactError, ChannelError, DataError, HyperparameterError, EndpointError,
            ValueError) as exc:
        print(f"genkiln evaluate: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    json_path, report_path = write_evaluation(evaluation, output)
    for name, entry in evaluation.metrics.items():
        print(f"{name}={entry['value']:.6g}")
    assert evaluation.registration is not None
    print(f"registration: {evaluation.registration['reason']}")
    print(f"genkiln: wrote {json_path} and {report_path}")
    return 0


# --- data ----------------------------------------------------------------------------
def _inspect(args: argparse.Namespace) -> int:
    from training.data.errors import DataError
    from training.data.inspect import summarize

    try:
        summary = summarize(args.path, vocab_size=args.vocab_size)
    except DataError as exc:
        print(f"genkiln data inspect: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            shown = f"{value:,}" if isinstance(value, int) else value
            print(f"{key:<{width}}  {shown}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from inference.demo import run_demo

    return run_demo(model_dir=args.model_dir, seconds=args.seconds, prompt=args.prompt,
                    port=args.port)


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `--mod 3` must reach training as a hyperparameter, not be taken
    # for --model-dir.
    parser = argparse.ArgumentParser(prog="genkiln", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", allow_abbrev=False,
        help="train a model (any extra --key value is a hyperparameter)")
    train.add_argument("--data", type=data_source, help="folder (or file) of training data; "
                       "omitted: the family's bundled data set")
    train.add_argument("--validation", type=data_source, help="held-out data folder (optional)")
    train.add_argument("--model-dir", type=Path,
                       help=f"where the artifact goes (default {DEFAULT_LOCAL_MODEL_DIR})")
    train.add_argument("--opt-ml", type=Path, help="run on this SageMaker-style /opt/ml tree")
    train.add_argument("--refine", type=data_source, help="refine this artifact (folder or "
                       "model.tar.gz; the job's 'model' channel) on --feedback")
    train.add_argument("--feedback", type=data_source, help="a feedback store folder "
                       "(generations/, feedback/; the job's 'feedback' channel)")
    train.add_argument("--list-hyperparameters", action="store_true",
                       help="print every hyperparameter with its default and exit")
    add_training_launch_arguments(train)

    add_deploy_arguments(sub.add_parser(
        "deploy", help="serve an artifact as a SageMaker endpoint: local container or AWS"))

    serve = sub.add_parser("serve", help="serve an artifact on /ping and /invocations")
    serve.add_argument("model_dir", type=Path, nargs="?",
                       help="artifact folder or model.tar.gz (default: /opt/ml/model)")
    serve.add_argument("--host", help="default 127.0.0.1 locally, 0.0.0.0 in a container")
    serve.add_argument("--port", type=int, help="default $SAGEMAKER_BIND_TO_PORT or 8080")
    serve.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    invoke = sub.add_parser("invoke", help="call an endpoint")
    invoke.add_argument("prompt")
    where = invoke.add_mutually_exclusive_group()
    where.add_argument("--url", default="http://127.0.0.1:8080", help="a local server")
    where.add_argument("--endpoint", help="a SageMaker endpoint name (uses AWS credentials)")
    invoke.add_argument("--region", help="AWS region of the endpoint")
    invoke.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    invoke.add_argument("--json", action="store_true", help="print raw JSON responses")
    invoke.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    invoke.add_argument("--temperature", type=float)
    invoke.add_argument("--top-k", dest="top_k", type=int)
    invoke.add_argument("--top-p", dest="top_p", type=float)
    invoke.add_argument("--repetition-penalty", dest="repetition_penalty", type=float)
    invoke.add_argument("--seed", type=int)
    invoke.add_argument("--truncate", type=int)
    invoke.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    invoke.add_argument("--details", action="store_true")

    playground = sub.add_parser(
        "playground", help="a web page to prompt, regenerate and judge a model's outputs")
    where = playground.add_mutually_exclusive_group()
    where.add_argument("--url", default="http://127.0.0.1:8080", help="a local server")
    where.add_argument("--endpoint", help="a SageMaker endpoint name (uses AWS credentials)")
    playground.add_argument("--region", help="AWS region of the endpoint")
    playground.add_argument("--host", default="127.0.0.1",
                            help="where the page is served (default 127.0.0.1)")
    playground.add_argument("--port", type=int, default=8000, help="default 8000")

    evaluate = sub.add_parser(
        "evaluate", help="score a model on held-out data: evaluation.json and report.html")
    evaluate.add_argument("model", type=Path, nargs="?",
                          help="artifact folder or model.tar.gz (in a SageMaker processing "
                               f"job: {PROCESSING_MODEL})")
    evaluate.add_argument("--data", type=Path, help="the data the model was trained on, when "
                          "it was not a bundled data set")
    evaluate.add_argument("--validation", type=Path, help="the held-out data, when training "
                          "had a validation channel")
    evaluate.add_argument("--output", type=Path, help="folder for evaluation.json and "
                          "report.html (default ./evaluation)")
    evaluate.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    target = evaluate.add_mutually_exclusive_group()
    target.add_argument("--url", help="score a running server instead of an artifact")
    target.add_argument("--endpoint", help="score a SageMaker endpoint (uses AWS credentials)")
    evaluate.add_argument("--region", help="AWS region of the endpoint")
    evaluate.add_argument("--family", help="the endpoint's model family (with --url/--endpoint)")
    evaluate.add_argument("--register-if", default="", metavar="CRITERION",
                          help="what the model must meet to be registered, e.g. "
                               "'val_loss<=4.5' (default: the family's own criterion); "
                               "evaluation.json says whether it does")

    watch = sub.add_parser(
        "monitor", help="health figures of what an endpoint served over a window "
                        "(SageMaker: the monitor pipeline's processing job)")
    watch.add_argument("--capture", type=Path, help="a data-capture folder (default in a "
                       f"processing job: {PROCESSING_ROOT / 'capture'})")
    watch.add_argument("--feedback", type=Path, help="a feedback store folder")
    watch.add_argument("--baseline", type=Path, help="the model's evaluation.json, to "
                       "measure drift from")
    watch.add_argument("--hours", type=float, default=24.0, help="the window (default 24)")
    watch.add_argument("--until", help="the window's end, ISO 8601 (default now)")
    watch.add_argument("--endpoint", default="", help="the endpoint's name (the metrics' "
                       "dimension)")
    watch.add_argument("--output", type=Path, help="folder for monitor.json")
    watch.add_argument("--publish", action="store_true",
                       help="publish the figures as CloudWatch metrics (namespace genkiln)")

    data = sub.add_parser("data", help="check data before training")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser("inspect", help="check a folder holds one type; summarise")
    inspect.add_argument("path", type=Path)
    inspect.add_argument("--vocab-size", type=int, default=2048,
                         help="BPE vocabulary used to count tokens in text (default 2048)")
    inspect.add_argument("--json", action="store_true")

    demo = sub.add_parser("demo", help="train the bundled Transformer, serve it, generate")
    demo.add_argument("--seconds", type=float, default=60.0, help="training budget")
    demo.add_argument("--model-dir", type=Path, default=Path("artifacts/demo"))
    demo.add_argument("--prompt", default="Return a new")
    demo.add_argument("--port", type=int, default=0, help="default: a free port")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "train":
        return _train(args, extra)
    if args.command == "serve":
        return _serve(args)
    if args.command == "invoke":
        return _invoke(args)
    if args.command == "data":
        return _inspect(args)
    if args.command == "playground":
        return _playground(args)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "monitor":
        return _monitor(args)
    if args.command == "deploy":
        from inference.deploy import deploy

        return deploy(args)
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())
